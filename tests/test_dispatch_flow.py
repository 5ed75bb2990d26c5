"""The dispatcher against scripted sandbox PSPs on loopback: what moves on, what stops, what is inquired."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from payroute.catalog import load_catalog
from payroute.contracts import Transaction
from payroute.sandbox.behaviour import PspAnswer, ScriptedBehaviour
from payroute.sandbox.faults import FaultPlan
from payroute.sandbox.ledger import Ledger
from payroute.sandbox.server import SandboxPsp
from payroute.serving.dispatch.breaker import CircuitBreakers
from payroute.serving.dispatch.connectors import HttpConnector, authorisation_payload
from payroute.serving.dispatch.decline_codes import DeclineCodeMap
from payroute.serving.dispatch.dispatcher import Dispatcher, DispatchPolicy
from payroute.serving.dispatch.journal import DurableLog, Journal
from payroute.serving.dispatch.outcomes import MemorySink, OutcomeBuffer
from payroute.serving.dispatch.ranking import FallbackRanking, Ranking, ServiceRanking, StaticRanking

PSPS = ("euroacq", "britpay", "budgetpay")  # all take a EUR Visa deposit from Germany
CODES = DeclineCodeMap.from_config({"psps": {p: {"05": "do_not_honor", "43": "stolen_card", "51": "insufficient_funds",
                                                 "96": "psp_error"} for p in PSPS}})
T0 = dt.datetime(2026, 10, 1, 12, tzinfo=dt.timezone.utc)
SOFT, HARD, CUSTOMER = PspAnswer("declined", "05"), PspAnswer("declined", "43"), PspAnswer("declined", "51")


class FixedOrder:
    """A ranking source that always answers the same order."""

    def rank(self, transaction: Transaction) -> Ranking:
        return Ranking(PSPS, "decision-1", 0.5, "service")


def deposit(txn_id: str = "t1", fingerprint: str = "fp-card-0001") -> Transaction:
    return Transaction(id=txn_id, timestamp=T0, type="deposit", amount=Decimal("50"), currency="EUR", country="DE",
                       payment_method="card", card_network="visa", card_bin="411111", card_type="debit",
                       issuer_country="DE", vertical="ecommerce", merchant_id="m1", customer_id="cust-0001",
                       card_fingerprint=fingerprint)


class Rig:
    """Three sandbox PSPs, a dispatcher with its journal and buffer in ``tmp``, an in-memory sink."""

    def __init__(self, tmp, answers=None, faults=None, policy=DispatchPolicy(inquiry_backoff_s=0.02),
                 ranking=None, breakers=None):
        self.tmp, self.policy, self.ledger, self.sink = tmp, policy, Ledger(), MemorySink()
        answers, faults = answers or {}, faults or {}
        self.servers = {p: SandboxPsp(p, ScriptedBehaviour(by_psp={p: answers[p]} if p in answers else {}),
                                      self.ledger, faults.get(p)).start() for p in PSPS}
        self.breakers = breakers
        self.ranking = ranking or FixedOrder()
        self.open()

    def open(self):
        self.connectors = {p: HttpConnector(p, s.url, timeout_s=0.2) for p, s in self.servers.items()}
        self.journal = Journal(self.tmp / "journal.jsonl")
        self.buffer = OutcomeBuffer(self.tmp / "outcomes", self.sink)
        self.dispatcher = Dispatcher(load_catalog(), self.connectors, self.ranking, self.buffer, self.journal, CODES,
                                     breakers=self.breakers, policy=self.policy)
        return self

    def close(self):
        self.buffer.flush(5)
        self.buffer.close()
        self.journal.close()

    def records(self):
        return list(DurableLog.read(self.tmp / "journal.jsonl"))

    def stop(self):
        self.close()
        for server in self.servers.values():
            server.stop()


@pytest.fixture()
def rig_factory(tmp_path):
    rigs = []

    def make(**kwargs):
        rigs.append(Rig(tmp_path, **kwargs))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.stop()


@pytest.mark.parametrize(
    ("answers", "faults", "status", "kinds", "stop"),
    [
        ({}, {}, "approved", ["approved"], "approved"),
        ({"euroacq": SOFT}, {}, "approved", ["declined", "approved"], "approved"),
        ({"euroacq": SOFT, "britpay": SOFT}, {}, "approved", ["declined", "declined", "approved"], "approved"),
        ({"euroacq": HARD}, {}, "declined", ["declined"], "no_retry_hard"),
        ({"euroacq": CUSTOMER}, {}, "declined", ["declined"], "no_retry_customer"),
        ({"euroacq": PspAnswer("declined", "X9")}, {}, "declined", ["declined"], "no_retry_unknown_code"),
        ({"euroacq": PspAnswer("error", "96")}, {}, "approved", ["declined", "approved"], "approved"),
        ({}, {"euroacq": FaultPlan(rates={"error_before": 1})}, "approved", ["failed", "approved"], "approved"),
        # Unknown outcomes: the PSP charged; inquiry finds it and nothing goes elsewhere.
        ({}, {"euroacq": FaultPlan(rates={"timeout": 1}, hang_s=0.4)}, "approved", ["approved"], "approved"),
        ({}, {"euroacq": FaultPlan(rates={"reset": 1})}, "approved", ["approved"], "approved"),
        ({}, {"euroacq": FaultPlan(rates={"error_after": 1})}, "approved", ["approved"], "approved"),
        ({"euroacq": SOFT}, {"euroacq": FaultPlan(rates={"timeout": 1}, hang_s=0.4)}, "approved",
         ["declined", "approved"], "approved"),
        ({"euroacq": SOFT, "britpay": SOFT, "budgetpay": SOFT}, {}, "declined", ["declined"] * 3, "exhausted"),
    ],
)
def test_what_moves_on_and_what_stops(rig_factory, answers, faults, status, kinds, stop):
    rig = rig_factory(answers=answers, faults=faults)
    result = rig.dispatcher.dispatch(deposit())
    assert (result.status, [a.kind for a in result.attempts], result.stop) == (status, kinds, stop)
    tried = [a.psp for a in result.attempts]
    assert tried == list(PSPS[: len(tried)])
    untouched = [p for p in PSPS if p not in tried]
    assert all(rig.servers[p].requests == 0 for p in untouched)  # nothing reached a PSP after a stop
    assert len(rig.ledger.entries) == (1 if status == "approved" else 0)
    rig.close()
    assert sorted(rig.sink.events) == [f"t1:{k}" for k in range(1, len(kinds) + 1)]  # one outcome per attempt


def test_unknown_outcome_is_inquired_before_anything_else(rig_factory):
    rig = rig_factory(faults={"euroacq": FaultPlan(rates={"reset": 1})})
    rig.dispatcher.dispatch(deposit())
    kinds = [(r["type"], r.get("key")) for r in rig.records()]
    assert kinds[:4] == [("intent", "t1:1"), ("inquiry", "t1:1"), ("result", "t1:1"), ("final", None)]


def test_still_unknown_is_pending_never_retried_elsewhere_then_resolved(rig_factory):
    rig = rig_factory(faults={"euroacq": FaultPlan(rates={"late": 1}, hang_s=0.6)},
                      policy=DispatchPolicy(inquiries=2, inquiry_backoff_s=0.02))
    result = rig.dispatcher.dispatch(deposit())
    assert (result.status, result.psp, [a.kind for a in result.attempts]) == ("pending", "euroacq", ["unknown"])
    assert rig.servers["britpay"].requests == 0 and rig.ledger.entries == []
    time.sleep(0.7)
    assert rig.dispatcher.resolve_pending() == {"t1": "approved"}
    assert len(rig.ledger.charged()) == 1 and rig.ledger.double_charges() == {}
    rig.close()
    assert rig.sink.events["t1:1"]["status"] == "timeout"  # reported once, as seen at the time


def test_connection_refused_moves_on(rig_factory):
    rig = rig_factory()
    rig.servers["euroacq"].stop()
    result = rig.dispatcher.dispatch(deposit())
    assert [(a.psp, a.kind) for a in result.attempts] == [("euroacq", "failed"), ("britpay", "approved")]


def test_breaker_skips_a_failing_psp_then_probes(rig_factory):
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    rig = rig_factory(faults={"euroacq": FaultPlan(rates={"error_before": 1})},
                      breakers=CircuitBreakers(failure_threshold=5, cooldown_s=30, clock=clock))
    for k in range(8):
        rig.dispatcher.dispatch(deposit(f"t{k}", f"fp-card-{k:04d}"))
    assert rig.servers["euroacq"].requests == 5  # opened after 5 consecutive errors
    clock.now = 30.0
    result = rig.dispatcher.dispatch(deposit("t9", "fp-card-0009"))
    assert rig.servers["euroacq"].requests == 6 and result.attempts[0].psp == "euroacq"  # the probe
    assert result.status == "approved" and result.psp == "britpay"


def test_max_attempts_and_scheme_cap(rig_factory):
    rig = rig_factory(answers={p: SOFT for p in PSPS}, policy=DispatchPolicy(max_attempts=2))
    result = rig.dispatcher.dispatch(deposit())
    assert (len(result.attempts), result.stop) == (2, "max_attempts")
    from payroute.serving.dispatch.limits import ReattemptCap
    rig.dispatcher.limits.caps = {"visa": (ReattemptCap(dt.timedelta(days=30), 1),)}
    second = rig.dispatcher.dispatch(deposit("t2"))  # same card: its one reattempt was used by t1
    assert (len(second.attempts), second.stop) == (1, "scheme_reattempt_cap")


def test_ranking_service_down_uses_the_static_order(rig_factory):
    from payroute.serving.client import ScoringClient

    dead = ScoringClient("http://127.0.0.1:9", timeout=0.1)  # nothing listens on port 9
    ranking = FallbackRanking(ServiceRanking(dead), StaticRanking(load_catalog()), known=set(PSPS))
    rig = rig_factory(ranking=ranking)
    result = rig.dispatcher.dispatch(deposit())
    assert result.status == "approved" and result.ranking_source == "static" and ranking.fallbacks == 1
    assert result.psp == "euroacq"  # static_priority: euroacq (1) before britpay (4), budgetpay (5)


def test_repeat_dispatch_returns_the_first_result(rig_factory):
    rig = rig_factory()
    first, second = rig.dispatcher.dispatch(deposit()), rig.dispatcher.dispatch(deposit())
    assert first is second and len(rig.ledger.entries) == 1


def test_restart_inquires_the_attempt_left_in_flight(rig_factory):
    rig = rig_factory()
    txn = deposit()
    # What a dispatcher killed right after sending leaves: an intent, a charge at the PSP, no result.
    payload = txn.model_dump(mode="json")
    rig.journal.write({"type": "intent", "transaction_id": "t1", "attempt": 1, "psp": "euroacq", "key": "t1:1",
                       "operation": "payments", "transaction": payload})
    rig.connectors["euroacq"].authorise("t1:1", authorisation_payload(payload, 1))
    rig.close()
    rig.open()  # the restarted dispatcher
    result = rig.dispatcher.dispatch(txn)
    assert (result.status, result.psp, result.stop) == ("approved", "euroacq", "approved_recovered")
    assert len(rig.ledger.entries) == 1 and rig.servers["britpay"].requests == 0
    types = [r["type"] for r in rig.records()]
    assert types == ["intent", "inquiry", "result", "final"]
    rig.close()
    assert list(rig.sink.events) == ["t1:1"]


def withdrawal(txn_id: str = "w1") -> Transaction:
    return Transaction(id=txn_id, timestamp=T0, type="withdrawal", amount=Decimal("80"), currency="EUR", country="DE",
                       payment_method="card", card_network="visa", card_bin="411111", card_type="debit",
                       issuer_country="DE", vertical="ecommerce", merchant_id="m1", customer_id="cust-0001",
                       card_fingerprint="fp-card-0001")


def test_pending_payout_is_resolved_by_inquiry_after_a_restart(rig_factory):
    late = FaultPlan(rates={"late": 1}, hang_s=0.6)
    rig = rig_factory(faults={p: late for p in PSPS}, policy=DispatchPolicy(inquiries=2, inquiry_backoff_s=0.02))
    result = rig.dispatcher.dispatch(withdrawal())
    assert (result.status, [a.kind for a in result.attempts]) == ("pending", ["unknown"])
    first_psp = result.psp
    assert sum(s.requests for s in rig.servers.values()) == rig.servers[first_psp].requests  # nowhere else
    rig.close()
    time.sleep(0.7)  # the PSP decides meanwhile
    rig.open()  # a restarted dispatcher on the same journal
    assert rig.dispatcher.resolve_pending() == {"w1": "approved"}
    assert [(e.kind, e.psp) for e in rig.ledger.entries] == [("payout", first_psp)]
    inquiries = [r for r in rig.records() if r["type"] == "inquiry"]
    assert len(inquiries) == 3 and all(r["key"] == "w1:1" for r in inquiries)  # 2 at the time, 1 after restart
    assert rig.dispatcher.dispatch(withdrawal()).status == "approved"  # the journal's last word
    assert rig.dispatcher.resolve_pending() == {}  # nothing left to inquire
    rig.close()
    assert rig.sink.events["w1:1"]["status"] == "timeout"  # reported once, as seen when it settled
