"""The bandit under simulated traffic: outages move traffic, new PSPs get explored, propensities are honest.

The world: one segment (DE, card, visa, igaming deposit of 100 EUR) with four eligible PSPs; each attempt
at PSP k is approved with its true probability, otherwise soft-declined (``do_not_honor``); during an
outage the PSP answers ``error``. One attempt per event (the first-placed PSP), one second apart.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payroute.catalog import load_catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.serving.routing import Router, RoutingConfig, TablePredictor
from payroute.serving.routing.bandit import draw_first, draw_first_many, first_place_policies, first_place_policy, posterior_draws
from payroute.serving.routing.health import DEMOTED, HEALTHY, PspHealth, next_health

CATALOG = load_catalog()
T0 = dt.datetime(2026, 11, 2, 12, tzinfo=dt.timezone.utc)
TRUE = {"euroacq": 0.90, "britpay": 0.80, "budgetpay": 0.75, "riskshield": 0.78}
BASE = Transaction(
    id="t-0", timestamp=T0, type="deposit", amount=Decimal("100"), currency="EUR", country="DE",
    payment_method="card", card_network="visa", card_bin="411111", card_type="debit", issuer_country="DE",
    vertical="igaming", merchant_id="m-1",
)


def at(i: int) -> Transaction:
    return BASE.model_copy(update={"id": f"t-{i}", "timestamp": T0 + dt.timedelta(seconds=i)})


def attempt_at(psp: str, transaction: Transaction, rng: np.random.Generator, true: dict, failing: frozenset) -> AttemptOutcome:
    if psp in failing:
        status, reason = "error", "psp_error"
    elif rng.random() < true[psp]:
        status, reason = "approved", None
    else:
        status, reason = "declined", "do_not_honor"
    return AttemptOutcome(
        transaction_id=transaction.id, attempt=1, psp=psp, timestamp=transaction.timestamp, status=status,
        decline_reason=reason, latency_ms=100.0,
    )


def run(router: Router, start: int, events: int, rng, *, true=TRUE, failing=frozenset(), objective="approval_first"):
    """Route ``events`` transactions, feeding each outcome back; returns the decisions."""
    decisions = []
    for i in range(start, start + events):
        transaction = at(i)
        decision = router.rank(transaction, objective=objective)
        router.observe(attempt_at(decision.first, transaction, rng, true, failing), transaction, decision.decision_id)
        decisions.append(decision)
    return decisions


def p_first(decision, psp: str) -> float:
    return next(r.p_first for r in decision.ranking if r.psp == psp)


def events_until_share_below(router: Router, psp: str, threshold: float, rng, start: int, limit: int) -> int:
    """Events after the outage starts until ``psp``'s probability of being first is below ``threshold``."""
    for n in range(1, limit + 1):
        decision = run(router, start + n, 1, rng, failing=frozenset({psp}))[0]
        if p_first(decision, psp) < threshold:
            return n
    return limit + 1


# Stated bounds (seed 2026). Measured figures are in docs/routing.md (benchmarks/bench_ranker.py).
OUTAGE_BOUND_WITH_HEALTH_GUARD = 10
OUTAGE_BOUND_BANDIT_ONLY = 150


@pytest.mark.parametrize(
    "config, bound",
    [
        (RoutingConfig(), OUTAGE_BOUND_WITH_HEALTH_GUARD),
        (RoutingConfig(burst_errors=None, error_rate_threshold=1.0), OUTAGE_BOUND_BANDIT_ONLY),
    ],
    ids=["health-guard", "bandit-only"],
)
def test_outage_moves_first_places_below_ten_percent(config, bound):
    rng = np.random.default_rng(2026)
    router = Router(CATALOG, TablePredictor(TRUE), config, seed=2026)
    warm = run(router, 0, 1000, rng)
    assert np.mean([d.first == "euroacq" for d in warm[-300:]]) > 0.7  # the best PSP carried the traffic
    n = events_until_share_below(router, "euroacq", 0.10, rng, 1000, bound)
    assert n <= bound
    # and it stays there: empirical share of first places over the next 500 events, 4 SE over 10%
    after = run(router, 2000, 500, rng, failing=frozenset({"euroacq"}))
    assert np.mean([d.first == "euroacq" for d in after]) < 0.10


