"""Benchmark harness: common random numbers, determinism, the cascade, rankings, metrics."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from payroute.evaluation.adaptive import DiscountedThompson, SuccessRateRouting
from payroute.evaluation.bench import ALL_POLICIES, BASELINES, baseline_policy
from payroute.evaluation.harness import eligible_only, play_cascade, run_policy
from payroute.evaluation.metrics import _first_below, headroom_captured, mean_interval
from payroute.evaluation.policies import AttemptFeedback, DecisionBatch, rank_by_scores
from payroute.evaluation.stream import APPROVED, DECLINED, ERROR, Stream, build_stream
from payroute.simulator.config import SimulationConfig
from payroute.simulator.history import simulate_history

SEEDS = (1, 2, 3)
N_STREAM = 3_000


@pytest.fixture(scope="module")
def history():
    config = SimulationConfig(n_transactions=6_000, days=7, incidents=(), drift_strength=0.0, seasonality_strength=0.0)
    return simulate_history(config, seed=7)


@pytest.fixture(scope="module")
def streams(history):
    return {seed: build_stream(history.world, N_STREAM, history.world.config.end, 1.0, seed) for seed in SEEDS}


@pytest.fixture(scope="module")
def records(history, streams):
    return {(name, seed): run_policy(baseline_policy(name, streams[seed], history, seed), streams[seed])
            for name in (*BASELINES, "oracle") for seed in SEEDS}


def test_stream_is_reproducible(history, streams):
    again = build_stream(history.world, N_STREAM, history.world.config.end, 1.0, SEEDS[0])
    first = streams[SEEDS[0]]
    for name in ("eligible", "approval", "status", "soft", "cost_eur"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))


@pytest.mark.parametrize("name", ["uniform", "success_rate", "thompson", "rules"])
def test_policy_run_twice_with_one_seed_is_identical(history, streams, records, name):
    again = run_policy(baseline_policy(name, streams[1], history, 1), streams[1])
    for field in dataclasses.fields(again):
        np.testing.assert_array_equal(getattr(again, field.name), getattr(records[(name, 1)], field.name))


@pytest.mark.parametrize("name", ["uniform", "static", "rules", "success_rate", "thompson"])
def test_same_choice_meets_same_luck(records, name):
    """Common random numbers: where a policy and the oracle pick the same first PSP, the outcome agrees."""
    for seed in SEEDS:
        policy, oracle = records[(name, seed)], records[("oracle", seed)]
        same = policy.first_psp == oracle.first_psp
        assert same.sum() > 100
        np.testing.assert_array_equal(policy.first_approved[same], oracle.first_approved[same])


@pytest.mark.parametrize("name", ["uniform", "static", "rules", "success_rate", "thompson"])
def test_oracle_never_loses_in_expectation(records, name):
    """Expected approval of the oracle's choice is the row maximum; realised approval over 3 seeds of 3,000
    transactions is no worse than the policy's minus 0.5 pp (sd of the paired difference ~0.2 pp)."""
    for seed in SEEDS:
        assert np.all(records[("oracle", seed)].first_p >= records[(name, seed)].first_p - 1e-12)
    oracle = np.mean([records[("oracle", s)].first_approved.mean() for s in SEEDS])
    policy = np.mean([records[(name, s)].first_approved.mean() for s in SEEDS])
    assert oracle >= policy - 0.005


def test_learning_baselines_beat_uniform_and_static(records):
    """Sanity of the ordering on a stationary world (3 seeds): adaptive > static > uniform, in expectation."""
    expected = {name: np.mean([records[(name, s)].first_p.mean() for s in SEEDS]) for name in (*BASELINES, "oracle")}
    assert expected["uniform"] < expected["static"] < expected["rules"] < expected["oracle"]
    assert expected["static"] < expected["success_rate"] and expected["static"] < expected["thompson"]


# ---------------------------------------------------------------- a hand-made stream for the cascade


