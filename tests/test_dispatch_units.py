"""Dispatcher building blocks as tables: classification, breaker, scheme caps, decline codes, journal,
outcome buffer, payout order."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import httpx
import pytest

from payroute.catalog import load_catalog
from payroute.contracts import DeclineClass, DeclineReason, Transaction
from payroute.serving.dispatch.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreakers
from payroute.serving.dispatch.connectors import classify_exception, classify_response
from payroute.serving.dispatch.decline_codes import DeclineCodeMap
from payroute.serving.dispatch.journal import DurableLog, replay
from payroute.serving.dispatch.limits import ReattemptCap, ReattemptLimits, worst_window
from payroute.serving.dispatch.outcomes import MemorySink, OutcomeBuffer
from payroute.serving.dispatch.ranking import DepositBook, payout_order

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, {"status": "approved"}, "approved"),
        (200, {"status": "declined", "decline_code": "05"}, "declined"),
        (200, {"status": "error", "decline_code": "96"}, "declined"),  # the PSP answered: definite
        (200, {"status": "processing"}, "unknown"),
        (200, {"status": "cancelled"}, "failed"),
        (404, {"status": "not_found"}, "not_found"),
        (503, {"code": "unavailable", "processed": False}, "failed"),
        (409, {"code": "cancelled", "processed": False}, "failed"),
        (500, {"code": "internal_error"}, "unknown"),  # after sending: may have charged
        (502, None, "unknown"),
        (409, {"code": "in_progress"}, "unknown"),
        (422, {"code": "idempotency_key_reused"}, "unknown"),  # the first request may have charged
        (400, {"code": "invalid_request"}, "failed"),
    ],
)
def test_classify_response(status, body, kind):
    assert classify_response(status, body).kind == kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), "failed"),
        (httpx.ConnectTimeout("slow connect"), "failed"),
        (httpx.PoolTimeout("pool"), "failed"),
        (httpx.ReadTimeout("read"), "unknown"),
        (httpx.WriteTimeout("write"), "unknown"),
        (httpx.RemoteProtocolError("reset"), "unknown"),
        (httpx.ReadError("reset"), "unknown"),
    ],
)
def test_classify_exception(error, kind):
    assert classify_exception(error).kind == kind


class Clock:
    """A settable clock (seconds) for the breaker."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes():
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=5, cooldown_s=30, clock=clock)
    for _ in range(4):
        breakers.record("p", ok=False)
    assert breakers.state("p") == CLOSED and breakers.allow("p")
    breakers.record("p", ok=False)
    assert breakers.state("p") == OPEN and not breakers.allow("p")
    clock.now = 29.9
    assert not breakers.allow("p")
    clock.now = 30.0
    assert breakers.state("p") == HALF_OPEN
    assert breakers.allow("p") and not breakers.allow("p")  # one probe only
    breakers.record("p", ok=False)  # probe failed: open again for a full cool-down
    clock.now = 59.0
    assert not breakers.allow("p")
    clock.now = 60.0
    assert breakers.allow("p")
    breakers.record("p", ok=True)
    assert breakers.state("p") == CLOSED and breakers.allow("p") and breakers.opened == 1


def test_breaker_success_resets_the_count():
    breakers = CircuitBreakers(failure_threshold=3, clock=Clock())
    for ok in (False, False, True, False, False):
        breakers.record("p", ok)
    assert breakers.state("p") == CLOSED


@pytest.mark.parametrize(
    ("network", "offsets_h", "allowed"),
    [
        # Mastercard: 10 in 24 h, 35 in 30 days (defaults)
        ("mastercard", [0.1 * k for k in range(11)], [True] * 10 + [False]),
        ("mastercard", [2 * k for k in range(11)] + [47], [True] * 10 + [False, True]),  # a day later: free
        ("visa", [1.0 * k for k in range(16)], [True] * 15 + [False]),
        ("amex", [0.01 * k for k in range(40)], [True] * 40),  # no published cap configured
    ],
)
def test_default_scheme_caps(network, offsets_h, allowed):
    limits = ReattemptLimits()
    got = [limits.try_reattempt("fp-card-1", network, T0 + dt.timedelta(hours=h)) for h in offsets_h]
    assert got == allowed


def test_caps_hold_in_every_window_even_out_of_order():
    cap = ReattemptCap(dt.timedelta(hours=24), 3)
    limits = ReattemptLimits(caps={"visa": (cap,)})
    hours = [30, 5, 17, 29, 41, 2, 50, 26, 12, 38, 44, 8]
    for h in hours:
        limits.try_reattempt("fp-x", "visa", T0 + dt.timedelta(hours=h))
    assert worst_window(limits.reattempts["fp-x"], cap.window) <= 3
    assert limits.refused > 0


