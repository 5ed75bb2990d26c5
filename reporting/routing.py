"""Routing views: traffic share per PSP over time, incident windows, and the scoring service's columns.

Incidents are read from the data, not from a schedule: an hour in which a PSP's error + timeout rate
reaches ``failure_rate`` on at least ``min_attempts`` attempts; consecutive such hours form a window.
Model version, degraded and exploration views appear only when a service log exported to the contract
carries those columns.
"""

from __future__ import annotations

import pandas as pd

from payroute.contracts import AttemptStatus

from payroute.reporting.frames import ReportData

FAILURE_STATUSES = (AttemptStatus.error.value, AttemptStatus.timeout.value)


def traffic_share(data: ReportData, freq: str = "h") -> pd.DataFrame:
    """Share of attempts per PSP in each period (rows: period start, columns: PSPs; rows sum to 1)."""
    period = data.attempts["timestamp"].dt.floor(freq)
    counts = pd.crosstab(period, data.attempts["psp"])
    counts.index.name = "period"
    return counts.div(counts.sum(axis=1), axis=0)


def failure_rate_by_period(data: ReportData, freq: str = "h") -> pd.DataFrame:
    """Per PSP and period: attempts and the share that errored or timed out."""
    attempts = data.attempts
    frame = pd.DataFrame(
        {
            "period": attempts["timestamp"].dt.floor(freq),
            "psp": attempts["psp"],
            "attempts": 1,
            "failures": attempts["status"].isin(FAILURE_STATUSES).astype(int),
        }
    )
    sums = frame.groupby(["psp", "period"]).sum().reset_index()
    sums["failure_rate"] = sums["failures"] / sums["attempts"]
    return sums


def incident_windows(data: ReportData, freq: str = "h", failure_rate: float = 0.5, min_attempts: int = 10) -> pd.DataFrame:
    """Windows of consecutive periods in which a PSP's error + timeout rate reached ``failure_rate``."""
    periods = failure_rate_by_period(data, freq)
    bad = periods.loc[(periods["failure_rate"] >= failure_rate) & (periods["attempts"] >= min_attempts)]
    columns = ["psp", "start", "end", "attempts", "failures", "failure_rate"]
    if bad.empty:
        return pd.DataFrame(columns=columns)
    step = pd.Timedelta(1, unit=freq)
    bad = bad.sort_values(["psp", "period"])
    new_window = (bad["psp"] != bad["psp"].shift()) | (bad["period"] - bad["period"].shift() != step)
    bad = bad.assign(window=new_window.cumsum())
    windows = bad.groupby("window").agg(
        psp=("psp", "first"), start=("period", "min"), end=("period", "max"),
        attempts=("attempts", "sum"), failures=("failures", "sum"),
    )
    windows["end"] = windows["end"] + step
    windows["failure_rate"] = windows["failures"] / windows["attempts"]
    return windows[columns].reset_index(drop=True)


def service_views(data: ReportData) -> dict[str, pd.DataFrame]:
    """Approval by model version, degraded share and exploration share, for the columns that exist."""
    attempts = data.attempts
    views: dict[str, pd.DataFrame] = {}
    first = attempts.drop_duplicates("tx")
    if "model_version" in attempts.columns and attempts["model_version"].notna().any():
        approved = data.payments.set_index("id")["approved"]
        frame = first.assign(final_approved=approved.reindex(first["transaction_id"]).to_numpy())
        frame = frame.assign(first_approved=frame["status"] == AttemptStatus.approved.value)
        views["approval_by_model_version"] = (
            frame.groupby("model_version")
            .agg(payments=("tx", "size"), first_attempt_approval=("first_approved", "mean"),
                 final_approval=("final_approved", "mean"))
            .reset_index()
        )
    for column, name in (("degraded", "degraded_share"), ("explored", "exploration_share")):
        if column in attempts.columns and attempts[column].notna().any():
            flags = first.assign(flag=first[column].astype("boolean").fillna(False).astype(bool))
            views[name] = (
                flags.groupby("day").agg(decisions=("tx", "size"), share=("flag", "mean")).reset_index()
            )
    return views
