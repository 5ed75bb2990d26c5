"""The objective as a pure function: hand-computed winners and values, and parity with the one fee rule."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import numpy as np
import pytest

from payroute.catalog import attempt_cost, load_catalog
from payroute.contracts import Transaction
from payroute.serving.routing import FeeTable, Router, RoutingConfig, TablePredictor, expected_cost, score

CATALOG = load_catalog()
# DE igaming visa card, 100 EUR: eligible euroacq, britpay, budgetpay, riskshield.
PREDICTED = {"euroacq": 0.80, "budgetpay": 0.70, "riskshield": 0.82, "britpay": 0.85}
# Value of an approved payment 10% of the amount (10 EUR); no chargeback term, so the numbers are by hand.
HAND_CONFIG = RoutingConfig(approval_value_fraction=0.10, chargeback_rate_by_vertical={}, exploration_cap=0.0, min_propensity=0.0)


def transaction(**overrides) -> Transaction:
    fields = dict(
        id="t-1", timestamp=dt.datetime(2026, 11, 2, 12, tzinfo=dt.timezone.utc), type="deposit", amount=Decimal("100"),
        currency="EUR", country="DE", payment_method="card", card_network="visa", card_bin="411111",
        card_type="debit", issuer_country="DE", vertical="igaming", merchant_id="m-1",
    )
    return Transaction(**{**fields, **overrides})


# Hand computation (fees: euroacq 0.15 + 1.40 %, budgetpay 0.05 + 0.90 %, riskshield 0.40 + 4.20 %,
# britpay 0.20 + 1.50 % + 1.75 % FX because it settles only GBP; decline fees 0.02 / 0.01 / 0.10 / 0.02):
#   EV = p·10 − [p·(fee + FX) + (1 − p)·decline fee]
#   euroacq    8.0 − (0.80·1.55 + 0.20·0.02) = 6.756      <- EV winner: not the cheaper budgetpay,
#   budgetpay  7.0 − (0.70·0.95 + 0.30·0.01) = 6.332         not the higher-approval britpay
#   riskshield 8.2 − (0.82·4.60 + 0.18·0.10) = 4.410
#   britpay    8.5 − (0.85·3.45 + 0.15·0.02) = 5.5645
#   least cost E[cost]/p: euroacq 1.555, budgetpay 0.954286, riskshield 4.621951, britpay 3.453529
HAND_EV = {"euroacq": 6.756, "budgetpay": 6.332, "riskshield": 4.41, "britpay": 5.5645}
HAND_LEAST_COST = {"euroacq": -1.555, "budgetpay": -0.668 / 0.70, "riskshield": -3.79 / 0.82, "britpay": -2.9355 / 0.85}


@pytest.mark.parametrize(
    "objective, winner",
    [("expected_value", "euroacq"), ("approval_first", "britpay"), ("least_cost", "budgetpay")],
)
def test_hand_computed_winner_per_objective(objective, winner):
    router = Router(CATALOG, TablePredictor(PREDICTED), HAND_CONFIG)
    decision = router.rank(transaction(), objective=objective)
    assert decision.first == winner
    assert decision.propensity == 1.0  # exploration off: greedy is deterministic


@pytest.mark.parametrize("objective, expected", [("expected_value", HAND_EV), ("least_cost", HAND_LEAST_COST)])
def test_hand_computed_scores(objective, expected):
    decision = Router(CATALOG, TablePredictor(PREDICTED), HAND_CONFIG).rank(transaction(), objective=objective)
    assert {r.psp: r.score for r in decision.ranking} == pytest.approx(expected, abs=1e-9)


def test_cost_components_match_the_fee_rule():
    """FeeTable's affine coefficients reproduce attempt_cost (the one fee rule) for every PSP and currency."""
    table, rng = FeeTable(CATALOG), np.random.default_rng(3)
    for currency in CATALOG.fx_rates:
        for amount in rng.uniform(1, 5000, size=3).round(2):
            index = np.arange(len(CATALOG.psps))
            fee, fx, declined = table.components(currency, float(amount), index)
            for j, psp in enumerate(CATALOG.psp_names):
                approved = attempt_cost(CATALOG, psp, Decimal(str(amount)), currency, "approved")
                failed = attempt_cost(CATALOG, psp, Decimal(str(amount)), currency, "declined")
                assert fee[j] + fx[j] == pytest.approx(float(approved.total_eur), abs=2e-4)
                assert fx[j] == pytest.approx(float(approved.fx_cost_eur), abs=2e-4)
                assert declined[j] == pytest.approx(float(failed.total_eur), abs=2e-4)


