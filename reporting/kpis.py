"""Approval KPIs by dimension, and payouts/withdrawals.

Definitions (also in ``docs/reporting.md``):

- *first-attempt approval*: share of payments whose first attempt was approved;
- *final approval*: share of payments approved by some attempt of the cascade;
- *deposit conversion*: final approval over deposits only; *first-deposit conversion* over deposits
  flagged ``first_deposit``;
- *attempts per payment*: mean number of attempts;
- *decline mix*: among failed attempts (declined, error, timeout), the share of each decline class;
- *error rate*, *timeout rate*: share of attempts with that status; latency percentiles over attempts.

By PSP, the payment-level figures (first-attempt, final approval, conversions, attempts per payment)
belong to the PSP the payment was *first routed to*; the attempt-level figures to the PSP attempted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from payroute.contracts import AttemptStatus, DeclineClass, TransactionType

from payroute.reporting.frames import MONEY_SCALE, ReportData

PAYOUT_TYPES = (TransactionType.withdrawal.value, TransactionType.affiliate_payout.value)


def _payment_key(by: str) -> str:
    return "first_psp" if by == "psp" else by


def payment_kpis(payments: pd.DataFrame, by: str) -> pd.DataFrame:
    """Payment-level KPIs grouped by ``by`` (``psp`` means the first-routed PSP)."""
    deposit = payments["type"] == TransactionType.deposit.value
    first_deposit = deposit & payments["first_deposit"].astype(bool)
    frame = pd.DataFrame(
        {
            by: payments[_payment_key(by)],
            "payments": 1,
            "first_approved": (payments["first_status"] == AttemptStatus.approved.value).astype(int),
            "approved": payments["approved"].astype(int),
            "deposits": deposit.astype(int),
            "deposits_approved": (deposit & payments["approved"]).astype(int),
            "first_deposits": first_deposit.astype(int),
            "first_deposits_approved": (first_deposit & payments["approved"]).astype(int),
            "attempts_total": payments["n_attempts"],
        }
    )
    sums = frame.groupby(by, dropna=True).sum()
    return pd.DataFrame(
        {
            "payments": sums["payments"],
            "first_attempt_approval": sums["first_approved"] / sums["payments"],
            "final_approval": sums["approved"] / sums["payments"],
            "deposits": sums["deposits"],
            "deposit_conversion": _ratio(sums["deposits_approved"], sums["deposits"]),
            "first_deposits": sums["first_deposits"],
            "first_deposit_conversion": _ratio(sums["first_deposits_approved"], sums["first_deposits"]),
            "attempts_per_payment": sums["attempts_total"] / sums["payments"],
        }
    )


def attempt_kpis(attempts: pd.DataFrame, by: str) -> pd.DataFrame:
    """Attempt-level KPIs grouped by ``by``: approval, decline mix, error/timeout rate, latency."""
    status = attempts["status"]
    failed = status != AttemptStatus.approved.value
    decline_class = attempts["decline_class"].astype(object)
    frame = pd.DataFrame(
        {
            by: attempts[by],
            "attempts": 1,
            "approved": (~failed).astype(int),
            "failed": failed.astype(int),
            "error": (status == AttemptStatus.error.value).astype(int),
            "timeout": (status == AttemptStatus.timeout.value).astype(int),
            **{f"{c.value}": (failed & (decline_class == c.value)).astype(int) for c in DeclineClass},
        }
    )
    sums = frame.groupby(by, dropna=True).sum()
    latency = attempts.groupby(by, dropna=True)["latency_ms"].quantile([0.5, 0.95]).unstack()
    table = pd.DataFrame(
        {
            "attempts": sums["attempts"],
            "attempt_approval": sums["approved"] / sums["attempts"],
            **{f"{c.value}_decline_share": _ratio(sums[c.value], sums["failed"]) for c in DeclineClass},
            "error_rate": sums["error"] / sums["attempts"],
            "timeout_rate": sums["timeout"] / sums["attempts"],
            "latency_p50_ms": latency[0.5],
            "latency_p95_ms": latency[0.95],
        }
    )
    return table


def approval_kpis(data: ReportData, by: str) -> pd.DataFrame:
    """Payment- and attempt-level KPIs side by side, one row per value of ``by``."""
    table = payment_kpis(data.payments, by).join(attempt_kpis(data.attempts, by), how="outer")
    for column in ("payments", "deposits", "first_deposits", "attempts"):
        table[column] = table[column].fillna(0).astype("int64")
    table.index.name = by
    return table.reset_index()


def overall_kpis(data: ReportData) -> pd.DataFrame:
    """The same KPIs over every payment, as one row."""
    payments = data.payments.assign(all="all", first_psp="all")
    attempts = data.attempts.assign(all="all")
    table = payment_kpis(payments, "all").join(attempt_kpis(attempts, "all"), how="outer")
    return table.reset_index(drop=True)


def payout_kpis(data: ReportData) -> pd.DataFrame:
    """Withdrawals and affiliate payouts by type, overall and by first-routed PSP.

    ``success``: share of payout requests approved after the cascade. ``cost_bps``: every attempt's
    fees and FX over approved volume. ``seconds_to_complete``: from the request to the approving answer.
    """
    payouts = data.payments.loc[data.payments["type"].isin(PAYOUT_TYPES)]
    if payouts.empty:
        return pd.DataFrame(
            columns=["type", "psp", "requests", "success", "approved_volume_eur", "cost_eur", "cost_bps",
                     "p50_seconds_to_complete", "p95_seconds_to_complete"]
        )
    rows = []
    for (kind, psp), group in _payout_groups(payouts):
        approved = group.loc[group["approved"]]
        volume = int(approved["amount_eur_u"].sum())
        cost = int(group["cost_eur_u"].sum())
        seconds = approved["seconds_to_complete"]
        rows.append(
            {
                "type": kind,
                "psp": psp,
                "requests": len(group),
                "success": float(group["approved"].mean()),
                "approved_volume_eur": volume / MONEY_SCALE,
                "cost_eur": cost / MONEY_SCALE,
                "cost_bps": cost / volume * 1e4 if volume else np.nan,
                "p50_seconds_to_complete": float(seconds.quantile(0.5)) if len(seconds) else np.nan,
                "p95_seconds_to_complete": float(seconds.quantile(0.95)) if len(seconds) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _payout_groups(payouts: pd.DataFrame):
    """(type, 'all') for each type, then (type, first-routed PSP)."""
    for kind, group in payouts.groupby("type"):
        yield (kind, "all"), group
    for key, group in payouts.groupby(["type", "first_psp"]):
        yield key, group


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return numerator / denominator.where(denominator > 0)