def test_card_dead_reasons_block_the_card_other_hard_do_not():
    limits = ReattemptLimits()
    limits.record_decline("fp-a", DeclineReason.stolen_card, T0)
    limits.record_decline("fp-b", DeclineReason.suspected_fraud, T0)
    assert limits.card_blocked("fp-a", T0 + dt.timedelta(days=2))
    assert not limits.card_blocked("fp-a", T0 + dt.timedelta(days=31))
    assert not limits.card_blocked("fp-b", T0 + dt.timedelta(days=2))
    assert not limits.try_reattempt("fp-a", "visa", T0 + dt.timedelta(hours=1))


def test_decline_codes_config_matches_the_world_vocabulary():
    from payroute.sandbox.world import decline_code_config
    from payroute.simulator.world import World

    world = World(seed=0)
    embedded = DeclineCodeMap.load()
    expected = DeclineCodeMap.from_config(decline_code_config(world))
    assert embedded.mapping == expected.mapping
    assert set(embedded.mapping) == set(world.catalog.psp_names)


@pytest.mark.parametrize(
    ("psp", "code", "reason", "decline_class", "retry"),
    [
        ("euroacq", "05", DeclineReason.do_not_honor, DeclineClass.soft, True),
        ("euroacq", "43", DeclineReason.stolen_card, DeclineClass.hard, False),
        ("euroacq", "51", DeclineReason.insufficient_funds, DeclineClass.customer, False),
        ("globalpay", "generic_decline", DeclineReason.do_not_honor, DeclineClass.soft, True),
        ("britpay", "DECLINE_NSF", DeclineReason.insufficient_funds, DeclineClass.customer, False),
        ("euroacq", "ZZ", None, None, False),  # unknown: conservative, no retry
        ("nobody", "05", None, None, False),
    ],
)
def test_classify_decline_codes(psp, code, reason, decline_class, retry):
    codes = DeclineCodeMap.load()
    got = codes.classify(psp, code)
    assert (got.reason, got.decline_class, got.retry_elsewhere) == (reason, decline_class, retry)
    assert codes.unknown_total() == (0 if reason else 1)


def test_bad_decline_code_config_is_refused():
    with pytest.raises(ValueError, match="'acme'"):
        DeclineCodeMap.from_config({"psps": {"acme": {"05": "not_a_reason"}}})


def test_journal_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    log = DurableLog(path)
    log.append({"type": "intent", "transaction_id": "t", "attempt": 1, "psp": "a", "key": "t:1"})
    log.close()
    with path.open("ab") as handle:
        handle.write(b'{"type": "result", "transaction_id": "t", "ke')  # killed mid-write
    log = DurableLog(path)
    log.append({"type": "inquiry", "transaction_id": "t", "key": "t:1", "kind": "approved"})
    log.close()
    states = replay(DurableLog.read(path))
    assert [a.key for a in states["t"].in_flight] == ["t:1"]
    assert states["t"].attempts[0].inquiries[0]["kind"] == "approved"
    assert states["t"].next_attempt == 2


def outcome(txn: str, attempt: int = 1) -> dict:
    return {"transaction_id": txn, "attempt": attempt, "psp": "a", "status": "approved"}


def test_outcome_buffer_keeps_everything_while_the_sink_is_down(tmp_path):
    sink = MemorySink()
    sink.down = True
    buffer = OutcomeBuffer(tmp_path, sink, workers=2, retry_s=0.01, max_retry_s=0.05)
    for k in range(20):
        assert buffer.put(outcome(f"t{k}"))
    assert not buffer.put(outcome("t0"))  # a repeat is not recorded twice
    assert not buffer.flush(timeout=0.2) and sink.events == {}
    buffer.close()  # "killed" with everything unsent
    sink.down = False
    restarted = OutcomeBuffer(tmp_path, sink, workers=2)
    assert restarted.replayed == 20
    assert restarted.flush(timeout=5)
    assert sorted(sink.events) == sorted(f"t{k}:1" for k in range(20))
    restarted.close()
    again = OutcomeBuffer(tmp_path, sink)
    assert again.replayed == 0
    again.close()


def test_outcome_buffer_parks_refused_outcomes(tmp_path):
    sink = MemorySink()
    sink.events["t:1"] = {"other": True}  # a conflicting outcome already recorded
    buffer = OutcomeBuffer(tmp_path, sink)
    buffer.put(outcome("t"))
    assert buffer.flush(timeout=5) and buffer.rejected == 1
    buffer.close()
    assert [json.loads(line)["key"] for line in (tmp_path / "rejected.jsonl").read_text().splitlines()] == ["t:1"]