def test_score_broadcasts_over_samples():
    router = Router(CATALOG, TablePredictor(PREDICTED), HAND_CONFIG)
    decision = router.rank(transaction())
    index = np.array([CATALOG.psp_names.index(r.psp) for r in decision.ranking])
    terms = router._cost_terms(transaction(), list(decision.psps), index)
    draws = np.random.default_rng(0).uniform(size=(5, len(index)))
    per_row = np.array([score("expected_value", row, terms) for row in draws])
    np.testing.assert_allclose(score("expected_value", draws, terms), per_row)
    np.testing.assert_allclose(expected_cost(np.ones(len(index)), terms), terms.cost_if_approved)



@pytest.mark.parametrize("approval_shape, term_shape, value_shape", [
    ((4,), (4,), ()),  # one decision
    ((3, 5, 4), (3, 1, 4), (3, 1, 1)),  # a batch's draws against its rows' terms
    ((), (4,), ()),  # a scalar approval against per-PSP terms (broadcasts wider than the approval)
    ((4,), (2, 4), (2, 1)),  # terms wider than the approval
])
def test_in_place_objective_arithmetic_is_the_plain_expression(approval_shape, term_shape, value_shape):
    """expected_cost and the expected-value score compute in place where the shapes allow; each must give the
    bits of the plain expressions ``p·C + (1 − p)·D`` and ``p·V − cost`` for any broadcasting."""
    from payroute.serving.routing.objective import CostTerms

    rng = np.random.default_rng(5)
    approval = rng.uniform(size=approval_shape)
    fee, fx, declined, chargeback = (rng.uniform(0, 3, term_shape) for _ in range(4))
    value, amount = rng.uniform(1, 9, value_shape), rng.uniform(10, 90, value_shape)
    terms = CostTerms(fee, fx, declined, chargeback, value, amount)
    cost = approval * (fee + fx + chargeback) + (1.0 - approval) * declined
    assert np.array_equal(expected_cost(approval, terms), cost)
    assert np.array_equal(score("expected_value", approval, terms), approval * value - cost)

@pytest.mark.parametrize(
    "kind, expected",
    [("deposit", "expected_value"), ("withdrawal", "least_cost"), ("affiliate_payout", "least_cost")],
)
def test_default_objective_by_transaction_type(kind, expected):
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(type=kind))
    assert decision.objective == expected


def test_chargeback_term_enters_the_cost():
    """Default chargeback cost: rate × (amount + fee) = 0.004 × (100 + 15) = 0.46 EUR if approved."""
    decision = Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction())
    assert {r.reason("chargeback_eur") for r in decision.ranking} == {0.46}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(exploration_cap=1.5), "exploration_cap in [0, 1]"),
        (dict(min_propensity=0.5), "min_propensity in [0, 0.1]"),
        (dict(objective_by_type={"deposit": "max_profit"}), "objectives must be among"),
        (dict(prior_strength=0), "prior strengths must be > 0"),
    ],
)
def test_config_refuses_bad_values(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RoutingConfig(**overrides)


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown objective 'fastest'"):
        Router(CATALOG, TablePredictor(PREDICTED)).rank(transaction(), objective="fastest")
