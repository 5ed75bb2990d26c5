"""Routing policies for the benchmark: one interface (select, update), a seeded RNG each, and the
non-adaptive baselines (uniform random, static priority, per-country-and-method rules, the oracle,
a model used greedily).

A policy ranks the eligible PSPs of a batch of transactions; the harness tries them in that order (the
cascade) and hands the attempt outcomes back through :meth:`Policy.update`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class DecisionBatch:
    """``n`` transactions to route now.

    rows : int array (n,)           positions in the benchmark stream (the oracle looks truth up by them)
    transactions : DataFrame        n rows, contract columns plus ``amount_eur``
    eligible : bool array (n, k)    catalogue eligibility (and PSP availability) per PSP
    segments : object array (n,)    segment key ``country|method|network`` shared by segment policies
    minutes : float array (n,)      minutes since the stream started (for time-discounted statistics)
    """

    rows: np.ndarray
    transactions: pd.DataFrame
    eligible: np.ndarray
    segments: np.ndarray
    minutes: np.ndarray

    @property
    def size(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Decisions:
    """A policy's answer for a batch.

    rankings : int array (n, k)      PSP indices in the order to try them; ``-1`` pads after the eligible ones
    propensities : float array (n,)  probability the policy gave ``rankings[:, 0]`` when it decided
    exploit : int array (n,)         the PSP it would have put first without exploring (cost of exploration)
    """

    rankings: np.ndarray
    propensities: np.ndarray
    exploit: np.ndarray


@dataclass(frozen=True)
class AttemptFeedback:
    """Outcomes of the ``m`` attempts made for a batch (first attempts and cascade retries).

    rows : int array (m,)            index into the batch (not the stream)
    psps : int array (m,)            PSP index tried
    attempts : int array (m,)        attempt number (1 = first)
    approved : bool array (m,)
    informative : bool array (m,)    approved, or failed for a reason that blames the PSP (soft decline,
                                     error, timeout); customer and hard declines say nothing about the PSP
    status, reason : int arrays (m,) codes into ``stream.STATUSES`` / ``stream.REASONS`` (-1: none)
    latency_ms : float array (m,)
    """

    rows: np.ndarray
    psps: np.ndarray
    attempts: np.ndarray
    approved: np.ndarray
    informative: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    latency_ms: np.ndarray


class Policy:
    """Base policy: ``select`` ranks, ``update`` learns (a no-op for static policies)."""

    name: str = "policy"

    def __init__(self, psps: Sequence[str], *, seed: int = 0) -> None:
        self.psps = tuple(psps)
        self.rng = np.random.default_rng(seed)

    def select(self, batch: DecisionBatch) -> Decisions:
        raise NotImplementedError

    def update(self, batch: DecisionBatch, feedback: AttemptFeedback) -> None:
        return None


def rank_by_scores(scores: np.ndarray, eligible: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """PSP indices by descending score, eligible first, ``-1`` for ineligible slots; shape (n, k).

    ``tiebreak`` (k,) orders equal scores (lower first); by default the column order.
    """
    n, k = scores.shape
    tiebreak = np.arange(k) if tiebreak is None else np.asarray(tiebreak)
    keyed = np.where(eligible, scores, -np.inf)
    # lexsort sorts by the last key first: score descending, then tiebreak ascending.
    order = np.lexsort((np.broadcast_to(tiebreak, (n, k)), -keyed), axis=1)
    return np.where(np.take_along_axis(eligible, order, axis=1), order, -1)


def greedy_decisions(scores: np.ndarray, eligible: np.ndarray, tiebreak: np.ndarray | None = None) -> Decisions:
    """Deterministic ranking by score: propensity 1, exploitation = the top PSP."""
    rankings = rank_by_scores(scores, eligible, tiebreak)
    return Decisions(rankings, np.ones(len(scores)), rankings[:, 0].copy())


class UniformRandom(Policy):
    """A uniformly random order of the eligible PSPs."""

    name = "uniform"

    def select(self, batch):
        rankings = rank_by_scores(self.rng.random(batch.eligible.shape), batch.eligible)
        return Decisions(rankings, 1.0 / batch.eligible.sum(axis=1), rankings[:, 0].copy())


class StaticPriority(Policy):
    """The catalogue's fail-open priority list, the same for every transaction."""

    name = "static"

    def __init__(self, psps: Sequence[str], priorities: Sequence[int], *, seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.priorities = np.asarray(priorities, dtype=float)

    def select(self, batch):
        scores = np.broadcast_to(-self.priorities, batch.eligible.shape)
        return greedy_decisions(scores, batch.eligible)


class CountryMethodRules(Policy):
    """What an analyst configures by hand: per country × payment method, PSPs by historical approval.

    Fitted once on history first attempts; cells with fewer than ``min_attempts`` attempts fall back to
    the static priority list.
    """

    name = "rules"

    def __init__(self, psps: Sequence[str], priorities: Sequence[int], *, min_attempts: int = 50,
                 seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.priorities = np.asarray(priorities, dtype=float)
        self.min_attempts = min_attempts
        self.table_: dict[tuple[str, str], np.ndarray] = {}

    def fit(self, transactions: pd.DataFrame, attempts: pd.DataFrame) -> "CountryMethodRules":
        first = attempts[attempts["attempt"] == 1][["transaction_id", "psp", "status"]]
        joined = first.merge(transactions[["id", "country", "payment_method"]], left_on="transaction_id", right_on="id")
        joined["approved"] = (joined["status"].astype(str) == "approved").astype(float)
        cells = joined.groupby(["country", "payment_method", "psp"], observed=True)["approved"].agg(["mean", "size"])
        index = {name: j for j, name in enumerate(self.psps)}
        table: dict[tuple[str, str], np.ndarray] = {}
        for (country, method, psp), row in cells.iterrows():
            if psp in index and row["size"] >= self.min_attempts:
                rates = table.setdefault((str(country), str(method)), np.full(len(self.psps), np.nan))
                rates[index[psp]] = row["mean"]
        self.table_ = table
        return self

    def select(self, batch):
        # A PSP the rules have a rate for outranks one they do not; unknown ones keep the static order.
        scores = np.broadcast_to(-self.priorities * 1e-3 - 1.0, batch.eligible.shape).copy()
        keys = zip(batch.transactions["country"].astype(str), batch.transactions["payment_method"].astype(str))
        for i, key in enumerate(keys):
            rates = self.table_.get(key)
            if rates is not None:
                scores[i] = np.where(np.isnan(rates), scores[i], rates)
        return greedy_decisions(scores, batch.eligible, self.priorities)


class Oracle(Policy):
    """Knows the true first-attempt approval probability of every PSP: the ceiling."""

    name = "oracle"

    def __init__(self, psps: Sequence[str], approval: np.ndarray, *, seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.approval = approval  # (stream length, k)

    def select(self, batch):
        return greedy_decisions(self.approval[batch.rows], batch.eligible)


# A scorer maps a batch to approval estimates (n, k): a trained model behind the feature pipeline.
Scorer = Callable[[DecisionBatch], np.ndarray]


class ModelGreedy(Policy):
    """The approval model alone, always taking its best estimate (no exploration)."""

    name = "model_greedy"

    def __init__(self, psps: Sequence[str], scorer: Scorer, *, seed: int = 0) -> None:
        super().__init__(psps, seed=seed)
        self.scorer = scorer

    def select(self, batch):
        return greedy_decisions(self.scorer(batch), batch.eligible)