def _tiny_stream(status: np.ndarray, soft: np.ndarray) -> Stream:
    """3 PSPs, ``status``/``soft`` of shape (3 attempts, n, 3); cost = 1 EUR per attempt."""
    n = status.shape[1]
    transactions = pd.DataFrame({"country": ["DE"] * n, "payment_method": ["card"] * n})
    return Stream(transactions, ("a", "b", "c"), np.arange(3), np.ones((n, 3), bool), np.full((n, 3), 0.5),
                  status.astype(np.int8), soft, np.ones(status.shape), np.full(status.shape, -1, np.int8),
                  np.ones(status.shape, np.float32), np.full(n, 100.0), np.zeros(n),
                  np.array(["DE|card|visa"] * n, dtype=object), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


# Each case: outcome of trying a, b, c (same at every attempt), soft flags, then approved, attempts, psps tried.
CASCADES = [
    ("approved first", [APPROVED, APPROVED, APPROVED], [0, 0, 0], True, 1, [0]),
    ("soft then approved", [DECLINED, APPROVED, APPROVED], [1, 0, 0], True, 2, [0, 1]),
    ("error, soft, approved", [ERROR, DECLINED, APPROVED], [1, 1, 0], True, 3, [0, 1, 2]),
    ("customer decline stops", [DECLINED, APPROVED, APPROVED], [0, 0, 0], False, 1, [0]),
    ("all soft", [DECLINED, DECLINED, DECLINED], [1, 1, 1], False, 3, [0, 1, 2]),
]


@pytest.mark.parametrize(("case", "outcomes", "soft", "approved", "attempts", "tried"), CASCADES,
                         ids=[c[0] for c in CASCADES])
def test_cascade(case, outcomes, soft, approved, attempts, tried):
    status = np.broadcast_to(np.array(outcomes)[None, None, :], (3, 1, 3)).copy()
    soft_flags = np.broadcast_to(np.array(soft, bool)[None, None, :], (3, 1, 3)).copy()
    stream = _tiny_stream(status, soft_flags)
    feedback, ok, made, cost = play_cascade(stream, np.array([0]), np.array([[0, 1, 2]]))
    assert (bool(ok[0]), int(made[0]), feedback.psps.tolist(), float(cost[0])) == (approved, attempts, tried, attempts)
    assert feedback.attempts.tolist() == list(range(1, attempts + 1))


def test_cascade_stops_at_padding():
    status = np.full((3, 1, 3), DECLINED)
    stream = _tiny_stream(status, np.ones((3, 1, 3), bool))
    feedback, ok, made, _ = play_cascade(stream, np.array([0]), np.array([[2, -1, -1]]))
    assert (feedback.psps.tolist(), int(made[0]), bool(ok[0])) == ([2], 1, False)


@pytest.mark.parametrize(
    ("rankings", "eligible", "expected"),
    [([[2, 0, 1]], [[1, 1, 1]], [[2, 0, 1]]), ([[2, 0, 1]], [[1, 1, 0]], [[0, 1, -1]]),
     ([[2, 0, -1]], [[0, 1, 1]], [[2, -1, -1]]), ([[1, 2, 0]], [[1, 0, 1]], [[2, 0, -1]])],
)
def test_eligible_only_drops_psps_the_stream_forbids(rankings, eligible, expected):
    assert eligible_only(np.array(rankings), np.array(eligible, bool)).tolist() == expected


RANKINGS = [
    ("by score", [[0.1, 0.9, 0.5]], [[1, 1, 1]], None, [[1, 2, 0]]),
    ("ineligible padded", [[0.1, 0.9, 0.5]], [[1, 0, 1]], None, [[2, 0, -1]]),
    ("ties by column", [[0.5, 0.5, 0.5]], [[1, 1, 1]], None, [[0, 1, 2]]),
    ("ties by tiebreak", [[0.5, 0.5, 0.1]], [[1, 1, 1]], [5, 1, 0], [[1, 0, 2]]),
]


@pytest.mark.parametrize(("case", "scores", "eligible", "tiebreak", "expected"), RANKINGS, ids=[r[0] for r in RANKINGS])
def test_rank_by_scores(case, scores, eligible, tiebreak, expected):
    ranking = rank_by_scores(np.array(scores), np.array(eligible, bool), None if tiebreak is None else np.array(tiebreak))
    assert ranking.tolist() == expected


def _batch(n: int, minutes: float = 0.0) -> DecisionBatch:
    return DecisionBatch(np.arange(n), pd.DataFrame(index=range(n)), np.ones((n, 3), bool),
                         np.array(["s"] * n, dtype=object), np.full(n, minutes))


def _feedback(psp: int, approved: bool, n: int) -> AttemptFeedback:
    status = np.full(n, APPROVED if approved else DECLINED)
    return AttemptFeedback(np.arange(n), np.full(n, psp), np.ones(n, int), np.full(n, approved), np.ones(n, bool),
                           status, np.full(n, -1), np.ones(n))


@pytest.mark.parametrize("policy_cls", [SuccessRateRouting, DiscountedThompson])
def test_adaptive_policy_moves_off_a_failing_psp(policy_cls):
    """After PSP 0 approved 40 of 40 and then failed 30 in a row, the policy ranks it last, greedily."""
    policy = policy_cls(("a", "b", "c"), seed=0)
    policy.update(_batch(40), _feedback(0, True, 40))
    policy.update(_batch(20), _feedback(1, True, 20))
    policy.update(_batch(20), _feedback(1, False, 2))
    assert policy.select(_batch(1, 1.0)).exploit[0] == 0
    policy.update(_batch(30, 2.0), _feedback(0, False, 30))
    assert policy.select(_batch(1, 3.0)).exploit[0] != 0


def test_success_rate_propensities_match_its_exploration():
    policy = SuccessRateRouting(("a", "b", "c"), epsilon=0.3, seed=0)
    policy.update(_batch(30), _feedback(2, True, 30))
    decisions = policy.select(_batch(2_000))
    greedy = decisions.rankings[:, 0] == 2
    assert decisions.propensities[greedy] == pytest.approx(0.7 + 0.1)
    assert decisions.propensities[~greedy] == pytest.approx(0.1)
    assert greedy.mean() == pytest.approx(0.8, abs=0.03)  # seed 0, binomial sd 0.009


@pytest.mark.parametrize(
    ("chosen", "threshold", "above", "expected"),
    [([1] * 30 + [0] * 30, 0.1, False, 29), ([0] * 40, 0.1, False, 0), ([1] * 40, 0.1, False, None),
     ([0] * 30 + [1] * 30, 0.5, True, 20)],
)
def test_reaction_window(chosen, threshold, above, expected):
    """Forward windows of 20: at 29 one chosen of 20 is 5 % < 10 % (at 28, two is 10 %, not below)."""
    assert _first_below(np.array(chosen, bool), threshold, above) == expected


def test_headroom_and_interval():
    assert headroom_captured(0.83, 0.80, 0.84) == pytest.approx(0.75)
    assert np.isnan(headroom_captured(0.8, 0.8, 0.8))
    mean, lower, upper = mean_interval([1.0, 2.0, 3.0])
    assert (mean, round(upper - mean, 3)) == (2.0, 2.484)  # t(0.975, 2) = 4.303, sd 1, sqrt(3)


def test_every_policy_name_is_known():
    assert set(BASELINES) < set(ALL_POLICIES)


def test_scenarios_that_change_only_the_bench_window_share_one_history():
    """The model is trained once per distinct history: stationary, outage and partial outage change only
    the bench window, so their histories (and so their models) are identical; drift changes the past."""
    from payroute.catalog import load_catalog
    from payroute.evaluation.bench import BenchSettings, scenario_world
    from payroute.evaluation.model_policies import history_fingerprint
    from payroute.evaluation.scenarios import SCENARIOS, Horizon

    settings = BenchSettings(horizon=Horizon(history_days=7.0, history_transactions=4_000))
    catalog = load_catalog()
    fingerprint = {name: history_fingerprint(scenario_world(SCENARIOS[name], settings, catalog))
                   for name in ("stationary", "outage", "partial_outage", "drift")}
    assert fingerprint["stationary"] == fingerprint["outage"] == fingerprint["partial_outage"]
    assert fingerprint["drift"] != fingerprint["stationary"]


def test_drift_keeps_a_short_history_at_the_same_traffic_per_day():
    """The simulator's drift is linear from the world's start: the drift scenario keeps 14 days."""
    from payroute.evaluation.scenarios import SCENARIOS, Horizon

    default = Horizon()
    drift = SCENARIOS["drift"].horizon(default)
    assert drift.history_days == 14.0
    assert drift.history_transactions / drift.history_days == pytest.approx(
        default.history_transactions / default.history_days, rel=1e-3)
    assert SCENARIOS["outage"].horizon(default) == default