def test_recovered_psp_wins_its_traffic_back():
    rng = np.random.default_rng(7)
    router = Router(CATALOG, TablePredictor(TRUE), seed=7)
    run(router, 0, 300, rng)
    run(router, 300, 100, rng, failing=frozenset({"euroacq"}))
    assert router.health.is_demoted("euroacq")
    back = run(router, 400, 1000, rng)  # recovered: probes succeed, health restores, posterior relearns
    assert not router.health.is_demoted("euroacq")
    assert np.mean([d.first == "euroacq" for d in back[-300:]]) > 0.6


def test_new_psp_is_explored_and_wins_traffic_when_good():
    """riskshield is unknown to the model (NaN -> cold prior) but truly approves 95 %."""
    true = {**TRUE, "riskshield": 0.95}
    known = {k: v for k, v in TRUE.items() if k != "riskshield"}
    rng = np.random.default_rng(11)
    router = Router(CATALOG, TablePredictor(known), seed=11)
    decisions = run(router, 0, 1000, rng, true=true)
    first = [d.first for d in decisions]
    assert first[:100].count("riskshield") >= 5  # explored early
    assert decisions[0].ranking[[r.psp for r in decisions[0].ranking].index("riskshield")].reason("prior") == "cold"
    assert first[-300:].count("riskshield") / 300 > 0.6  # and wins the traffic


def test_new_psp_without_evidence_still_has_floor():
    router = Router(CATALOG, TablePredictor({"euroacq": 0.99, "britpay": 0.98}), RoutingConfig(exploration_cap=0.0))
    decision = router.rank(BASE)
    assert min(r.p_first for r in decision.ranking) >= 0.01


def test_shared_residual_moves_a_drifted_psp_in_segments_without_evidence():
    """euroacq's true approval falls from 0.90 to 0.50 everywhere (the model still says 0.90). After 300
    events in the visa segment, a mastercard transaction (no evidence of its own) sees euroacq's posterior
    mean moved toward the truth by the pooled residual g = R / (n0 + N) (euroacq loses the visa traffic after a
    few dozen events, so N stays small: g is about −0.2 here); with the shared cell off it stays at 0.90."""
    drifted = {**TRUE, "euroacq": 0.50}
    other_segment = Transaction.model_validate({**BASE.model_dump(), "id": "t-mc", "card_network": "mastercard",
                                                "card_bin": "511111", "timestamp": T0 + dt.timedelta(seconds=301)})
    means = {}
    for shared in (0.0, 1000.0):
        config = RoutingConfig(shared_max_evidence=shared)
        router = Router(CATALOG, TablePredictor(TRUE), config, seed=5)
        run(router, 0, 300, np.random.default_rng(5), true=drifted)
        ranking = router.rank(other_segment, objective="approval_first").ranking
        means[shared] = next(r.p_approve for r in ranking if r.psp == "euroacq")
    assert means[0.0] == pytest.approx(0.90, abs=1e-9)
    assert means[1000.0] < 0.80  # at least a quarter of the 0.40 drop, from another segment's evidence
    assert means[1000.0] > 0.50  # shrunk toward the model: never past the truth


def test_posterior_without_shared_evidence_is_the_model_prior_update():
    from payroute.serving.routing.bandit import posterior

    p, n0 = np.array([0.8, 0.6]), np.array([20.0, 20.0])
    n, r = np.array([10.0, 0.0]), np.array([-2.0, 0.0])
    plain = posterior(p, n0, n, r)
    zero = posterior(p, n0, n, r, np.zeros(2))
    np.testing.assert_allclose(plain[0], zero[0])
    np.testing.assert_allclose(plain[0], [0.8 - 2.0 / 30, 0.6])  # p + r / (n0 + n)
    shifted, _ = posterior(p, n0, n, r, np.array([-0.1, -0.1]))
    np.testing.assert_allclose(shifted, [(20 * 0.7 + 10 * 0.6) / 30, 0.5])


# ------------------------------------------------------------------ propensities and the exploration cap

