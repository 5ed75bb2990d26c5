"""Figures of a bench run: approval over time in the affected segment, and traffic share by PSP."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def _figure(width: float = 9.0, height: float = 4.0):
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def approval_over_time(series: Mapping[str, pd.DataFrame], title: str, rolling: int = 4):
    """First-attempt approval per policy (``rolling`` bins smoothed) against minutes into the bench."""
    fig, ax = _figure()
    for policy, frame in series.items():
        ax.plot(frame["minute"] / 60, frame["first_attempt_approval"].rolling(rolling, min_periods=1).mean(),
                label=policy, linewidth=1.2)
    ax.set(xlabel="hours into the bench window", ylabel="first-attempt approval", title=title)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def traffic_share(frame: pd.DataFrame, title: str):
    """Stacked share of first attempts per PSP over time for one policy."""
    fig, ax = _figure()
    psps = [c for c in frame.columns if c not in ("minute", "first_attempt_approval")]
    ax.stackplot(frame["minute"] / 60, *(frame[p].fillna(0).to_numpy() for p in psps), labels=psps)
    ax.set(xlabel="hours into the bench window", ylabel="share of first attempts", title=title, ylim=(0, 1))
    ax.legend(fontsize=7, ncol=4, loc="lower left")
    fig.tight_layout()
    return fig
