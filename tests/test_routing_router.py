"""The Router end to end on one transaction: eligibility, cascade, degraded mode, determinism, state."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

import numpy as np
import orjson
import pytest

from payroute.catalog import load_catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.serving.routing import Router, RoutingConfig, TablePredictor
from payroute.serving.routing.decision import Decision, RankedPsp, Reason

CATALOG = load_catalog()
T0 = dt.datetime(2026, 11, 2, 12, tzinfo=dt.timezone.utc)
PREDICTED = {"euroacq": 0.80, "budgetpay": 0.70, "riskshield": 0.82, "britpay": 0.85, "globalpay": 0.75}
GREEDY = RoutingConfig(exploration_cap=0.0, min_propensity=0.0)


def transaction(**overrides) -> Transaction:
    fields = dict(
        id="t-1", timestamp=T0, type="deposit", amount=Decimal("100"), currency="EUR", country="DE",
        payment_method="card", card_network="visa", card_bin="411111", card_type="debit", issuer_country="DE",
        vertical="igaming", merchant_id="m-1",
    )
    return Transaction(**{**fields, **overrides})


def outcome(psp: str, status: str = "declined", reason: str | None = "do_not_honor", attempt: int = 1) -> AttemptOutcome:
    return AttemptOutcome(
        transaction_id="t-1", attempt=attempt, psp=psp, timestamp=T0, status=status,
        decline_reason=None if status == "approved" else reason, latency_ms=120.0,
    )


class FailingPredictor:
    version = "broken-1"

    def predict(self, transaction, psps, *, attempt=1, previous_decline_class=None):
        raise RuntimeError("feature store unreachable")


class OutOfRangePredictor:
    version = "uncalibrated-1"

    def predict(self, transaction, psps, *, attempt=1, previous_decline_class=None):
        return np.full(len(psps), 1.7)


class WrongShapePredictor:
    version = "short-1"

    def predict(self, transaction, psps, *, attempt=1, previous_decline_class=None):
        return np.array([0.5])


# ------------------------------------------------------------------ eligibility through the router

@pytest.mark.parametrize(
    "overrides, psp, reason",
    [
        (dict(amount=Decimal("3")), "budgetpay", "amount_below_minimum"),  # budgetpay min 5 EUR
        (dict(amount=Decimal("3")), "riskshield", "amount_below_minimum"),  # riskshield min 10 EUR
        (dict(amount=Decimal("9000")), "britpay", "amount_above_maximum"),  # britpay max 8000 EUR
        (dict(amount=Decimal("9000")), "budgetpay", "amount_above_maximum"),  # budgetpay max 2000 EUR
        (dict(card_network="amex"), "euroacq", "network_not_supported"),
        (dict(card_network="amex"), "budgetpay", "network_not_supported"),
        (dict(vertical="crypto"), "euroacq", "vertical_not_accepted"),
        (dict(), "globalpay", "vertical_not_accepted"),  # globalpay takes no igaming
        (dict(country="BR", currency="BRL"), "euroacq", "country_not_supported"),
        (dict(type="affiliate_payout"), "euroacq", "type_not_supported"),
    ],
)
def test_ineligible_psps_are_excluded_with_their_reason(overrides, psp, reason):
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(**overrides))
    assert psp not in decision.psps
    assert {e.psp: e.reason for e in decision.excluded}[psp] == reason


def test_one_router_answers_every_amount_with_its_own_eligibility():
    """Eligibility is cached per (fields, amount band): amounts on both sides of limits, one router."""
    router = Router(CATALOG, TablePredictor(PREDICTED))
    for amount in ("100", "3", "9000", "100", "4.99", "5", "2000", "2000.01", "8000", "8000.01", "3"):
        decision = router.rank(transaction(amount=Decimal(amount)))
        report = CATALOG.eligibility(transaction(amount=Decimal(amount)))
        assert set(decision.psps) == set(report.eligible)
        assert {e.psp: e.reason for e in decision.excluded} == report.excluded


def test_amex_leaves_only_the_amex_acquirer():
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(card_network="amex"))
    assert decision.psps == ("britpay",)
    assert decision.propensity == 1.0


def test_no_eligible_psp_stops_with_a_reason():
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(card_network="jcb"))
    assert (decision.stop, decision.stop_reason, decision.ranking) == (True, "no_eligible_psp", ())
    assert len(decision.excluded) == len(CATALOG.psps)


def test_caller_exclusion():
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(), exclude=["euroacq"])
    assert "euroacq" not in decision.psps
    assert {e.psp: e.reason for e in decision.excluded}["euroacq"] == "excluded_by_caller"


# ------------------------------------------------------------------ cascade

@pytest.mark.parametrize(
    "reason, stop",
    [("insufficient_funds", "customer_decline"), ("expired_card", "customer_decline"), ("stolen_card", "hard_decline"),
     ("suspected_fraud", "hard_decline")],
)
def test_customer_and_hard_declines_end_the_cascade(reason, stop):
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(
        transaction(), attempt=2, previous=[outcome("euroacq", reason=reason)]
    )
    assert (decision.stop, decision.stop_reason, decision.ranking) == (True, stop, ())


def test_soft_decline_favours_another_acquiring_region():
    """approval_first, greedy. Model: budgetpay 0.82 (EU), britpay 0.80 (UK), riskshield 0.60 (EU/EMEA).
    First attempt: budgetpay wins (0.82 > 0.80). After a soft decline at euroacq (EU), EU acquirers are
    multiplied by 0.9: budgetpay 0.738 < britpay 0.80, so britpay leads; euroacq is excluded as tried."""
    predictor = TablePredictor({"euroacq": 0.85, "budgetpay": 0.82, "britpay": 0.80, "riskshield": 0.60})
    router = Router(CATALOG, predictor, GREEDY)
    assert router.rank(transaction(), objective="approval_first").first == "euroacq"
    retry = router.rank(transaction(), attempt=2, previous=[outcome("euroacq")], objective="approval_first")
    assert retry.psps == ("britpay", "budgetpay", "riskshield")
    assert {e.psp: e.reason for e in retry.excluded}["euroacq"] == "already_tried"
    by_psp = {r.psp: r for r in retry.ranking}
    assert by_psp["budgetpay"].p_approve == pytest.approx(0.82 * 0.9)
    assert by_psp["budgetpay"].reason("same_region_as_declined") == 0.9
    assert by_psp["britpay"].reason("same_region_as_declined") is None
    assert retry.reason("previous_decline_class") == "soft"


def test_positions_after_the_first_assume_it_declined():
    """Plan for attempt 1: euroacq first (EU); then britpay (UK, 0.80) before budgetpay (EU, 0.82·0.9)."""
    predictor = TablePredictor({"euroacq": 0.85, "budgetpay": 0.82, "britpay": 0.80, "riskshield": 0.60})
    decision = Router(CATALOG, predictor, GREEDY).rank(transaction(), objective="approval_first")
    assert decision.psps == ("euroacq", "britpay", "budgetpay", "riskshield")


# ------------------------------------------------------------------ degraded mode

@pytest.mark.parametrize(
    "predictor, why",
    [(None, "no_predictor"), (FailingPredictor(), "predictor_failed:RuntimeError"),
     (WrongShapePredictor(), "predictor_bad_shape"), (OutOfRangePredictor(), "predictor_out_of_range")],
)
def test_degraded_mode_answers_in_static_order(predictor, why):
    decision = Router(CATALOG, predictor).rank(transaction())
    # static priorities: euroacq 1, riskshield 3, britpay 4, budgetpay 5 (globalpay 0 takes no igaming)
    assert decision.degraded and not decision.stop
    assert decision.psps == ("euroacq", "riskshield", "britpay", "budgetpay")
    assert decision.propensity == 1.0
    assert decision.reason("degraded") == why


def test_healthy_predictor_is_not_degraded():
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction())
    assert not decision.degraded and decision.model_version == "table"


# ------------------------------------------------------------------ contract, reasons, determinism, state

def test_decision_json_carries_the_public_contract():
    body = json.loads(json.dumps(Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction()).to_json()))
    assert {"decision_id", "ranking", "excluded", "model_version", "propensity", "degraded"} <= set(body)
    assert {"psp", "p_approve", "expected_cost", "score", "reasons"} <= set(body["ranking"][0])
    assert body["excluded"][0].keys() == {"psp", "reason"}
    codes = {r["code"] for r in body["ranking"][0]["reasons"]}
    assert {"model_probability", "posterior_adjustment", "health", "fee_eur", "fx_eur", "chargeback_eur"} <= codes



def test_a_reason_is_its_own_json_object_and_cannot_change():
    reason = Reason(code="fee_eur", value=1.25)
    assert (reason.code, reason.value) == ("fee_eur", 1.25) and Reason(code="explored").value is None
    assert orjson.dumps((reason,)) == b'[{"code":"fee_eur","value":1.25}]'  # encoded as the contract's object
    assert hash(reason) == hash(Reason(code="fee_eur", value=1.25)) and reason == {"code": "fee_eur", "value": 1.25}
    for mutate in (lambda: reason.__setitem__("value", 2), lambda: reason.update(value=2), lambda: reason.pop("code"),
                   lambda: reason.clear(), lambda: reason.setdefault("x", 1), lambda: reason.popitem()):
        with pytest.raises(TypeError, match="immutable"):
            mutate()
    assert reason == {"code": "fee_eur", "value": 1.25}


def test_decisions_built_without_init_equal_the_constructors_and_hold_every_field():
    """The router builds RankedPsp and Decision with ``build`` (no per-field __setattr__): each must equal
    the dataclass's own constructor on the same fields, and carry exactly the declared fields."""
    router = Router(CATALOG, TablePredictor(PREDICTED), seed=3)
    decisions = [router.rank(transaction(id=f"t-{i}")) for i in range(3)]
    decisions += router.rank_many([transaction(id=f"u-{i}") for i in range(3)])
    for decision in decisions:
        assert set(decision.__dict__) == {f.name for f in dataclasses.fields(Decision)}
        assert Decision(**decision.__dict__) == decision
        for item in decision.ranking:
            assert set(item.__dict__) == {f.name for f in dataclasses.fields(RankedPsp)}
            assert RankedPsp(**item.__dict__) == item
            with pytest.raises(dataclasses.FrozenInstanceError):
                item.psp = "other"
    from payroute.serving.routing.router import _Plan

    plan = router._plan(transaction(), 1, (), (), "expected_value", T0.timestamp())  # also built with ``build``
    assert set(plan.__dict__) == {f.name for f in dataclasses.fields(_Plan)} and _Plan(**plan.__dict__) == plan

