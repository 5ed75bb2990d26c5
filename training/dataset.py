"""The training table as the trainer sees it: a spec, a time-ordered split, a content hash.

The table has one row per attempt: ``timestamp``, ``label`` (1 = approved), ``psp`` and the spec's feature
columns; ``transaction_id`` keeps a transaction's attempts on one side of every split boundary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from payroute.model_bundle import FeatureLayout, categorical_levels


class SpecLike(Protocol):
    """What the trainer needs from a feature spec (``payroute.features.DEFAULT_SPEC`` satisfies it)."""

    @property
    def feature_names(self) -> Sequence[str]: ...

    @property
    def categorical_features(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class TableSpec:
    """A plain spec for tables not built by ``payroute.features`` (synthetic data, tests)."""

    feature_names: tuple[str, ...]
    categorical_features: tuple[str, ...]
    version: str = "table-1"


@dataclass(frozen=True)
class TimeSplit:
    """Train, validation and test rows in time order: every train timestamp precedes every validation one."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def row_counts(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def time_split(table: pd.DataFrame, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> TimeSplit:
    """Cut the table at time quantiles of transaction start (never shuffled across time).

    A transaction's attempts share the split of its first attempt, so a retry never leaks into the
    period before its own first try.
    """
    if not np.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    start = (
        table.groupby("transaction_id")["timestamp"].transform("min")
        if "transaction_id" in table.columns
        else table["timestamp"]
    )
    ordered = table.assign(_start=start).sort_values(
        ["_start", *(c for c in ("transaction_id", "attempt") if c in table.columns)], kind="stable"
    )
    starts = ordered["_start"].to_numpy()
    n = len(ordered)
    first_cut = starts[min(int(n * fractions[0]), n - 1)]
    second_cut = starts[min(int(n * (fractions[0] + fractions[1])), n - 1)]
    parts = (starts < first_cut, (starts >= first_cut) & (starts < second_cut), starts >= second_cut)
    frames = [ordered.loc[mask].drop(columns="_start").reset_index(drop=True) for mask in parts]
    if any(len(frame) == 0 for frame in frames):
        raise ValueError("time split left an empty part: too few distinct timestamps")
    return TimeSplit(*frames)


def layout_for(train: pd.DataFrame, spec: SpecLike) -> FeatureLayout:
    """Feature layout with categorical levels observed in the training period."""
    feature_names = tuple(spec.feature_names)
    categorical = tuple(spec.categorical_features)
    unknown = [c for c in categorical if c not in feature_names]
    if unknown:
        raise ValueError(f"categorical feature(s) not among feature_names: {', '.join(unknown)}")
    if "psp" not in feature_names:
        raise ValueError("the approval model needs 'psp' among the features (one model scores every PSP)")
    return FeatureLayout(
        feature_names=feature_names,
        categorical_features=categorical,
        categorical_levels=categorical_levels(train, categorical),
        spec_version=str(getattr(spec, "version", "unknown")),
    )


def data_hash(table: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """SHA-256 over the row hashes of the given columns (order-sensitive): the same table, the same hash."""
    selected = table[list(columns)] if columns is not None else table
    row_hashes = pd.util.hash_pandas_object(selected, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update(",".join(selected.columns).encode())
    return digest.hexdigest()
