"""Thompson sampling over calibrated predictions: a discounted Beta residual per PSP × segment.

For a PSP in a transaction the model gives ``p``. The cell (PSP, segment) holds the discounted number of
observations ``n`` and the discounted residual sum ``r = Σ (approved − p_at_decision)``. The posterior is

    Beta(μ·κ, (1 − μ)·κ),   κ = n0 + n,   μ = (n0·clip(p + g) + n·clip(p + r/n)) / κ

i.e. the model prior Beta(p·n0, (1 − p)·n0) updated with the cell's evidence shifted to this context:
the model keeps the per-transaction detail, the residual corrects it for what happened since training.
Evidence fades with a time half-life and is capped at ``max_evidence`` effective observations, so a
PSP that starts failing moves its posterior within tens of events.

``g`` is the PSP's shared residual: the same discounted residual pooled over every segment (capped at
``shared_max_evidence``) and shrunk toward 0 with ``n0`` pseudo-observations, ``g = R / (n0 + N)``. A PSP
whose approval drifts everywhere (an acquirer change, a model gone stale) moves the prior of every
segment from the pooled evidence, long before each small segment has enough evidence of its own; a
segment with evidence still overrides it. ``g = 0`` (no shared evidence) is the plain model prior.

:func:`first_place_policy` turns posteriors into the probability of each PSP being placed first:
Thompson sampling (K vectorised draws), mixed with the greedy choice so that the expected approval
given up stays under a cap, plus a floor for every eligible PSP and a probe rate for demoted ones.
The first PSP is then drawn from exactly that distribution, so the logged propensity is the
probability with which the code picked it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from payroute.contracts import Transaction

PROBABILITY_EPSILON = 1e-4
SCORE_BLOCK_ROWS = 32
"""Rows of a batch's (rows, K, width) Thompson draws scored at a time: 32 × 128 × 8 float64 is 256 KiB
per array, so the objective's element-wise steps and the argmax run in cache rather than memory."""


def segment_of(transaction: Transaction) -> str:
    """The bandit's segment key: country × payment method × card network."""
    network = transaction.card_network._value_ if transaction.card_network is not None else "-"  # = .value
    return f"{transaction.country}|{transaction.payment_method._value_}|{network}"


def _clip_probability(values: np.ndarray) -> np.ndarray:
    """Clip to [ε, 1 − ε] in place (np.clip's wrapper costs more than the work on 8 values)."""
    return np.minimum(np.maximum(values, PROBABILITY_EPSILON, out=values), 1 - PROBABILITY_EPSILON, out=values)