def _replay(seed: int) -> list[dict]:
    router = Router(CATALOG, TablePredictor(PREDICTED), seed=seed)
    answers = []
    for i in range(30):
        decision = router.rank(transaction(timestamp=T0 + dt.timedelta(seconds=i)))
        answers.append(decision.to_json())
        router.observe(outcome(decision.first, "approved" if i % 3 else "declined"), transaction(), decision.decision_id)
    return answers


def test_seeded_runs_are_identical_and_seeds_differ():
    assert _replay(11) == _replay(11)
    assert [a["decision_id"] for a in _replay(11)] != [a["decision_id"] for a in _replay(12)]


def test_snapshot_round_trip_continues_identically():
    router = Router(CATALOG, TablePredictor(PREDICTED), seed=5)
    for i in range(20):
        decision = router.rank(transaction())
        router.observe(outcome(decision.first, "error", "psp_error" if i % 2 else "do_not_honor"), transaction(), decision.decision_id)
    state = json.loads(json.dumps(router.snapshot()))
    restored = Router.restore(CATALOG, TablePredictor(PREDICTED), state, seed=99)
    assert restored.snapshot() == router.snapshot()
    assert [restored.rank(transaction()).to_json() for _ in range(5)] == [router.rank(transaction()).to_json() for _ in range(5)]


