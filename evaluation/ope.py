"""Off-policy estimates of a candidate policy's first-attempt approval rate from logged feedback.

Every estimator reduces the log to per-round terms in one private method, ``_round_terms``, returning a
numerator and a normaliser per round; the point estimate is ``sum(numerator) / sum(normaliser)`` and the
bootstrap interval recomputes that same ratio on resampled rounds, so both always agree.

With ``w_i = π(a_i | x_i) / p_i`` (candidate over logging probability of the logged PSP), ``r_i`` the
reward and ``q̂(x, a)`` a supplied reward model:

- IPS:   numerator ``w_i r_i``, normaliser 1.
- SNIPS: numerator ``w_i r_i``, normaliser ``w_i`` (self-normalised; biased, lower variance).
- DR:    numerator ``Σ_a π(a|x_i) q̂(x_i, a) + w_i (r_i − q̂(x_i, a_i))``, normaliser 1.
- DM:    numerator ``Σ_a π(a|x_i) q̂(x_i, a)``, normaliser 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from payroute.evaluation.logged import LoggedFeedback

ROW_SUM_TOLERANCE = 1e-6
_BOOTSTRAP_CHUNK = 64


@dataclass(frozen=True)
class PolicyEstimate:
    """One estimator's answer: point value, bootstrap interval and effective sample size."""

    estimator: str
    value: float
    lower: float
    upper: float
    effective_sample_size: float
    n_rounds: int


def validate_inputs(feedback: LoggedFeedback, action_dist: np.ndarray, estimated_rewards: np.ndarray | None = None,
                    *, needs_reward_model: bool = False, alpha: float = 0.05, n_bootstrap: int = 200) -> None:
    """The one input check of every estimator; raises ``ValueError`` with a message naming the input."""
    if not isinstance(feedback, LoggedFeedback):
        raise ValueError("feedback must be a LoggedFeedback")
    shape = feedback.eligible.shape
    if not isinstance(action_dist, np.ndarray) or action_dist.shape != shape:
        raise ValueError(f"action_dist must be an array of shape (n, k) = {shape}")
    if not np.all(np.isfinite(action_dist)) or action_dist.min() < 0:
        raise ValueError("action_dist must be finite and non-negative")
    if np.abs(action_dist.sum(axis=1) - 1).max() > ROW_SUM_TOLERANCE:
        raise ValueError("action_dist rows must sum to 1")
    if (action_dist[~feedback.eligible] > 0).any():
        raise ValueError("action_dist puts probability on an ineligible PSP")
    if estimated_rewards is None:
        if needs_reward_model:
            raise ValueError("estimated_rewards are required by this estimator")
    else:
        if not isinstance(estimated_rewards, np.ndarray) or estimated_rewards.shape != shape:
            raise ValueError(f"estimated_rewards must be an array of shape (n, k) = {shape}")
        if not np.all(np.isfinite(estimated_rewards)) or estimated_rewards.min() < 0 or estimated_rewards.max() > 1:
            raise ValueError("estimated_rewards must lie in [0, 1]")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    if n_bootstrap < 10:
        raise ValueError("n_bootstrap must be at least 10")


