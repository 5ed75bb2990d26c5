"""Evaluation metrics of approval probabilities and the baselines they are compared with.

ECE uses 15 equal-width probability bins, weighted by the share of rows in each bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, roc_auc_score

ECE_BINS = 15
SEGMENT_COLUMNS: tuple[str, ...] = ("psp", "country", "payment_method")
SEGMENT_PRIOR_ROWS = 20.0  # segment rates are shrunk towards the global rate with this many pseudo-rows


def log_loss_safe(label: np.ndarray, probability: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probability, dtype=float), eps, 1 - eps)
    y = np.asarray(label, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def reliability_table(label: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width bin: rows, mean predicted probability, observed approval rate."""
    probability = np.asarray(probability, dtype=float)
    which = np.minimum((probability * bins).astype(int), bins - 1)
    frame = pd.DataFrame({"bin": which, "predicted": probability, "observed": np.asarray(label, dtype=float)})
    table = frame.groupby("bin").agg(rows=("predicted", "size"), predicted=("predicted", "mean"), observed=("observed", "mean"))
    return table.reset_index()


def expected_calibration_error(label: np.ndarray, probability: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_bins (rows_b / n) · |mean predicted_b − observed rate_b|."""
    table = reliability_table(label, probability, bins)
    return float((table["rows"] * (table["predicted"] - table["observed"]).abs()).sum() / table["rows"].sum())


def classification_metrics(label: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier score, ECE and the mean predicted vs observed rate."""
    label = np.asarray(label, dtype=float)
    probability = np.asarray(probability, dtype=float)
    both_classes = len(np.unique(label)) == 2
    return {
        "auc": float(roc_auc_score(label, probability)) if both_classes else float("nan"),
        "log_loss": log_loss_safe(label, probability),
        "brier": float(brier_score_loss(label, probability)),
        "ece": expected_calibration_error(label, probability),
        "mean_predicted": float(probability.mean()),
        "approval_rate": float(label.mean()),
        "rows": float(len(label)),
    }


def segment_metrics(frame: pd.DataFrame, by: str, predictions: Sequence[str], label: str = "label") -> pd.DataFrame:
    """One row per segment value: rows, approval rate and each prediction column's metrics."""
    rows = []
    for value, group in frame.groupby(by, observed=True, dropna=False):
        row: dict[str, object] = {by: value, "rows": len(group), "approval_rate": float(group[label].mean())}
        for column in predictions:
            metrics = classification_metrics(group[label].to_numpy(), group[column].to_numpy())
            for key in ("auc", "log_loss", "brier", "ece", "mean_predicted"):
                row[f"{column}_{key}"] = metrics[key]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("rows", ascending=False).reset_index(drop=True)


def global_rate_baseline(train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Train-period approval rate, the same for every row."""
    return np.full(len(rows), float(train["label"].mean()))


def segment_rate_baseline(
    train: pd.DataFrame, rows: pd.DataFrame, columns: Sequence[str] = SEGMENT_COLUMNS
) -> np.ndarray:
    """Train-period approval rate of the row's segment (e.g. PSP × country × method), shrunk to the global rate.

    ``(approved + m·global) / (attempts + m)`` with ``m`` = :data:`SEGMENT_PRIOR_ROWS`; unseen segments get
    the global rate.
    """
    keys = [c for c in columns if c in train.columns and c in rows.columns]
    overall = float(train["label"].mean())
    if not keys:
        return np.full(len(rows), overall)
    stats = train.groupby(keys, observed=True, dropna=False)["label"].agg(["sum", "count"])
    stats["rate"] = (stats["sum"] + SEGMENT_PRIOR_ROWS * overall) / (stats["count"] + SEGMENT_PRIOR_ROWS)
    joined = rows[keys].merge(stats["rate"].reset_index(), on=keys, how="left")
    return joined["rate"].fillna(overall).to_numpy(dtype=float)