def withdrawal(method: str = "card", **extra) -> Transaction:
    fields = dict(id="w1", timestamp=T0, type="withdrawal", amount=Decimal("100"), currency="EUR", country="DE",
                  payment_method=method, vertical="igaming", merchant_id="m1", customer_id="cust-0001")
    if method == "card":
        fields |= dict(card_network="visa", card_bin="411111", card_type="debit", issuer_country="DE")
    return Transaction(**(fields | extra))


def test_payout_order_is_least_cost_then_closed_loop():
    catalog = load_catalog()
    txn = withdrawal()
    order = payout_order(catalog, txn).psps
    from payroute.catalog import attempt_cost
    costs = [attempt_cost(catalog, p, txn.amount, txn.currency, "approved").total_eur for p in order]
    assert costs == sorted(costs) and order[0] == "euroacq"  # EUR card: the cheap local acquirer
    book = DepositBook()
    book.record("cust-0001", "card", "riskshield")
    assert payout_order(catalog, txn, book).psps[0] == "riskshield"
    assert payout_order(catalog, txn, book).source == "closed_loop"
    book.record("cust-0001", "ewallet", "walletgate")  # another method's deposit does not apply
    assert payout_order(catalog, withdrawal("ewallet"), book).psps[0] == "walletgate"
    book.record("cust-0001", "card", "coinbridge")  # not eligible for a card withdrawal: least cost
    assert payout_order(catalog, txn, book).psps[0] == "euroacq"


# A router UUID whose first three groups are all digits (8-4-4, Luhn-valid as 16 digits): in the dashed
# form the PAN screen read it as a card number and /feedback refused the service's own decision id.
ALL_DIGIT_ROUTER_UUID = "38375981-5543-4729-8ad2-e3a26fa973d0"
FEEDBACK_OUTCOME = {"transaction_id": "t1", "attempt": 1, "psp": "euroacq", "timestamp": "2026-10-01T00:00:00+00:00",
                    "status": "approved", "latency_ms": 3.0, "fee": "0.10", "fx_cost": "0", "fee_eur": "0.10",
                    "fx_cost_eur": "0"}


class SchemaCheckedClient:
    """``feedback`` as the service validates it (its request model and error rows), without the server."""

    def __init__(self) -> None:
        self.stored: list[dict] = []

    def feedback(self, outcome: dict, decision_id: str | None = None) -> None:
        from pydantic import ValidationError

        from payroute.contracts import field_errors
        from payroute.serving.client import RequestRejected, feedback_payload
        from payroute.serving.schemas import FeedbackRequest

        body = feedback_payload(outcome, decision_id)
        try:
            FeedbackRequest.model_validate(body)
        except ValidationError as error:
            raise RequestRejected(422, [row.model_dump() for row in field_errors(error)]) from None
        self.stored.append(body)


def test_service_decision_ids_reach_feedback_so_no_workaround_is_needed():
    from payroute.serving.dispatch.outcomes import ClientSink
    from payroute.serving.state import public_decision_id

    client = SchemaCheckedClient()
    sink = ClientSink(client)
    decision_id = public_decision_id("b0123abcde", ALL_DIGIT_ROUTER_UUID)
    sink.send(FEEDBACK_OUTCOME | {"decision_id": decision_id})
    assert client.stored[-1]["decision_id"] == decision_id  # accepted as issued
    # The old dashed form is not a printed card grouping either, so it passes the PAN screen unchanged.
    sink.send(FEEDBACK_OUTCOME | {"transaction_id": "t2", "decision_id": f"b0123abcde.{ALL_DIGIT_ROUTER_UUID}"})
    assert [body["transaction_id"] for body in client.stored] == ["t1", "t2"]
    assert client.stored[-1]["decision_id"] == f"b0123abcde.{ALL_DIGIT_ROUTER_UUID}"


def test_outcome_refused_for_another_field_is_rejected_for_good():
    from payroute.serving.dispatch.outcomes import ClientSink, SinkRejected

    client = SchemaCheckedClient()
    sink = ClientSink(client)
    with pytest.raises(SinkRejected):
        sink.send(FEEDBACK_OUTCOME | {"attempt": 0})
    assert client.stored == []


def test_simulated_hex_ids_pass_the_pan_screen():
    """Why the scenario no longer skips simulator rows: ids are a prefix + hex hash, so a digit run in
    them sits inside an alphanumeric token, even when it is 16 Luhn-valid digits."""
    assert withdrawal(customer_id="cu4111111111111111", card_fingerprint="fp5555555555554444").customer_id