def test_propensities_are_valid_and_match_empirical_first_places():
    """Seed 3, 3 000 decisions on a fixed posterior: each PSP's empirical share of first places is
    within 4 binomial standard errors of its mean reported p_first."""
    rng = np.random.default_rng(3)
    router = Router(CATALOG, TablePredictor(TRUE), RoutingConfig(exploration_cap=0.05), seed=3)
    run(router, 0, 40, rng)  # some evidence, so the posteriors are not just the model
    state = router.snapshot()
    n, counts, reported = 3_000, {}, {psp: 0.0 for psp in TRUE}
    for _ in range(n):
        decision = router.rank(BASE)
        total = sum(r.p_first for r in decision.ranking)
        assert total == pytest.approx(1.0, abs=1e-12)
        assert all(r.p_first >= router.config.min_propensity - 1e-12 for r in decision.ranking)
        assert decision.propensity == decision.ranking[0].p_first and 0 < decision.propensity <= 1
        counts[decision.first] = counts.get(decision.first, 0) + 1
        for r in decision.ranking:
            reported[r.psp] += r.p_first / n
    assert router.snapshot()["posterior"] == state["posterior"]  # rank alone never learns
    for psp, probability in reported.items():
        tolerance = 4 * np.sqrt(probability * (1 - probability) / n)
        assert counts.get(psp, 0) / n == pytest.approx(probability, abs=tolerance), psp
    assert max(reported.values()) < 0.99  # the test exercises a genuinely random policy


def approval_given_up(decision) -> float:
    """Σ_k p_first_k · max(0, p_approve[greedy] − p_approve_k), recomputed from the public answer."""
    greedy = next(r for r in decision.ranking if r.psp == decision.reason("greedy_psp"))
    return sum(r.p_first * max(0.0, greedy.p_approve - r.p_approve) for r in decision.ranking)


@pytest.mark.parametrize("cap", [0.005, 0.02])
def test_exploration_stays_within_its_cap(cap):
    """While a cold PSP is being learned (the hardest case for the cap), every decision's expected
    approval given up versus greedy is ≤ cap (1e-9), whenever floor and probes alone fit under it."""
    true = {**TRUE, "riskshield": 0.95}
    known = {k: v for k, v in TRUE.items() if k != "riskshield"}
    config = RoutingConfig(exploration_cap=cap, min_propensity=0.001)
    decisions = run(Router(CATALOG, TablePredictor(known), config, seed=4), 0, 400, np.random.default_rng(4), true=true)
    given_up = np.array([approval_given_up(d) for d in decisions])
    assert given_up.max() <= cap + 1e-9
    np.testing.assert_allclose(given_up, [d.reason("expected_approval_given_up") for d in decisions], atol=1e-12)
    # without the cap the same situation gives up more, so the cap is what binds
    uncapped = run(Router(CATALOG, TablePredictor(known), RoutingConfig(exploration_cap=1.0, min_propensity=0.001), seed=4),
                   0, 50, np.random.default_rng(4), true=true)
    assert max(approval_given_up(d) for d in uncapped) > cap


# ------------------------------------------------------------------ what counts against a PSP

@pytest.mark.parametrize(
    "status, reason, counts",
    [
        ("declined", "insufficient_funds", False),  # customer class: the customer's, not the PSP's
        ("declined", "stolen_card", False),  # hard: says nothing about the PSP either
        ("declined", "do_not_honor", True),  # soft: the PSP's acquiring path
        ("error", "psp_error", True),
        ("timeout", "psp_timeout", True),
        ("approved", None, True),
    ],
)
def test_what_counts_against_the_psp(status, reason, counts):
    router = Router(CATALOG, TablePredictor(TRUE))
    for i in range(10):
        decision = router.rank(at(i))
        router.observe(
            AttemptOutcome(transaction_id=f"t-{i}", attempt=1, psp="euroacq", timestamp=at(i).timestamp, status=status,
                           decline_reason=reason, latency_ms=90.0),
            at(i), decision.decision_id,
        )
    evidence = router.snapshot()["posterior"].get("DE|card|visa", {}).get("euroacq", [0.0])[0]
    assert (evidence > 0) == counts
    assert router.health.is_demoted("euroacq") == (status in ("error", "timeout"))


HEALTH = dict(burst_errors=5, error_rate_threshold=0.5, alpha=0.1, min_events=20, recovery_successes=3)


@pytest.mark.parametrize(
    "sequence, state",
    [
        ("EEEEE", DEMOTED),  # a burst of 5 errors
        ("EEEES", HEALTHY),  # 4 then a success: not a burst
        ("EEEEESS", DEMOTED),  # 2 successes are not yet a recovery
        ("EEEEESSS", HEALTHY),  # 3 are
        ("EEEEESSESS", DEMOTED),  # an error resets the recovery count
        ("ESESESESESESESESESESESESES", HEALTHY),  # 50 % errors alternating: EWMA just under threshold
        ("EESEESEESEESEESEESEESEESEE", DEMOTED),  # 2/3 errors: EWMA above 0.5 after 20 events
    ],
)
def test_health_guard_transitions(sequence, state):
    health = PspHealth()
    for i, event in enumerate(sequence):
        health = next_health(health, event == "E", float(i), **HEALTH)
    assert health.state == state


