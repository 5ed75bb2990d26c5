"""OPE estimators: unbiasedness on a synthetic log with a known value, interval coverage, input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from payroute.evaluation.logged import LoggedFeedback
from payroute.evaluation.ope import (
    ESTIMATORS,
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedInverseProbabilityWeighting,
    effective_sample_size,
    validate_inputs,
)

N_CONTEXTS, N_PSPS, N_REPLICATES = 1_000, 4, 400
PSPS = tuple(f"psp{j}" for j in range(N_PSPS))


@dataclasses.dataclass(frozen=True)
class SyntheticWorld:
    eligible: np.ndarray  # (n, k)
    approval: np.ndarray  # (n, k) true approval probabilities
    logging: np.ndarray  # (n, k) logging policy
    candidate: np.ndarray  # (n, k) candidate policy (greedy on the truth: far from logging)
    reward_model: np.ndarray  # (n, k) a deliberately biased reward model

    @property
    def true_value(self) -> float:
        return float(np.mean(np.sum(self.candidate * self.approval, axis=1)))

    def draw(self, rng: np.random.Generator) -> LoggedFeedback:
        cumulative = self.logging.cumsum(axis=1)
        actions = (rng.random((len(cumulative), 1)) > cumulative).sum(axis=1)
        actions = np.minimum(actions, N_PSPS - 1)
        rows = np.arange(len(actions))
        rewards = (rng.random(len(actions)) < self.approval[rows, actions]).astype(float)
        return LoggedFeedback(PSPS, actions, rewards, self.logging[rows, actions], self.eligible)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    rng = np.random.default_rng(20261101)
    eligible = rng.random((N_CONTEXTS, N_PSPS)) < 0.7
    eligible[:, 0] = True
    approval = np.where(eligible, rng.uniform(0.5, 0.95, (N_CONTEXTS, N_PSPS)), 0.0)
    # Logging: 10 % uniform over eligible PSPs + 90 % softmax on a noisy score (as the simulator logs).
    scores = np.where(eligible, rng.normal(size=(N_CONTEXTS, N_PSPS)), -np.inf)
    softmax = np.exp(scores - scores.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    uniform = eligible / eligible.sum(axis=1, keepdims=True)
    logging = 0.1 * uniform + 0.9 * softmax
    candidate = np.zeros_like(approval)
    candidate[np.arange(N_CONTEXTS), np.argmax(approval, axis=1)] = 1.0
    reward_model = np.clip(approval - 0.1, 0, 1) * eligible
    return SyntheticWorld(eligible, approval, logging, candidate, reward_model)


@pytest.fixture(scope="module")
def replicate_estimates(world: SyntheticWorld) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    logs = [world.draw(rng) for _ in range(N_REPLICATES)]
    return {
        name: np.array([cls().estimate(log, world.candidate, world.reward_model) for log in logs])
        for name, cls in ESTIMATORS.items()
    }


# Unbiasedness: the mean of 400 replicate estimates (seed 7) is within 4 standard errors of the true
# value. DM with a model biased by -0.1 must fail that same check, so the check can fail.
@pytest.mark.parametrize(
    ("estimator", "unbiased"),
    [("ips", True), ("snips", True), ("dr", True), ("dm", False)],
)
def test_estimator_is_unbiased_on_known_value(world, replicate_estimates, estimator, unbiased):
    values = replicate_estimates[estimator]
    standard_error = max(values.std(ddof=1) / np.sqrt(len(values)), 1e-4)
    z = abs(values.mean() - world.true_value) / standard_error
    assert bool(z < 4) == unbiased, (estimator, values.mean(), world.true_value, z)


def test_doubly_robust_has_lower_variance_than_ips(replicate_estimates):
    assert replicate_estimates["dr"].std() < replicate_estimates["ips"].std()


# Coverage of the 95 % percentile bootstrap over 60 logs (seed 11): at least 85 % (binomial sd ~3 %).
@pytest.mark.parametrize("estimator", ["ips", "snips", "dr"])
def test_bootstrap_interval_covers_true_value(world, estimator):
    rng = np.random.default_rng(11)
    cls = ESTIMATORS[estimator]
    covered = []
    for _ in range(60):
        result = cls().evaluate(world.draw(rng), world.candidate, world.reward_model, rng=rng, n_bootstrap=200)
        assert result.lower <= result.value <= result.upper
        covered.append(result.lower <= world.true_value <= result.upper)
    assert np.mean(covered) >= 0.85


def test_interval_is_reproducible_with_one_seed(world):
    log = world.draw(np.random.default_rng(3))
    first = DoublyRobust().interval(log, world.candidate, world.reward_model, rng=np.random.default_rng(5))
    second = DoublyRobust().interval(log, world.candidate, world.reward_model, rng=np.random.default_rng(5))
    assert first == second


@pytest.mark.parametrize(
    ("weights", "expected"),
    [([1.0, 1.0, 1.0, 1.0], 4.0), ([2.0, 0.0, 0.0, 0.0], 1.0), ([1.0, 1.0, 2.0, 0.0], 16 / 6), ([0.0, 0.0], 0.0)],
)
def test_effective_sample_size(weights, expected):
    assert effective_sample_size(np.array(weights)) == pytest.approx(expected)


def test_logging_policy_evaluated_on_itself_has_full_ess_and_equals_mean_reward(world):
    log = world.draw(np.random.default_rng(1))
    result = InverseProbabilityWeighting().evaluate(log, world.logging, rng=np.random.default_rng(1))
    assert result.effective_sample_size == pytest.approx(N_CONTEXTS)
    assert result.value == pytest.approx(log.rewards.mean())
    assert SelfNormalizedInverseProbabilityWeighting().estimate(log, world.logging) == pytest.approx(log.rewards.mean())


def _bad(world, **changes):
    log = world.draw(np.random.default_rng(0))
    inputs = {"feedback": log, "action_dist": world.candidate, "estimated_rewards": world.reward_model}
    inputs.update(changes)
    return inputs


def _off_eligibility(world):
    """The candidate, except that one row puts all its mass on a PSP that row may not use."""
    row, psp = np.argwhere(~world.eligible)[0]
    dist = world.candidate.copy()
    dist[row] = 0.0
    dist[row, psp] = 1.0
    return dist


BAD_INPUTS = [
    ("not feedback", lambda w: _bad(w, feedback={"actions": []}), "feedback must be a LoggedFeedback"),
    ("wrong shape", lambda w: _bad(w, action_dist=w.candidate[:, :2]), "action_dist must be an array of shape"),
    ("negative", lambda w: _bad(w, action_dist=-w.candidate), "action_dist must be finite and non-negative"),
    ("nan", lambda w: _bad(w, action_dist=w.candidate * np.nan), "action_dist must be finite and non-negative"),
    ("rows", lambda w: _bad(w, action_dist=w.candidate * 0.5), "action_dist rows must sum to 1"),
    ("ineligible", lambda w: _bad(w, action_dist=_off_eligibility(w)), "action_dist puts probability on an ineligible PSP"),
    ("model shape", lambda w: _bad(w, estimated_rewards=w.reward_model[:10]), "estimated_rewards must be an array of shape"),
    ("model range", lambda w: _bad(w, estimated_rewards=w.reward_model + 1), "estimated_rewards must lie in [0, 1]"),
    ("no model", lambda w: {**_bad(w, estimated_rewards=None), "needs_reward_model": True},
     "estimated_rewards are required by this estimator"),
    ("alpha", lambda w: {**_bad(w), "alpha": 1.5}, "alpha must lie in (0, 1)"),
    ("bootstrap", lambda w: {**_bad(w), "n_bootstrap": 3}, "n_bootstrap must be at least 10"),
]


@pytest.mark.parametrize(("case", "inputs", "message"), BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_validate_inputs_refuses(world, case, inputs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate_inputs(**inputs(world))


def test_direct_method_requires_reward_model(world):
    with pytest.raises(ValueError, match="estimated_rewards are required"):
        DirectMethod().estimate(world.draw(np.random.default_rng(0)), world.candidate)


BAD_FEEDBACK = [
    ("lengths", dict(rewards=np.ones(2)), "actions, rewards and propensities must be 1-d arrays of one length"),
    ("eligible", dict(eligible=np.ones((3, 2), bool)), r"eligible must have shape \(n, k\) = \(3, 3\)"),
    ("action", dict(actions=np.array([0, 1, 3])), "actions must be integer indices into psps"),
    ("float action", dict(actions=np.array([0.0, 1.0, 2.0])), "actions must be integer indices into psps"),
    ("propensity", dict(propensities=np.array([0.5, 0.0, 0.5])), r"propensities must lie in \(0, 1\]"),
    ("reward", dict(rewards=np.array([0.0, 2.0, 1.0])), r"rewards must lie in \[0, 1\]"),
    ("not eligible", dict(eligible=np.eye(3, dtype=bool)[::-1]), "a logged action is not eligible"),
]


@pytest.mark.parametrize(("case", "changes", "message"), BAD_FEEDBACK, ids=[row[0] for row in BAD_FEEDBACK])
def test_logged_feedback_refuses(case, changes, message):
    fields = dict(psps=("a", "b", "c"), actions=np.array([0, 1, 2]), rewards=np.array([1.0, 0.0, 1.0]),
                  propensities=np.array([0.5, 0.5, 0.5]), eligible=np.ones((3, 3), bool))
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        LoggedFeedback(**fields)
