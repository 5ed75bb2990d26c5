"""``Router.rank_many``: the same decisions as ``rank`` one by one under a seed, valid propensities, and
degraded answers decided per transaction, as one-by-one ranking decides them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from payroute.catalog import load_catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.serving.routing import Router, RoutingConfig, TablePredictor

CATALOG = load_catalog()
T0 = dt.datetime(2026, 11, 2, 12, tzinfo=dt.timezone.utc)
# coinbridge and walletgate are unknown to the model (NaN): cold priors, drawn from the exact Beta.
PREDICTED = {"euroacq": 0.80, "budgetpay": 0.70, "riskshield": 0.82, "britpay": 0.85, "globalpay": 0.75,
             "latamconnect": 0.66}


def transaction(i: int, **overrides) -> Transaction:
    fields = dict(
        id=f"b-{i}", timestamp=T0 + dt.timedelta(seconds=i), type="deposit", amount=Decimal("100"), currency="EUR",
        country="DE", payment_method="card", card_network="visa", card_bin="411111", card_type="debit",
        issuer_country="DE", vertical="igaming", merchant_id="m-1",
    )
    return Transaction(**{**fields, **overrides})


# A mixed batch: several segments and currencies, a withdrawal (least cost), cold PSPs, a PSP with no
# eligible route (stop), amounts at both ends.
VARIANTS = [
    {},
    {"country": "GB", "currency": "GBP", "issuer_country": "GB"},
    {"type": "withdrawal", "amount": Decimal("2500")},
    {"payment_method": "ewallet", "card_network": None, "card_bin": None, "card_type": None},
    {"payment_method": "crypto", "card_network": None, "card_bin": None, "card_type": None, "vertical": "crypto"},
    {"country": "BR", "currency": "BRL", "issuer_country": "BR", "amount": Decimal("40")},
    {"card_network": "troy", "vertical": "ecommerce"},  # nothing eligible: the decision stops
    {"vertical": "ecommerce", "amount": Decimal("7.5")},
]
BATCH = [transaction(i, **VARIANTS[i % len(VARIANTS)]) for i in range(40)]


def warmed(predictor, seed: int = 5, config: RoutingConfig = RoutingConfig()) -> Router:
    """A router with evidence in two segments and a demoted PSP (so probes and subsets are exercised)."""
    router = Router(CATALOG, predictor, config, seed=seed)
    for k in range(60):
        status = "approved" if k % 3 else "declined"
        psp = ("euroacq", "budgetpay", "britpay")[k % 3]
        outcome = AttemptOutcome(transaction_id=f"w-{k}", attempt=1, psp=psp, timestamp=T0, status=status,
                                 decline_reason=None if status == "approved" else "do_not_honor", latency_ms=90.0)
        router.observe(outcome, BATCH[k % 2])
    for k in range(6):  # riskshield errs in a burst: demoted
        router.observe(AttemptOutcome(transaction_id=f"e-{k}", attempt=1, psp="riskshield", timestamp=T0,
                                      status="error", decline_reason="psp_error", latency_ms=900.0), BATCH[0])
    assert router.health.is_demoted("riskshield")
    return router


class PerTransactionPredictor:
    """A real predictor without a batch method: the router must call it once per transaction."""

    version = "table-only"

    def __init__(self) -> None:
        self.table = TablePredictor(PREDICTED)

    def predict(self, transaction, psps, *, attempt=1, previous_decline_class=None):
        return self.table.predict(transaction, psps, attempt=attempt)


class FailsOnBrazil(PerTransactionPredictor):
    """Raises for BR transactions only; its batch method fails as a whole (one bad row)."""

    version = "flaky-br"

    def predict(self, transaction, psps, *, attempt=1, previous_decline_class=None):
        if transaction.country == "BR":
            raise RuntimeError("feature lookup timed out")
        return super().predict(transaction, psps, attempt=attempt)

    def predict_many(self, items):
        return [self.predict(transaction, psps) for transaction, psps in items]


def one_by_one(router: Router, transactions) -> list:
    return [router.rank(transaction) for transaction in transactions]


@pytest.mark.parametrize("make_predictor", [lambda: TablePredictor(PREDICTED), PerTransactionPredictor, FailsOnBrazil,
                                            lambda: None], ids=["batch-method", "per-transaction", "one-fails", "none"])
@pytest.mark.parametrize("size", [1, 2, 5, 9, len(BATCH)])  # below ROW_BY_ROW_DRAWS rows the draws go row by row
def test_rank_many_equals_rank_one_by_one_under_a_seed(make_predictor, size):
    batch_router, single_router = warmed(make_predictor()), warmed(make_predictor())
    batched = batch_router.rank_many(BATCH[:size])
    single = one_by_one(single_router, BATCH[:size])
    assert [d.to_json() for d in batched] == [d.to_json() for d in single]  # ids, orders, propensities, reasons
    assert [d.baselines for d in batched] == [d.baselines for d in single]
    # The random streams end in the same state: the next decisions agree too.
    assert batch_router.rank(BATCH[0]).to_json() == single_router.rank(BATCH[0]).to_json()


def test_the_batch_covers_every_path():
    """The equivalence above means something only if the batch mixes these cases."""
    decisions = warmed(FailsOnBrazil()).rank_many(BATCH)
    assert any(d.stop and d.stop_reason == "no_eligible_psp" for d in decisions)
    assert {d.degraded for d in decisions} == {True, False}
    assert all(d.degraded == (t.country == "BR") for d, t in zip(decisions, BATCH) if not d.stop)
    assert {d.objective for d in decisions} == {"expected_value", "least_cost"}
    assert any(r.reason("prior") == "cold" for d in decisions for r in d.ranking)
    assert any(r.reason("health") == "demoted" for d in decisions for r in d.ranking)
    assert any(d.reason("exploration_weight") > 0 for d in decisions if not d.stop)  # Thompson draws used


def test_rank_many_propensities_are_valid():
    config = RoutingConfig()
    for decision in warmed(TablePredictor(PREDICTED)).rank_many(BATCH * 3):
        if decision.stop:
            assert decision.propensity is None and decision.ranking == ()
            continue
        p_first = np.array([r.p_first for r in decision.ranking])
        assert p_first.sum() == pytest.approx(1.0, abs=1e-12)
        assert decision.propensity == decision.ranking[0].p_first
        assert 0 < decision.propensity <= 1
        assert np.all(p_first >= min(config.min_propensity, 1 / len(p_first)) - 1e-12)


def test_rank_many_of_nothing_is_nothing():
    router = warmed(TablePredictor(PREDICTED))
    state = router.snapshot()
    assert router.rank_many([]) == []
    assert router.snapshot() == state  # no draw consumed


def test_rank_many_refuses_an_unknown_objective():
    with pytest.raises(ValueError, match="unknown objective"):
        warmed(TablePredictor(PREDICTED)).rank_many(BATCH[:2], objective="cheapest")


def test_decision_ids_are_the_bytes_of_the_id_stream():
    """Ids come from raw 64-bit draws; they are the UUIDs the former ``Generator.bytes(16)`` gave (so seeded
    runs and restored snapshots keep their ids), one at a time and in a batch."""
    from payroute.serving.routing.router import _FEW_IDS, _uuid4, _uuid4_many

    def former(rng):
        raw = bytearray(rng.bytes(16))
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        text = raw.hex()
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    ours, theirs, batch = (np.random.default_rng(11) for _ in range(3))
    expected = [former(theirs) for _ in range(500)]
    assert [_uuid4(ours) for _ in range(500)] == expected
    counts = [0, 1, _FEW_IDS, _FEW_IDS + 1, 200]  # a few ids one at a time, more in one draw
    counts.append(500 - sum(counts))
    assert [i for count in counts for i in _uuid4_many(batch, count)] == expected
    assert ours.bit_generator.state["state"] == theirs.bit_generator.state["state"] == batch.bit_generator.state["state"]


@pytest.mark.parametrize("raws", [
    [np.array([0.2, 0.9]), np.array([0.5])],  # a batch predictor's answer: one check for all rows
    [np.array([0.2, 1.2]), np.array([0.5])],  # one row out of range: that row alone degrades
    [np.array([0.2, 0.9]), np.array([0.5, 0.6])],  # wrong length
    [[0.2, 0.9], np.array([0.5], dtype=np.float32)],  # not float64 vectors: converted row by row
    [np.array([np.nan, 0.3]), np.array([0.5])],  # NaN: a PSP the model does not know, kept
])
def test_batch_check_of_predictions_equals_the_row_by_row_check(raws):
    from payroute.serving.routing.router import _checked, _checked_many

    counts = [2, 1]
    expected = [_checked(raw, count) for raw, count in zip(raws, counts)]
    got = _checked_many(raws, counts)
    assert [why for _, why in got] == [why for _, why in expected]
    for (value, _), (reference, _) in zip(got, expected):
        assert (value is None and reference is None) or np.array_equal(value, reference, equal_nan=True)
