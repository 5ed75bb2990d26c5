"""Adaptive baselines without the model: success-rate routing and discounted Thompson sampling,
both keeping statistics per PSP × segment (``country|method|network``) with a PSP-wide fallback.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from payroute.evaluation.policies import AttemptFeedback, Decisions, Policy, rank_by_scores


class SegmentIndex:
    """Maps segment keys to dense integer codes, growing as new segments appear."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, keys: np.ndarray) -> np.ndarray:
        return np.array([self.codes.setdefault(key, len(self.codes)) for key in keys], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.codes)


class RingWindows:
    """The last ``size`` outcomes of each (key, PSP) pair, as a sliding window."""

    def __init__(self, n_psps: int, size: int, capacity: int = 64) -> None:
        self.size = size
        self.values = np.zeros((capacity, n_psps, size))
        self.counts = np.zeros((capacity, n_psps), dtype=np.int64)

    def _grow(self, needed: int) -> None:
        capacity = len(self.counts)
        if needed <= capacity:
            return
        extra = max(needed, 2 * capacity) - capacity
        self.values = np.concatenate([self.values, np.zeros((extra, *self.values.shape[1:]))])
        self.counts = np.concatenate([self.counts, np.zeros((extra, self.counts.shape[1]), dtype=np.int64)])

    def push(self, keys: np.ndarray, psps: np.ndarray, outcomes: np.ndarray) -> None:
        if len(keys):
            self._grow(int(keys.max()) + 1)
        for key, psp, outcome in zip(keys, psps, outcomes):
            self.values[key, psp, self.counts[key, psp] % self.size] = outcome
            self.counts[key, psp] += 1

    def stats(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(successes, observations) in the window, each of shape (len(keys), n_psps)."""
        self._grow(int(keys.max()) + 1 if len(keys) else 0)
        observed = np.minimum(self.counts[keys], self.size)
        return self.values[keys].sum(axis=-1), observed


class SuccessRateRouting(Policy):
    """Success-rate routing as open-source smart routers do it (Juspay's Decision Engine style).

    Score = success rate over a sliding window per PSP × segment, shrunk toward the PSP's global window
    when the segment has few observations. With probability ``epsilon`` a uniformly random eligible PSP
    goes first. Elimination: when the last ``elimination_window`` outcomes of a PSP (in the segment, or
    anywhere) succeed at less than ``elimination_ratio`` × its longer-window rate, it is ranked last.
    """

    name = "success_rate"

    def __init__(self, psps: Sequence[str], *, window: int = 200, global_window: int = 1000,
                 prior_strength: float = 20.0, epsilon: float = 0.05, elimination_window: int = 10,
                 elimination_ratio: float = 0.5, seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.window, self.global_window, self.prior_strength = window, global_window, prior_strength
        self.epsilon, self.elimination_window, self.elimination_ratio = epsilon, elimination_window, elimination_ratio
        k = len(self.psps)
        self.segments = SegmentIndex()
        self.segment_long = RingWindows(k, window)
        self.segment_short = RingWindows(k, elimination_window)
        self.global_long = RingWindows(k, global_window, capacity=1)
        self.global_short = RingWindows(k, elimination_window, capacity=1)

    def _rates(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrunk success rates (n, k) and the elimination mask (n, k)."""
        zero = np.zeros(len(codes), dtype=np.int64)
        g_success, g_seen = self.global_long.stats(zero)
        global_rate = (g_success + 0.5) / (g_seen + 1.0)
        s_success, s_seen = self.segment_long.stats(codes)
        rates = (s_success + self.prior_strength * global_rate) / (s_seen + self.prior_strength)
        eliminated = np.zeros_like(rates, dtype=bool)
        for short, long_rate in ((self.segment_short, rates), (self.global_short, global_rate)):
            keys = codes if short is self.segment_short else zero
            success, seen = short.stats(keys)
            full = seen >= self.elimination_window
            eliminated |= full & (success / np.maximum(seen, 1) < self.elimination_ratio * long_rate)
        return rates, eliminated

    def select(self, batch):
        codes = self.segments.encode(batch.segments)
        rates, eliminated = self._rates(codes)
        scores = np.where(eliminated, rates - 2.0, rates)
        greedy = rank_by_scores(scores, batch.eligible)
        explore = self.rng.random(batch.size) < self.epsilon
        shuffled = rank_by_scores(self.rng.random(batch.eligible.shape), batch.eligible)
        rankings = np.where(explore[:, None], shuffled, greedy)
        n_eligible = batch.eligible.sum(axis=1)
        chosen_is_greedy = rankings[:, 0] == greedy[:, 0]
        propensities = self.epsilon / n_eligible + (1 - self.epsilon) * chosen_is_greedy
        return Decisions(rankings, propensities, greedy[:, 0].copy())

    def update(self, batch, feedback: AttemptFeedback):
        keep = feedback.informative
        codes = self.segments.encode(batch.segments[feedback.rows[keep]])
        psps, outcomes = feedback.psps[keep], feedback.approved[keep].astype(float)
        zero = np.zeros(len(codes), dtype=np.int64)
        self.segment_long.push(codes, psps, outcomes)
        self.segment_short.push(codes, psps, outcomes)
        self.global_long.push(zero, psps, outcomes)
        self.global_short.push(zero, psps, outcomes)


class DiscountedThompson(Policy):
    """Thompson sampling on Beta posteriors per PSP × segment, discounted with a half-life in minutes.

    The segment posterior borrows ``prior_strength`` pseudo-observations from the PSP's global
    (equally discounted) rate, so a new segment starts from what the PSP does elsewhere.
    """

    name = "thompson"

    def __init__(self, psps: Sequence[str], *, half_life_minutes: float = 360.0, prior_strength: float = 10.0,
                 propensity_samples: int = 64, seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.half_life_minutes = half_life_minutes
        self.prior_strength = prior_strength
        self.propensity_samples = propensity_samples
        k = len(self.psps)
        self.segments = SegmentIndex()
        # Counts are stored scaled by 2^(t / half-life) (t in minutes since the stream started), so decay
        # is implicit and exact; fine for horizons below ~1000 half-lives.
        self.segment_counts = np.zeros((64, k, 2))
        self.global_counts = np.zeros((k, 2))

    def _scale(self, minutes: np.ndarray | float) -> np.ndarray:
        return np.exp2(np.asarray(minutes) / self.half_life_minutes)

    def _ensure_capacity(self) -> None:
        if len(self.segments) > len(self.segment_counts):
            extra = np.zeros((max(len(self.segments), 2 * len(self.segment_counts)) - len(self.segment_counts),
                              *self.segment_counts.shape[1:]))
            self.segment_counts = np.concatenate([self.segment_counts, extra])

    def _posteriors(self, codes: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_capacity()
        decay = 1.0 / self._scale(now)
        segment = self.segment_counts[codes] * decay
        totals = self.global_counts * decay
        global_rate = (totals[:, 0] + 1.0) / (totals.sum(axis=1) + 2.0)
        alpha = segment[..., 0] + self.prior_strength * global_rate + 0.5
        beta = segment[..., 1] + self.prior_strength * (1 - global_rate) + 0.5
        return alpha, beta

    def select(self, batch):
        codes = self.segments.encode(batch.segments)
        alpha, beta = self._posteriors(codes, float(batch.minutes.max()))
        rankings = rank_by_scores(self.rng.beta(alpha, beta), batch.eligible)
        exploit = rank_by_scores(alpha / (alpha + beta), batch.eligible)[:, 0]
        draws = self.rng.beta(alpha, beta, size=(self.propensity_samples, *alpha.shape))
        winners = np.where(batch.eligible, draws, -np.inf).argmax(axis=-1)
        propensities = (winners == rankings[:, 0]).mean(axis=0)
        propensities = np.maximum(propensities, 1.0 / (self.propensity_samples + 1))
        return Decisions(rankings, propensities, exploit)

    def update(self, batch, feedback: AttemptFeedback):
        keep = feedback.informative
        codes = self.segments.encode(batch.segments[feedback.rows[keep]])
        self._ensure_capacity()
        weights = self._scale(batch.minutes[feedback.rows[keep]])
        psps, approved = feedback.psps[keep], feedback.approved[keep]
        column = np.where(approved, 0, 1)
        np.add.at(self.segment_counts, (codes, psps, column), weights)
        np.add.at(self.global_counts, (psps, column), weights)
