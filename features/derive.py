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

import numpy as np

from payroute.features.spec import FeatureSpec, half_life_label


def shrink(numerator: np.ndarray, denominator: np.ndarray, parent_rate: np.ndarray, strength: float) -> np.ndarray:
    """``(numerator + k · parent_rate) / (denominator + k)``: a sparse key borrows its parent's rate."""
    return (numerator + strength * parent_rate) / (denominator + strength)


@dataclass(frozen=True)
class _Stage:
    rate_columns: np.ndarray  # where the stage's rates go in the rate block
    numerator: np.ndarray  # raw-matrix columns
    denominator: np.ndarray
    parent: np.ndarray  # rate-block columns of the parents, -1 for the prior
    prior: np.ndarray
    strength: np.ndarray


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

    def history_features(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Raw decayed counters (rows, raw_width) → history features (rows, len(history_feature_names))."""
        rows = raw.shape[0]
        if out is None:
            out = np.empty((rows, self.n_rates + len(self.volume_columns)))
        rates = out[:, : self.n_rates]
        for stage in self.stages:
            if (stage.parent >= 0).any():
                parent = np.where(stage.parent >= 0, rates[:, np.maximum(stage.parent, 0)], stage.prior)
            else:
                parent = stage.prior
            rates[:, stage.rate_columns] = shrink(
                raw[:, stage.numerator], raw[:, stage.denominator], parent, stage.strength
            )
        out[:, self.n_rates :] = raw[:, self.volume_columns]
        return out