def posterior(
    model_probability: np.ndarray, prior_strength: np.ndarray, evidence: np.ndarray, residual_sum: np.ndarray,
    shared_shift: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean μ and strength κ per PSP (all arrays of shape (m,)); ``shared_shift`` is g."""
    observed = _clip_probability(model_probability + residual_sum / np.maximum(evidence, 1e-12))
    prior_mean = model_probability if shared_shift is None else _clip_probability(model_probability + shared_shift)
    strength = prior_strength + evidence
    mean = (prior_strength * prior_mean + evidence * observed) / strength
    return _clip_probability(mean), strength


SHARED_SEGMENT = "*"  # the cell pooling every segment's evidence per PSP (segment keys always contain "|")


class ResidualPosterior:
    """Discounted evidence per (segment, PSP): effective count, residual sum, last update time (epoch s).

    With ``shared_max_evidence > 0`` every update also goes to the PSP's pooled cell (``SHARED_SEGMENT``),
    capped at that many effective observations; :meth:`shared_shift` reads it.
    """

    def __init__(
        self, psp_names: tuple[str, ...], *, half_life_s: float, max_evidence: float, shared_max_evidence: float = 0.0
    ) -> None:
        self.psp_names = psp_names
        self.index = {name: i for i, name in enumerate(psp_names)}
        self.half_life_s = half_life_s
        self.max_evidence = max_evidence
        self.shared_max_evidence = shared_max_evidence
        self._cells: dict[str, np.ndarray] = {}  # segment -> (3, n_psps): evidence, residual_sum, t_last
        self._empty = np.zeros(len(psp_names))

    def evidence(self, segment: str, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(effective count, residual sum) per catalogue PSP, decayed to ``now``; shape (n_psps,) each."""
        cell = self._cells.get(segment)
        if cell is None:
            return self._empty, self._empty
        return self._decayed(cell, now)

    def evidence_many(self, segments: list[str], now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`evidence` of many (segment, time) pairs at once: (n, n_psps) arrays, row i equal to
        ``evidence(segments[i], now[i])`` (the same element-wise arithmetic on the stacked cells)."""
        evidence, residual = np.zeros((len(segments), len(self.psp_names))), np.zeros((len(segments), len(self.psp_names)))
        cells = [self._cells.get(segment) for segment in segments]
        rows = [i for i, cell in enumerate(cells) if cell is not None]
        if rows:
            evidence[rows], residual[rows] = self._decayed(np.stack([cells[i] for i in rows]), now[rows][:, None])
        return evidence, residual

    def shared_shift(self, prior_strength: float, now: float | np.ndarray) -> np.ndarray | None:
        """g per catalogue PSP: the pooled residual shrunk toward 0, ``R / (n0 + N)``; None when off or empty.
        ``now`` of shape (n, 1) gives the (n, n_psps) shifts of n times at once."""
        if self.shared_max_evidence <= 0 or SHARED_SEGMENT not in self._cells:
            return None
        evidence, residual = self._decayed(self._cells[SHARED_SEGMENT], now)
        return residual / (prior_strength + evidence)

    def _decayed(self, cells: np.ndarray, now: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Count and residual of cells (3, n_psps) or (n, 3, n_psps) decayed to ``now`` (a float, or (n, 1))."""
        decay = np.exp2(-np.maximum(now - cells[..., 2, :], 0.0) / self.half_life_s)
        return cells[..., 0, :] * decay, cells[..., 1, :] * decay

    def update(self, segment: str, psp: str, approved: bool, model_probability: float, now: float) -> None:
        """Add one outcome the PSP is accountable for (approval, or a PSP-class failure)."""
        outcome = float(approved) - model_probability
        self._add(segment, self.index[psp], outcome, now, self.max_evidence)
        if self.shared_max_evidence > 0:
            self._add(SHARED_SEGMENT, self.index[psp], outcome, now, self.shared_max_evidence)

    def _add(self, segment: str, j: int, outcome: float, now: float, max_evidence: float) -> None:
        cell = self._cells.get(segment)
        if cell is None:
            cell = self._cells[segment] = np.zeros((3, len(self.psp_names)))
            cell[2] = now
        decay = math.exp2(-max(now - cell[2, j], 0.0) / self.half_life_s)
        evidence = cell[0, j] * decay + 1.0
        residual = cell[1, j] * decay + outcome
        if evidence > max_evidence:
            scale = max_evidence / evidence
            evidence, residual = evidence * scale, residual * scale
        cell[0, j], cell[1, j], cell[2, j] = evidence, residual, max(now, cell[2, j])

    def to_json(self) -> dict[str, Any]:
        return {
            segment: {name: [float(v) for v in cell[:, j]] for name, j in self.index.items() if cell[0, j] > 0}
            for segment, cell in self._cells.items()
        }

    def load_json(self, data: Mapping[str, Mapping[str, list[float]]]) -> None:
        self._cells = {}
        for segment, by_psp in data.items():
            cell = self._cells[segment] = np.zeros((3, len(self.psp_names)))
            for name, values in by_psp.items():
                if name in self.index:  # a PSP removed from the catalogue drops its evidence
                    cell[:, self.index[name]] = values


@dataclass(frozen=True)
class FirstPlacePolicy:
    """The distribution of the first-placed PSP for one decision (arrays of shape (m,))."""

    probabilities: np.ndarray  # sums to 1; what the first PSP is drawn from
    thompson: np.ndarray  # empirical Thompson first-place frequencies over healthy PSPs
    greedy: int  # position of the best healthy PSP by posterior-mean score
    exploration_weight: float  # w in [0, 1]: share of the core mass given to Thompson sampling
    approval_given_up: np.ndarray  # per PSP: max(0, μ_greedy − μ_k)

    @property
    def expected_approval_given_up(self) -> float:
        return sum((self.probabilities * self.approval_given_up).tolist())


def first_place_policy(
    mean: np.ndarray,
    strength: np.ndarray,
    healthy: np.ndarray,
    score_of: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    *,
    samples: int,
    exploration_cap: float,
    min_propensity: float,
    probe_rate: float,
    normal_strength: float = float("inf"),
    mean_score: np.ndarray | None = None,
) -> FirstPlacePolicy:
    """Probability of each PSP being first.

    ``π = base + core_mass · (w · π_TS + (1 − w) · 1[greedy])`` where ``base`` is the floor for healthy
    PSPs and the probe rate for demoted ones, π_TS the first-place frequencies of K Thompson draws
    among healthy PSPs, and w the largest weight in [0, 1] keeping ``Σ π_k · max(0, μ_g − μ_k)``
    (expected approval given up versus greedy) within ``exploration_cap``. The floor and probes are
    guarantees and are spent first; if they alone exceed the cap, w = 0. ``mean_score``: ``score_of(mean)``
    when the caller has it. Sums run left to right (:func:`first_place_policies` gives each batch row
    the same bits).
    """
    m = len(mean)
    flags = healthy.tolist()  # a few PSPs: Python's all/any cost less than the array methods
    all_healthy = all(flags) or not any(flags)
    if mean_score is None:
        mean_score = score_of(mean)
    # the array methods, not np.argmax / np.full: the same values without those functions' Python wrappers
    greedy = int((mean_score if all_healthy else np.where(healthy, mean_score, -np.inf)).argmax())
    gaps = np.maximum(mean[greedy] - mean, 0.0)
    floor = min(min_propensity, 1.0 / m)
    if all_healthy:
        base = np.empty(m)
        base.fill(floor)
    else:
        base = np.where(healthy, floor, max(probe_rate, floor))
    core_mass = 1.0 - sum(base.tolist())
    if core_mass < 0:  # more demoted PSPs than probe mass allows: probe uniformly
        base, core_mass = np.full(m, 1.0 / m), 0.0
    budget = exploration_cap - sum((base * gaps).tolist())
    thompson = np.zeros(m)
    weight = 0.0
    if budget > 0 and core_mass > 0 and (m if all_healthy else sum(flags)) > 1:
        if all_healthy:
            draws = posterior_draws(mean, strength, rng, samples=samples, normal_strength=normal_strength)
            thompson = np.bincount(score_of(draws).argmax(axis=1), minlength=m) / samples
        else:
            live = np.flatnonzero(healthy)
            draws = posterior_draws(mean[live], strength[live], rng, samples=samples, normal_strength=normal_strength)
            winners = np.argmax(score_of_subset(score_of, draws, live, m), axis=1)
            thompson[live] = np.bincount(winners, minlength=len(live)) / samples
        regret = core_mass * sum((thompson * gaps).tolist())
        weight = 1.0 if regret <= budget else budget / regret
    core = weight * thompson
    core[greedy] += 1.0 - weight
    return FirstPlacePolicy(base + core_mass * core, thompson, greedy, weight, gaps)


@dataclass(frozen=True)
class FirstPlacePolicies:
    """:class:`FirstPlacePolicy` of many decisions at once, as (n, width) arrays (zero past a row's PSPs)."""

    probabilities: np.ndarray
    thompson: np.ndarray
    greedy: np.ndarray  # (n,)
    exploration_weight: np.ndarray  # (n,)
    approval_given_up: np.ndarray
    uniforms: np.ndarray  # (n,): each row's uniform for :func:`draw_first_many`, drawn right after its Thompson draws

    def row(self, r: int, m: int) -> FirstPlacePolicy:
        return FirstPlacePolicy(
            self.probabilities[r, :m], self.thompson[r, :m], int(self.greedy[r]), float(self.exploration_weight[r]),
            self.approval_given_up[r, :m],
        )


def first_place_policies(
    mean: np.ndarray,
    strength: np.ndarray,
    healthy: np.ndarray,
    valid: np.ndarray,
    score_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rng: np.random.Generator,
    *,
    samples: int,
    exploration_cap: float,
    min_propensity: float,
    probe_rate: float,
    normal_strength: float = float("inf"),
    mean_score: np.ndarray | None = None,
) -> FirstPlacePolicies:
    """:func:`first_place_policy` for n decisions, row r holding its PSPs in the columns where ``valid``.

    Row r equals ``first_place_policy`` on row r alone followed by ``draw_first``'s uniform, called row
    after row on the same ``rng`` (tested): the same element-wise arithmetic, the same left-to-right sums,
    and the same stream — each row's K × d normals (or exact Beta draws), then its uniform, in row order;
    only the arithmetic on the draws runs once for the batch.
    ``score_rows(approval, rows)``: the objective of rows ``rows`` for ``approval`` of shape
    (len(rows), width) or (len(rows), K, width).
    """
    n, width = mean.shape
    rows = np.arange(n)
    m = valid.sum(axis=1)
    healthy = healthy & valid
    all_healthy = (healthy == valid).all(axis=1) | ~healthy.any(axis=1)
    considered = np.where(all_healthy[:, None], valid, healthy)  # greedy and Thompson among these
    if mean_score is None:
        mean_score = score_rows(mean, rows)
    greedy = np.argmax(np.where(considered, mean_score, -np.inf), axis=1)
    gaps = np.where(valid, np.maximum(mean[rows, greedy][:, None] - mean, 0.0), 0.0)
    floor = np.minimum(min_propensity, 1.0 / m)
    base = np.where(
        valid, np.where(all_healthy[:, None] | healthy, floor[:, None], np.maximum(probe_rate, floor)[:, None]), 0.0
    )
    core_mass = 1.0 - row_sums(base)
    crowded = core_mass < 0
    if crowded.any():  # more demoted PSPs than probe mass allows: probe uniformly
        base[crowded] = np.where(valid[crowded], (1.0 / m[crowded])[:, None], 0.0)
        core_mass[crowded] = 0.0
    budget = exploration_cap - row_sums(base * gaps)
    thompson = np.zeros((n, width))
    weight = np.zeros(n)
    drawing = (budget > 0) & (core_mass > 0) & (considered.sum(axis=1) > 1)
    normals, uniforms, exact_draws = _draws_in_order(mean, strength, considered, drawing, rng, samples, normal_strength)
    drawing = np.flatnonzero(drawing)
    if len(drawing):
        winners = np.empty((len(drawing), samples), dtype=np.intp)  # each row's K Thompson winners
        outside = ~considered[drawing]
        mu, kappa = mean[drawing][:, None, :], strength[drawing][:, None, :]
        for start in range(0, len(drawing), SCORE_BLOCK_ROWS):  # blocks that stay in cache: same values
            block = slice(start, start + SCORE_BLOCK_ROWS)
            draws = _draws_from_normals(normals[block], mu[block], kappa[block], outside[block], exact_draws, start)
            scores = score_rows(draws, drawing[block])
            if outside[block].any():
                scores[np.broadcast_to(outside[block][:, None, :], scores.shape)] = -np.inf
            winners[block] = np.argmax(scores, axis=2)
        cells = (winners + (np.arange(len(drawing)) * width)[:, None]).ravel()
        counts = np.bincount(cells, minlength=len(drawing) * width).reshape(len(drawing), width)
        thompson[drawing] = counts / samples
        regret = core_mass[drawing] * row_sums(thompson[drawing] * gaps[drawing])
        within = regret <= budget[drawing]
        weight[drawing] = np.where(within, 1.0, budget[drawing] / np.where(within, 1.0, regret))
    core = weight[:, None] * thompson
    core[rows, greedy] += 1.0 - weight
    return FirstPlacePolicies(base + core_mass[:, None] * core, thompson, greedy, weight, gaps, uniforms)


def row_sums(values: np.ndarray) -> np.ndarray:
    """Sums over the last axis, left to right (as Python's ``sum`` of one row: trailing zeros change nothing,
    whereas numpy's pairwise sum and BLAS dot group terms by length)."""
    total = values[:, 0].copy()
    for j in range(1, values.shape[1]):
        total += values[:, j]
    return total


def _draws_in_order(
    mean: np.ndarray, strength: np.ndarray, considered: np.ndarray, drawing: np.ndarray, rng: np.random.Generator,
    samples: int, normal_strength: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Row by row, as one-by-one decisions consume ``rng``: a drawing row's posterior draws of its considered
    PSPs (K × d normals, or :func:`posterior_draws`' exact Beta draws), then every row's uniform. Returns
    the (len(drawing rows), K, width) standard normals (zero where a row draws none), the n uniforms, and
    the exact draws by drawing-row position ({position: (columns, (K, d) draws)});
    :func:`_draws_from_normals` turns a block of rows into draws."""
    n, width = mean.shape
    rows = np.flatnonzero(drawing)
    normals = np.zeros((len(rows), samples, width))
    exact = ((strength < normal_strength) & considered).any(axis=1)
    per_row = considered.sum(axis=1).tolist()
    leading = (considered == (np.arange(width) < considered.sum(axis=1)[:, None])).all(axis=1)  # the first d columns
    uniforms = np.empty(n)
    exact_draws: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    position = 0
    standard_normal, random = rng.standard_normal, rng.random
    for r in range(n):
        if drawing[r]:
            if exact[r]:
                columns = np.flatnonzero(considered[r])
                exact_draws[position] = (columns, posterior_draws(
                    mean[r, columns], strength[r, columns], rng, samples=samples, normal_strength=normal_strength
                ))
            elif per_row[r] == width:  # the whole row: drawn straight into place
                standard_normal(out=normals[position])
            elif leading[r]:
                normals[position, :, : per_row[r]] = standard_normal((samples, per_row[r]))
            else:
                normals[position][:, considered[r]] = standard_normal((samples, per_row[r]))
            position += 1
        uniforms[r] = random()
    return normals, uniforms, exact_draws


def _draws_from_normals(
    normals: np.ndarray, mu: np.ndarray, kappa: np.ndarray, outside: np.ndarray,
    exact_draws: dict[int, tuple[np.ndarray, np.ndarray]], offset: int,
) -> np.ndarray:
    """A block of drawing rows (positions ``offset`` on) as posterior draws, in place: μ + spread·z clipped
    (the element-wise arithmetic of :func:`posterior_draws`: same bits), 0.5 where a row draws nothing (as
    :func:`score_of_subset` fills them), a row's exact Beta draws where it has them."""
    normals *= np.sqrt(mu * (1 - mu) / (kappa + 1))  # in place: μ + spread·z, the same bits (+ and × commute)
    normals += mu
    draws = _clip_probability(normals)
    if outside.any():
        draws[np.broadcast_to(outside[:, None, :], draws.shape)] = 0.5
    for position, (columns, values) in exact_draws.items():
        if offset <= position < offset + len(draws):
            draws[position - offset] = 0.5
            draws[position - offset][:, columns] = values
    return draws


def posterior_draws(
    mean: np.ndarray, strength: np.ndarray, rng: np.random.Generator, *, samples: int, normal_strength: float
) -> np.ndarray:
    """K draws of Beta(μκ, (1 − μ)κ) per PSP, shape (K, m).

    Columns with κ ≥ ``normal_strength`` use the moment-matched normal N(μ, μ(1 − μ)/(κ + 1)), clipped to
    (0, 1): four times cheaper than numpy's Beta and close to it once κ is a few tens. Cold, wide
    posteriors (κ below the threshold), where the Beta's skew matters, are drawn exactly.
    """
    approximate = strength >= normal_strength
    if all(approximate.tolist()):
        draws = rng.standard_normal((samples, len(mean)))
        draws *= np.sqrt(mean * (1 - mean) / (strength + 1))  # in place: μ + spread·z, the same bits
        draws += mean
        return _clip_probability(draws)
    draws = rng.beta(mean * strength, (1 - mean) * strength, size=(samples, len(mean)))
    if approximate.any():
        mu, kappa = mean[approximate], strength[approximate]
        normal = mu + np.sqrt(mu * (1 - mu) / (kappa + 1)) * rng.standard_normal((samples, len(mu)))
        draws[:, approximate] = _clip_probability(normal)
    return draws


def score_of_subset(score_of: Callable[[np.ndarray], np.ndarray], draws: np.ndarray, live: np.ndarray, m: int) -> np.ndarray:
    """Score K draws of the healthy PSPs only (the objective's cost terms are indexed over all m)."""
    if len(live) == m:
        return score_of(draws)
    full = np.full((draws.shape[0], m), np.nan)
    full[:, live] = draws
    return score_of(np.nan_to_num(full, nan=0.5))[:, live]


def draw_first(probabilities: np.ndarray, rng: np.random.Generator) -> int:
    """Draw a position from ``probabilities`` (one uniform; inverse CDF; zero-probability positions never)."""
    values = probabilities.tolist()
    target, cumulative, last = rng.random() * sum(values), 0.0, 0
    for position, probability in enumerate(values):
        if probability > 0:
            cumulative, last = cumulative + probability, position
            if target < cumulative:
                return position
    return last


def draw_first_many(probabilities: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """:func:`draw_first` for each row of ``probabilities`` with its own uniform (left-to-right cumulative
    sums, so each row gives the position ``draw_first`` gives; zero-probability positions never)."""
    cumulative = np.cumsum(probabilities, axis=1)
    positive = probabilities > 0
    hit = (uniforms * cumulative[:, -1])[:, None] < cumulative
    hit &= positive
    last = probabilities.shape[1] - 1 - np.argmax(positive[:, ::-1], axis=1)
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), last)