@pytest.mark.parametrize("normal_strength", [np.inf, 20.0])
def test_posterior_draws_have_the_beta_moments(normal_strength):
    """Seed 0, 20 000 draws: mean within 0.003 and sd within 5 % of Beta(μκ, (1 − μ)κ), exact or normal."""
    mean, strength = np.array([0.9, 0.6, 0.5]), np.array([40.0, 25.0, 3.0])
    draws = posterior_draws(mean, strength, np.random.default_rng(0), samples=20_000, normal_strength=normal_strength)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=0.003)
    np.testing.assert_allclose(draws.std(axis=0), np.sqrt(mean * (1 - mean) / (strength + 1)), rtol=0.05)
    assert draws.min() > 0 and draws.max() < 1


# ------------------------------------------------------------------ the bench's (lower) exploration settings

def test_bench_settings_keep_honest_propensities_and_still_learn_a_new_psp():
    """The bench's router (floor 0.2 %, cap 0.1 pp; evaluation.model_policies.BENCH_ROUTER_SETTINGS) explores
    far less than the serving default. Over seeds 0-19, 1 000 events each: every eligible PSP keeps
    p_first >= the floor (importance weights <= 1 / floor) and the logged propensity is the first PSP's
    p_first; a cold PSP that truly approves 95 % (the best known: 90 %) is placed first at least once in
    every seed, but wins most of the traffic within the 1 000 events in only about half of them (11 of 20
    measured; first tried after a median 143 events, 804 at worst) — the price of the low exploration,
    written up in docs/benchmarks.md. (One seed, 11, used to stand for all of them here.)"""
    from payroute.evaluation.model_policies import approval_first_config

    config = approval_first_config()
    assert 0 < config.min_propensity <= 0.01 and config.exploration_cap <= 0.002
    true = {**TRUE, "riskshield": 0.95}
    known = {k: v for k, v in TRUE.items() if k != "riskshield"}
    tried, won = [], []
    for seed in range(20):
        router = Router(CATALOG, TablePredictor(known), config, seed=seed)
        decisions = run(router, 0, 1000, np.random.default_rng(seed), true=true)
        for decision in decisions:
            assert all(r.p_first >= config.min_propensity - 1e-12 for r in decision.ranking)
            assert sum(r.p_first for r in decision.ranking) == pytest.approx(1.0, abs=1e-12)
            assert decision.propensity == decision.ranking[0].p_first
        first = [d.first for d in decisions]
        tried.append("riskshield" in first)
        won.append(first[-300:].count("riskshield") / 300 > 0.6)
    assert all(tried)
    assert sum(won) >= 8


def test_bench_settings_win_a_recovered_psp_back():
    """After a 100-event outage, the recovered best PSP regains most first places within 1 000 events
    under the bench's low exploration too (probes restore its health; the floor and Thompson draws relearn
    its residual)."""
    from payroute.evaluation.model_policies import approval_first_config

    rng = np.random.default_rng(7)
    router = Router(CATALOG, TablePredictor(TRUE), approval_first_config(), seed=7)
    run(router, 0, 300, rng)
    run(router, 300, 100, rng, failing=frozenset({"euroacq"}))
    assert router.health.is_demoted("euroacq")
    back = run(router, 400, 1000, rng)
    assert not router.health.is_demoted("euroacq")
    assert np.mean([d.first == "euroacq" for d in back[-300:]]) > 0.6


