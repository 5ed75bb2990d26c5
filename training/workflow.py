"""From a history folder to a registered, gated, exported model: the steps ``payroute train`` runs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from payroute.catalog import Catalog, load_catalog
from payroute.history import CATALOG_FILE, History, read_history
from payroute.training.cost import attach_cost_targets, cost_targets
from payroute.training.dataset import SpecLike
from payroute.training.pipeline import TrainingConfig, TrainingResult, train_models
from payroute.training.tracking import RunOutcome, log_training_run


def resolve_catalog(history_dir: str | Path, catalog_path: str | Path | None) -> Catalog:
    """An explicit catalogue, else the history folder's ``catalog.yaml``, else the embedded default."""
    if catalog_path is not None:
        return load_catalog(catalog_path)
    beside = Path(history_dir) / CATALOG_FILE
    return load_catalog(beside if beside.exists() else None)


def sample_transactions(table: pd.DataFrame, n_transactions: int | None, seed: int) -> pd.DataFrame:
    """Keep every attempt of ``n_transactions`` transactions drawn without replacement (seeded); time order kept."""
    if n_transactions is None:
        return table
    ids = table["transaction_id"].drop_duplicates().to_numpy()
    if n_transactions >= len(ids):
        return table
    chosen = np.random.default_rng(seed).choice(ids, size=n_transactions, replace=False)
    return table.loc[table["transaction_id"].isin(chosen)].reset_index(drop=True)


def training_table(history: History, catalog: Catalog, spec: SpecLike) -> pd.DataFrame:
    """The feature pipeline's point-in-time table with the cost heads' targets attached."""
    from payroute.features import build_training_table

    table = build_training_table(history, catalog, spec)
    return attach_cost_targets(table, cost_targets(history, catalog))


@dataclass(frozen=True)
class TrainReport:
    result: TrainingResult
    outcome: RunOutcome
    seconds: dict[str, float]


def train_from_history(
    history_dir: str | Path,
    *,
    tracking_uri: str,
    models_dir: str | Path | None,
    catalog_path: str | Path | None = None,
    sample: int | None = None,
    config: TrainingConfig = TrainingConfig(),
    spec: SpecLike | None = None,
) -> TrainReport:
    """Read history, build features, train, log, register, gate and export; stage timings in ``seconds``."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now
        if config.progress:
            print(f"[train] {name}: {seconds[name]:.1f}s", file=sys.stderr)

    if spec is None:
        from payroute.features import DEFAULT_SPEC

        spec = DEFAULT_SPEC
    history = read_history(history_dir)
    catalog = resolve_catalog(history_dir, catalog_path)
    stage("read history")
    table = sample_transactions(training_table(history, catalog, spec), sample, config.seed)
    stage(f"features ({len(table):,} attempts)")
    result = train_models(table, spec, config)
    stage("train + evaluate")
    outcome = log_training_run(
        result,
        tracking_uri,
        params={"history_dir": str(Path(history_dir).resolve()), "sample": sample or 0, "catalog_version": catalog.version},
        models_dir=models_dir,
    )
    stage("log, register, gate, export")
    return TrainReport(result, outcome, seconds)
