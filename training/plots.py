"""Evaluation figures (matplotlib, Agg backend): reliability diagram and gain-based feature importance."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from payroute.training.metrics import expected_calibration_error, reliability_table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(frame: pd.DataFrame, columns: Mapping[str, str], label: str = "label"):
    """Observed approval rate against mean predicted probability per bin, one line per prediction column."""
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=(3, 1), sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    y = frame[label].to_numpy()
    for column, title in columns.items():
        table = reliability_table(y, frame[column].to_numpy())
        ece = expected_calibration_error(y, frame[column].to_numpy())
        top.plot(table["predicted"], table["observed"], marker="o", label=f"{title} (ECE {ece:.4f})")
    counts = reliability_table(y, frame[next(iter(columns))].to_numpy())
    bottom.bar(counts["predicted"], counts["rows"], width=1 / 20, color="tab:blue", alpha=0.6)
    top.set_ylabel("observed approval rate")
    top.set_title("Reliability diagram (test period)")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("predicted approval probability")
    bottom.set_ylabel("rows (model)")
    figure.tight_layout()
    return figure


def importance_plot(gain_importance: Mapping[str, float], top_n: int = 25):
    """Horizontal bars of total split gain per feature, largest on top."""
    plt = _pyplot()
    items = sorted(gain_importance.items(), key=lambda kv: kv[1])[-top_n:]
    names: Sequence[str] = [name for name, _ in items]
    gains = np.array([gain for _, gain in items])
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(items) + 1.5))
    axis.barh(names, gains / max(gains.sum(), 1e-12))
    axis.set_xlabel("share of total gain")
    axis.set_title("Approval model: gain-based feature importance")
    figure.tight_layout()
    return figure