# ------------------------------------------------------------------ the batch policy

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), width=st.integers(1, 10), block=st.sampled_from([1, 2, 5, 32]))
def test_batch_policies_equal_one_decision_at_a_time(seed, n, width, block):
    """``first_place_policies`` on n padded rows = ``first_place_policy`` then ``draw_first`` row after row on
    the same stream, bit for bit: widths 1-10, demoted PSPs (subsets, probes, crowded probe mass), cold
    posteriors (exact Beta draws), budgets exhausted by the floor, three objectives' scores, the draws
    scored ``block`` rows at a time."""
    from unittest import mock

    from payroute.serving.routing import bandit
    data = np.random.default_rng(seed)
    m = data.integers(1, width + 1, size=n)
    valid = np.arange(width) < m[:, None]
    mean = np.where(valid, data.uniform(0.05, 0.95, (n, width)), 0.3)
    strength = np.where(valid, data.choice([2.0, 15.0, 40.0, 400.0], (n, width), p=[0.1, 0.1, 0.4, 0.4]), 30.0)
    healthy = data.random((n, width)) > data.choice([0.0, 0.3, 0.9], size=(n, 1))
    cost = data.uniform(0, 3, (n, width))
    value = data.uniform(10, 200, (n, 1))
    kinds = data.integers(0, 3, size=n)
    knobs = dict(samples=int(data.choice([1, 16, 64])), exploration_cap=float(data.choice([0.0, 0.001, 0.02, 0.5])),
                 min_propensity=float(data.choice([0.0, 0.002, 0.01, 0.1])), probe_rate=float(data.choice([0.02, 0.2])),
                 normal_strength=20.0)

    def score_row(approval, r, columns):
        c = cost[r, columns]
        return (approval * value[r, 0] - c, approval - 1e-3 * c, -c / np.maximum(approval, 0.05))[kinds[r]]

    def score_rows(approval, rows):
        out = np.empty(approval.shape)
        for i, r in enumerate(rows):
            out[i] = score_row(approval[i], r, slice(None))
        return out

    policy_seed = int(data.integers(2**32))
    with mock.patch.object(bandit, "SCORE_BLOCK_ROWS", block):
        batch = first_place_policies(mean, strength, healthy, valid, score_rows, np.random.default_rng(policy_seed), **knobs)
    firsts = draw_first_many(batch.probabilities, batch.uniforms)
    rng = np.random.default_rng(policy_seed)
    for r in range(n):
        k = m[r]
        alone = first_place_policy(mean[r, :k], strength[r, :k], healthy[r, :k], lambda a: score_row(a, r, slice(0, k)), rng, **knobs)
        first = draw_first(alone.probabilities, rng)
        row = batch.row(r, k)
        assert row.probabilities.tobytes() == alone.probabilities.tobytes()
        assert row.thompson.tobytes() == alone.thompson.tobytes()
        assert (row.greedy, row.exploration_weight) == (alone.greedy, alone.exploration_weight)
        assert row.approval_given_up.tobytes() == alone.approval_given_up.tobytes()
        assert row.expected_approval_given_up == alone.expected_approval_given_up
        assert int(firsts[r]) == first
        assert not batch.probabilities[r, k:].any()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.booleans())
def test_evidence_of_many_times_equals_one_at_a_time(seed, n, shared):
    """A batch reads every row's decayed evidence and shared shift at once; each row is, bit for bit, what
    the decision alone reads (rows whose segment has no cell are zero)."""
    from payroute.serving.routing.bandit import ResidualPosterior

    rng = np.random.default_rng(seed)
    names = CATALOG.psp_names
    posterior = ResidualPosterior(names, half_life_s=3600.0 * rng.uniform(0.5, 48), max_evidence=200.0,
                                  shared_max_evidence=1000.0 if shared else 0.0)
    segments = [f"S{k}|card|visa" for k in range(4)]
    start = 1.7e9
    for _ in range(int(rng.integers(0, 120))):
        posterior.update(segments[int(rng.integers(0, 3))], names[int(rng.integers(0, len(names)))],
                         bool(rng.random() < 0.7), float(rng.uniform(0.05, 0.95)), start + float(rng.uniform(0, 86_400)))
    rows = [segments[int(k)] for k in rng.integers(0, 4, n)]  # S3 never has a cell
    now = start + rng.uniform(-3_600, 200_000, n)
    evidence, residual = posterior.evidence_many(rows, now)
    shifts = posterior.shared_shift(20.0, now[:, None])
    for i, (segment, at) in enumerate(zip(rows, now.tolist())):
        one_evidence, one_residual = posterior.evidence(segment, at)
        assert evidence[i].tobytes() == np.asarray(one_evidence, dtype=np.float64).tobytes()
        assert residual[i].tobytes() == np.asarray(one_residual, dtype=np.float64).tobytes()
        one_shift = posterior.shared_shift(20.0, at)
        assert (shifts is None) == (one_shift is None)
        if shifts is not None:
            assert shifts[i].tobytes() == one_shift.tobytes()
