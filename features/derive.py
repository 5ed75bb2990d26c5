"""From decayed counters to history features: empirical-Bayes shrinkage, shared by both paths.

Both interpreters produce, per row, the decayed counters of every level laid out as
``spec.layouts`` (concatenated in ``spec.level_order``: the *raw* matrix). :class:`ShrinkagePlan`
turns the raw matrix into the history features in ``spec.history_feature_names`` order:

    rate(level) = (numerator + k · rate(parent level)) / (denominator + k)

with the family's constant prior above the top level, computed parents first in a few vectorised
stages (one per depth of the level tree), so a BIN seen 3 times sits near its network × issuer rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from payroute.features.spec import FeatureSpec, half_life_label


def shrink(numerator: np.ndarray, denominator: np.ndarray, parent_rate: np.ndarray, strength: float) -> np.ndarray:
    """``(numerator + k · parent_rate) / (denominator + k)``: a sparse key borrows its parent's rate."""
    return (numerator + strength * parent_rate) / (denominator + strength)


@dataclass
class _Stage:
    rate_columns: np.ndarray  # where the stage's rates go in the rate block
    numerator: np.ndarray  # raw-matrix columns
    denominator: np.ndarray
    parent: np.ndarray  # rate-block columns of the parents, -1 for the prior
    prior: np.ndarray
    strength: np.ndarray

    @cached_property
    def parent_mode(self) -> str:
        """'all' rows shrink toward a parent level, 'none' toward priors, or 'mixed'."""
        has_parent = self.parent >= 0
        return "all" if has_parent.all() else "none" if not has_parent.any() else "mixed"


class ShrinkagePlan:
    """The spec compiled into index arrays, so features come from a handful of numpy operations."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        offsets, start = {}, 0
        for level in spec.level_order:
            layout = spec.layouts.get(level, ())
            offsets.update({(level, counter, h): start + i for i, (counter, h) in enumerate(layout)})
            start += len(layout)
        self.raw_width = start
        self.raw_offsets = offsets
        rate_index = {name: i for i, name in enumerate(spec.rate_feature_names)}
        depth = {}
        for level in spec.level_order:
            parent = spec.level(level).parent
            depth[level] = 0 if parent is None else depth[parent] + 1
        rows_by_depth: dict[int, list[tuple]] = {}
        volumes = []
        position = 0
        for family in spec.families:
            for level in (name for name in spec.level_order if name in family.levels):
                parent = spec.level(level).parent
                for h in family.half_lives:
                    rows_by_depth.setdefault(depth[level], []).append(
                        (position, offsets[(level, family.numerator, h)], offsets[(level, family.denominator, h)],
                         (family.name, parent, h), family.prior, family.strength)
                    )
                    position += 1
            if family.volume:
                volumes += [
                    offsets[(level, family.denominator, h)]
                    for level in spec.level_order if level in family.levels
                    for h in family.half_lives
                ]
        def parent_position(key: tuple) -> int:
            family_name, parent, h = key
            if parent is None:
                return -1
            return rate_index[f"{family_name}__{parent}__{half_life_label(h)}"]

        self.stages = tuple(
            _Stage(
                rate_columns=np.array([r[0] for r in rows]),
                numerator=np.array([r[1] for r in rows]),
                denominator=np.array([r[2] for r in rows]),
                parent=np.array([parent_position(r[3]) for r in rows]),
                prior=np.array([r[4] for r in rows], dtype=float),
                strength=np.array([r[5] for r in rows], dtype=float),
            )
            for _, rows in sorted(rows_by_depth.items())
        )
        self.volume_columns = np.array(volumes, dtype=int)
        self.n_rates = position
        self.level_stages = self._by_level(offsets)
        # history_features' layout: every stage's rates side by side in stage order (numerators and
        # denominators gathered once, each stage written to a slice), one scatter to the rate block at the end.
        self._rate_order = np.concatenate([stage.rate_columns for stage in self.stages])
        in_stage_order = np.empty(self.n_rates, dtype=np.intp)
        in_stage_order[self._rate_order] = np.arange(len(self._rate_order))
        self._numerators = np.concatenate([stage.numerator for stage in self.stages])
        self._denominators = np.concatenate([stage.denominator for stage in self.stages])
        bounds = np.cumsum([0, *(len(stage.rate_columns) for stage in self.stages)]).tolist()
        self._steps = [
            (slice(a, b), stage, in_stage_order[np.maximum(stage.parent, 0)])
            for a, b, stage in zip(bounds, bounds[1:], self.stages)
        ]

    def _by_level(self, offsets: dict) -> dict[str, tuple[_Stage, np.ndarray, np.ndarray]]:
        """The same stages regrouped per level, with level-local counter columns: lets the offline
        builder shrink one level as soon as its scan is done and drop its counters."""
        by_level = {}
        for level in self.spec.level_order:
            if level not in self.spec.layouts:
                continue
            start = offsets[(level, *self.spec.layouts[level][0])]
            stop = start + len(self.spec.layouts[level])
            pick = [np.flatnonzero((stage.numerator >= start) & (stage.numerator < stop)) for stage in self.stages]
            stage = _Stage(*(np.concatenate([getattr(st, f)[p] for st, p in zip(self.stages, pick)])
                             for f in ("rate_columns", "numerator", "denominator", "parent", "prior", "strength")))
            stage = _Stage(stage.rate_columns, stage.numerator - start, stage.denominator - start, stage.parent,
                           stage.prior, stage.strength)
            volume = np.flatnonzero((self.volume_columns >= start) & (self.volume_columns < stop))
            by_level[level] = (stage, self.n_rates + volume, self.volume_columns[volume] - start)
        return by_level

    def level_features(self, level: str, counters: np.ndarray, out: np.ndarray) -> None:
        """Write one level's rates and volumes into ``out`` (rows, history features) from its decayed
        counters (rows, its layout); the parent levels' rates must already be in ``out``."""
        stage, volume_out, volume_in = self.level_stages[level]
        _apply(stage, counters, out)
        out[:, volume_out] = counters[:, volume_in]

    def history_features(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Raw decayed counters (rows, raw_width) → history features (rows, len(history_feature_names))."""
        rows = raw.shape[0]
        if out is None:
            out = np.empty((rows, self.n_rates + len(self.volume_columns)), order="F")
        numerator, denominator = raw[:, self._numerators], raw[:, self._denominators]
        rates = np.empty((rows, self.n_rates))  # stage order; parents come from earlier stages
        for columns, stage, parents in self._steps:  # the arithmetic of _apply, stage by stage
            parent = _parent_rates(stage, rates, parents)
            rates[:, columns] = shrink(numerator[:, columns], denominator[:, columns], parent, stage.strength)
        out[:, self._rate_order] = rates
        out[:, self.n_rates :] = raw[:, self.volume_columns]
        return out


def _parent_rates(stage: _Stage, rates: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """What a stage's rates shrink toward: its parents' rates (``rates[:, columns]``, the parents' columns
    in ``rates``), the family priors, or per row whichever the stage's keys have."""
    mode = stage.parent_mode
    if mode == "all":
        return rates[:, columns]
    if mode == "mixed":
        return np.where(stage.parent >= 0, rates[:, columns], stage.prior)
    return stage.prior


def _apply(stage: _Stage, counters: np.ndarray, out: np.ndarray) -> None:
    """One stage of shrinkage: rates from counters and parent rates already in ``out``."""
    parent = _parent_rates(stage, out, np.maximum(stage.parent, 0))
    out[:, stage.rate_columns] = shrink(counters[:, stage.numerator], counters[:, stage.denominator], parent,
                                        stage.strength)