def test_load_state_refuses_foreign_data():
    with pytest.raises(ValueError, match="not a payroute-router-state"):
        Router(CATALOG, None).load_state({"format": "something-else"})


def test_cascade_order_is_the_greedy_max_by_health_then_score():
    """The loop in ``cascade_order`` picks, at each position, what ``max(remaining, key=(healthy, score))``
    picks (first maximum in position order), with ties, demoted PSPs and region overlaps."""
    from payroute.serving.routing.cascade import cascade_order

    def reference(first, score, after_decline, overlap, demoted):
        plain, after, overlaps, down = score.tolist(), after_decline.tolist(), overlap.tolist(), demoted.tolist()
        order, remaining, penalised = [first], [j for j in range(len(plain)) if j != first], list(overlaps[first])
        while remaining:
            best = max(remaining, key=lambda j: (not down[j], after[j] if penalised[j] else plain[j]))
            order.append(best)
            remaining.remove(best)
            penalised = [a or b for a, b in zip(penalised, overlaps[best])]
        return order

    rng = np.random.default_rng(0)
    for _ in range(3000):
        m = int(rng.integers(1, 9))
        score = rng.choice([0.1, 0.2, 0.5], m) if rng.random() < 0.5 else rng.random(m)  # ties half the time
        overlap = rng.random((m, m)) < 0.4
        overlap = overlap | overlap.T
        np.fill_diagonal(overlap, True)
        demoted = rng.random(m) < 0.2
        first = int(rng.integers(0, m))
        args = (first, score, score * 0.9, overlap, demoted)
        assert cascade_order(*args) == reference(*args)
