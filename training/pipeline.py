"""Train, calibrate and evaluate the approval model and the learned cost heads on one training table.

Pure with respect to storage: no MLflow here (see :mod:`payroute.training.tracking`). Same table and
seed give byte-identical model texts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from payroute.model_bundle import COST_HEADS, Calibrator, FeatureLayout, encode_features, write_bundle
from payroute.training.boosting import BoosterFit, deterministic_params, fit_booster
from payroute.training.calibration import CalibrationChoice, choose_calibrator
from payroute.training.cost import has_cost_targets
from payroute.training.dataset import SpecLike, TimeSplit, data_hash, layout_for, time_split
from payroute.training.metrics import (
    classification_metrics,
    global_rate_baseline,
    segment_metrics,
    segment_rate_baseline,
)

APPROVAL_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 10.0,
    "max_bin": 255,
}
COST_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 200,
    "lambda_l2": 10.0,
    "max_bin": 255,
}
PREDICTION_COLUMNS = ("p_model", "p_raw", "p_segment", "p_global")


@dataclass(frozen=True)
class TrainingConfig:
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    num_boost_round: int = 1000
    early_stopping_rounds: int = 50
    cost_num_boost_round: int = 300
    calibration_folds: int = 5
    num_threads: int = 1  # fixed for reproducibility; 1 avoids OpenMP spin-waits on a busy machine
    approval_params: Mapping[str, Any] = field(default_factory=lambda: dict(APPROVAL_PARAMS))
    cost_params: Mapping[str, Any] = field(default_factory=lambda: dict(COST_PARAMS))
    progress: bool = True


@dataclass(frozen=True)
class TrainingResult:
    """Everything a run logs and a bundle holds."""

    layout: FeatureLayout
    approval: BoosterFit
    calibration: CalibrationChoice
    cost: Mapping[str, BoosterFit]
    metrics: dict[str, float]
    test_frame: pd.DataFrame  # test rows: features, label and the prediction columns
    segment_tables: dict[str, pd.DataFrame]
    params: dict[str, Any]
    row_counts: dict[str, int]
    data_hash: str

    @property
    def calibrator(self) -> Calibrator:
        return self.calibration.calibrator

    def write_bundle(self, directory: str | Path, version: str | None = None, extra: Mapping[str, Any] | None = None) -> Path:
        return write_bundle(
            directory,
            layout=self.layout,
            approval_model_text=self.approval.model_text,
            calibrator=self.calibrator,
            cost_model_texts={head: fit.model_text for head, fit in self.cost.items()},
            metrics=self.metrics,
            version=version,
            extra={"data_hash": self.data_hash, "row_counts": self.row_counts, **(extra or {})},
        )


def train_models(table: pd.DataFrame, spec: SpecLike, config: TrainingConfig = TrainingConfig()) -> TrainingResult:
    """Split by time, train + calibrate the approval model, train the cost heads, evaluate on the test period."""
    started = time.perf_counter()
    split = time_split(table, config.fractions)
    layout = layout_for(split.train, spec)
    matrices = {name: encode_features(getattr(split, name), layout) for name in ("train", "validation", "test")}
    labels = {name: getattr(split, name)["label"].to_numpy(dtype=float) for name in ("train", "validation", "test")}

    approval_params = deterministic_params(config.approval_params, config.seed, config.num_threads)
    approval = fit_booster(
        matrices["train"], labels["train"], matrices["validation"], labels["validation"], layout, approval_params,
        num_boost_round=config.num_boost_round, early_stopping_rounds=config.early_stopping_rounds,
        description="approval model", progress=config.progress,
    )
    booster = _booster(approval.model_text)
    raw_validation = booster.predict(matrices["validation"])
    calibration = choose_calibrator(raw_validation, labels["validation"], folds=config.calibration_folds)

    cost = _fit_cost_heads(split, matrices, layout, config) if has_cost_targets(table) else {}

    test = split.test.copy()
    test["p_raw"] = booster.predict(matrices["test"])
    test["p_model"] = calibration.calibrator.apply(test["p_raw"].to_numpy())
    test["p_segment"] = segment_rate_baseline(split.train, test)
    test["p_global"] = global_rate_baseline(split.train, test)

    metrics = _evaluation_metrics(test, labels["validation"], raw_validation, calibration)
    metrics.update(_cost_metrics(split.test, matrices["test"], cost))
    metrics["best_iteration"] = float(approval.best_iteration)
    metrics["training_seconds"] = time.perf_counter() - started
    segment_tables = {
        by: segment_metrics(test, by, PREDICTION_COLUMNS) for by in ("psp", "country") if by in test.columns
    }
    params = {
        **{f"approval.{k}": v for k, v in approval_params.items()},
        **{f"cost.{k}": v for k, v in deterministic_params(config.cost_params, config.seed, config.num_threads).items()},
        "seed": config.seed,
        "split_fractions": ",".join(str(f) for f in config.fractions),
        "num_boost_round": config.num_boost_round,
        "early_stopping_rounds": config.early_stopping_rounds,
        "calibration_method": calibration.method,
        "calibration_folds": config.calibration_folds,
        "feature_spec_version": layout.spec_version,
        "n_features": len(layout.feature_names),
    }
    return TrainingResult(
        layout=layout,
        approval=approval,
        calibration=calibration,
        cost=cost,
        metrics=metrics,
        test_frame=test,
        segment_tables=segment_tables,
        params=params,
        row_counts=split.row_counts,
        data_hash=data_hash(table),
    )


def _booster(model_text: str):
    import lightgbm

    return lightgbm.Booster(model_str=model_text)


def _evaluation_metrics(
    test: pd.DataFrame, validation_label: np.ndarray, raw_validation: np.ndarray, calibration: CalibrationChoice
) -> dict[str, float]:
    """Flat ``<set>_<prediction>_<metric>`` dictionary; ``test_*`` for the model itself."""
    metrics: dict[str, float] = {}
    label = test["label"].to_numpy(dtype=float)
    for column, prefix in (("p_model", "test"), ("p_raw", "test_uncalibrated"), ("p_segment", "baseline_segment"), ("p_global", "baseline_global")):
        for key, value in classification_metrics(label, test[column].to_numpy()).items():
            if prefix == "test" or key not in ("rows", "approval_rate"):
                metrics[f"{prefix}_{key}"] = value
    validation = classification_metrics(validation_label, calibration.calibrator.apply(raw_validation))
    metrics.update({f"validation_{k}": v for k, v in validation.items() if k in ("auc", "log_loss", "ece")})
    metrics.update({f"calibration_cv_log_loss_{m}": v for m, v in calibration.cv_log_loss.items()})
    return metrics


def _fit_cost_heads(split: TimeSplit, matrices: dict[str, np.ndarray], layout: FeatureLayout, config: TrainingConfig) -> dict[str, BoosterFit]:
    params = deterministic_params(config.cost_params, config.seed, config.num_threads)
    heads: dict[str, BoosterFit] = {}
    train_rows = split.train["label"].to_numpy() == 1
    valid_rows = split.validation["label"].to_numpy() == 1
    for head in COST_HEADS:
        heads[head] = fit_booster(
            matrices["train"][train_rows], split.train.loc[train_rows, head].to_numpy(dtype=float),
            matrices["validation"][valid_rows], split.validation.loc[valid_rows, head].to_numpy(dtype=float),
            layout, params, num_boost_round=config.cost_num_boost_round, early_stopping_rounds=30,
            description=f"cost: {head}", progress=config.progress,
        )
    return heads


def _cost_metrics(test: pd.DataFrame, matrix: np.ndarray, cost: Mapping[str, BoosterFit]) -> dict[str, float]:
    """Per head on approved test attempts: RMSE of the model and of the train-free zero baseline, mean vs actual."""
    metrics: dict[str, float] = {}
    rows = test["label"].to_numpy() == 1
    for head, fit in cost.items():
        actual = test.loc[rows, head].to_numpy(dtype=float)
        predicted = _booster(fit.model_text).predict(matrix[rows])
        metrics[f"cost_{head}_rmse"] = float(np.sqrt(np.mean((predicted - actual) ** 2)))
        metrics[f"cost_{head}_rmse_zero_baseline"] = float(np.sqrt(np.mean(actual**2)))
        metrics[f"cost_{head}_mean_predicted"] = float(predicted.mean())
        metrics[f"cost_{head}_mean_actual"] = float(actual.mean())
    return metrics