def importance_weights(feedback: LoggedFeedback, action_dist: np.ndarray) -> np.ndarray:
    """``w_i = π(a_i | x_i) / p_i``, shape (n,)."""
    rows = np.arange(feedback.n_rounds)
    return action_dist[rows, feedback.actions] / feedback.propensities


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` (n when the policies agree; 0 with no overlap)."""
    total = float(np.sum(weights ** 2))
    return 0.0 if total == 0 else float(np.sum(weights)) ** 2 / total


class Estimator:
    """Base of the estimators: subclasses define only ``_round_terms``."""

    name: ClassVar[str] = ""
    needs_reward_model: ClassVar[bool] = False

    def _round_terms(self, feedback: LoggedFeedback, action_dist: np.ndarray,
                     estimated_rewards: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def estimate(self, feedback: LoggedFeedback, action_dist: np.ndarray,
                 estimated_rewards: np.ndarray | None = None) -> float:
        """Point estimate of the candidate's mean reward."""
        validate_inputs(feedback, action_dist, estimated_rewards, needs_reward_model=self.needs_reward_model)
        numerator, normaliser = self._round_terms(feedback, action_dist, estimated_rewards)
        return _ratio(numerator, normaliser)

    def interval(self, feedback: LoggedFeedback, action_dist: np.ndarray, estimated_rewards: np.ndarray | None = None,
                 *, rng: np.random.Generator, alpha: float = 0.05, n_bootstrap: int = 200) -> tuple[float, float]:
        """Percentile bootstrap ``(lower, upper)`` at level ``1 − alpha``, resampling rounds with ``rng``."""
        validate_inputs(feedback, action_dist, estimated_rewards, needs_reward_model=self.needs_reward_model,
                        alpha=alpha, n_bootstrap=n_bootstrap)
        numerator, normaliser = self._round_terms(feedback, action_dist, estimated_rewards)
        replicates = _bootstrap_ratios(numerator, normaliser, rng, n_bootstrap)
        lower, upper = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
        return float(lower), float(upper)

    def evaluate(self, feedback: LoggedFeedback, action_dist: np.ndarray, estimated_rewards: np.ndarray | None = None,
                 *, rng: np.random.Generator, alpha: float = 0.05, n_bootstrap: int = 200) -> PolicyEstimate:
        """Point estimate, interval and effective sample size together."""
        value = self.estimate(feedback, action_dist, estimated_rewards)
        lower, upper = self.interval(feedback, action_dist, estimated_rewards, rng=rng, alpha=alpha,
                                     n_bootstrap=n_bootstrap)
        ess = effective_sample_size(importance_weights(feedback, action_dist))
        return PolicyEstimate(self.name, value, lower, upper, ess, feedback.n_rounds)


class InverseProbabilityWeighting(Estimator):
    name = "ips"

    def _round_terms(self, feedback, action_dist, estimated_rewards):
        weights = importance_weights(feedback, action_dist)
        return weights * feedback.rewards, np.ones_like(weights)


class SelfNormalizedInverseProbabilityWeighting(Estimator):
    name = "snips"

    def _round_terms(self, feedback, action_dist, estimated_rewards):
        weights = importance_weights(feedback, action_dist)
        return weights * feedback.rewards, weights


class DirectMethod(Estimator):
    name = "dm"
    needs_reward_model = True

    def _round_terms(self, feedback, action_dist, estimated_rewards):
        baseline = np.sum(action_dist * estimated_rewards, axis=1)
        return baseline, np.ones_like(baseline)


class DoublyRobust(Estimator):
    name = "dr"
    needs_reward_model = True

    def _round_terms(self, feedback, action_dist, estimated_rewards):
        weights = importance_weights(feedback, action_dist)
        baseline = np.sum(action_dist * estimated_rewards, axis=1)
        logged_q = estimated_rewards[np.arange(feedback.n_rounds), feedback.actions]
        return baseline + weights * (feedback.rewards - logged_q), np.ones_like(weights)


ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting, DirectMethod, DoublyRobust)
}


def _ratio(numerator: np.ndarray, normaliser: np.ndarray) -> float:
    total = float(np.sum(normaliser))
    return float("nan") if total == 0 else float(np.sum(numerator)) / total


def _bootstrap_ratios(numerator: np.ndarray, normaliser: np.ndarray, rng: np.random.Generator,
                      n_bootstrap: int) -> np.ndarray:
    """``n_bootstrap`` resampled ratios, drawn in chunks so memory stays ``O(chunk × n)``."""
    n = len(numerator)
    out = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_bootstrap - start)
        index = rng.integers(0, n, size=(size, n))
        num, den = numerator[index].sum(axis=1), normaliser[index].sum(axis=1)
        out[start:start + size] = np.divide(num, den, out=np.full(size, np.nan), where=den != 0)
    return out
