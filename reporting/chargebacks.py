"""Chargeback rates per PSP and per merchant, against configurable monitoring thresholds.

Rates are by cohort: chargebacks of the payments approved in the report window, over those approved
payments, by count and by EUR amount. Card schemes measure a calendar month (Mastercard: this month's
chargebacks over last month's sales), so run the report one month at a time (``--from``/``--to``) to
line the figures up with theirs. The default thresholds are the schemes' published programme levels;
the sources are cited in ``docs/reporting.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from payroute.reporting.frames import MONEY_SCALE, ReportData

Level = Literal["psp", "merchant_id"]


class MonitoringProgramme(BaseModel):
    """One programme level: flagged when the ratio reaches ``ratio`` with at least ``min_count`` chargebacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    level: Level
    ratio: Annotated[float, Field(gt=0, lt=1)]
    min_count: Annotated[int, Field(ge=0)] = 0
    amount_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    source: str = ""


class MonitoringThresholds(BaseModel):
    """The programmes to check, and how close to a threshold counts as *nearing* it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    programmes: tuple[MonitoringProgramme, ...]
    warn_fraction: Annotated[float, Field(gt=0, le=1)] = 0.75


DEFAULT_THRESHOLDS = MonitoringThresholds(
    programmes=(
        MonitoringProgramme(
            name="visa_vamp_acquirer_above_standard", level="psp", ratio=0.005,
            source="Visa Acquirer Monitoring Program (VAMP, from 2025): acquirer portfolio Above Standard, ratio >= 50 bps",
        ),
        MonitoringProgramme(
            name="visa_vamp_acquirer_excessive", level="psp", ratio=0.007,
            source="Visa VAMP (from 2025): acquirer portfolio Excessive, ratio >= 70 bps",
        ),
        MonitoringProgramme(
            name="visa_vamp_merchant_excessive", level="merchant_id", ratio=0.015, min_count=1500,
            source="Visa VAMP: Excessive merchant, ratio >= 150 bps (220 bps until the 2026 step-down) and >= 1,500 fraud + disputes a month",
        ),
        MonitoringProgramme(
            name="mastercard_cmm", level="merchant_id", ratio=0.01, min_count=100,
            source="Mastercard Excessive Chargeback Program: Chargeback-Monitored Merchant, >= 100 bps and >= 100 chargebacks a month",
        ),
        MonitoringProgramme(
            name="mastercard_ecm", level="merchant_id", ratio=0.015, min_count=100,
            source="Mastercard ECP: Excessive Chargeback Merchant, >= 150 bps and >= 100 chargebacks a month",
        ),
        MonitoringProgramme(
            name="mastercard_hecm", level="merchant_id", ratio=0.03, min_count=300,
            source="Mastercard ECP: High Excessive Chargeback Merchant, >= 300 bps and >= 300 chargebacks a month",
        ),
    )
)


def load_thresholds(path: str | Path | None) -> MonitoringThresholds:
    """Thresholds from a YAML file (same fields as :class:`MonitoringThresholds`); defaults without one."""
    if path is None:
        return DEFAULT_THRESHOLDS
    return MonitoringThresholds.model_validate(yaml.safe_load(Path(path).read_text()))


def chargeback_rates(data: ReportData, level: Level) -> pd.DataFrame:
    """Approved payments and their chargebacks per ``level`` (approving PSP or merchant), count and EUR."""
    approved = data.payments.loc[data.payments["approved"]]
    key = "approving_psp" if level == "psp" else level
    base = approved.groupby(key).agg(approved_payments=("id", "size"), approved_volume_u=("amount_eur_u", "sum"))
    disputes = data.chargebacks.groupby(level).agg(chargebacks=("transaction_id", "size"), chargeback_u=("amount_eur_u", "sum"))
    table = base.join(disputes, how="outer").fillna(0)
    table.index.name = level
    return pd.DataFrame(
        {
            "approved_payments": table["approved_payments"].astype("int64"),
            "approved_volume_eur": table["approved_volume_u"] / MONEY_SCALE,
            "chargebacks": table["chargebacks"].astype("int64"),
            "chargeback_amount_eur": table["chargeback_u"] / MONEY_SCALE,
            "chargeback_rate_count": table["chargebacks"] / table["approved_payments"].where(table["approved_payments"] > 0),
            "chargeback_rate_amount": table["chargeback_u"] / table["approved_volume_u"].where(table["approved_volume_u"] > 0),
        }
    ).reset_index()


def flag(rates: pd.DataFrame, level: Level, thresholds: MonitoringThresholds) -> pd.DataFrame:
    """Add ``status`` (ok / nearing / breach), the programme behind it and the headroom to its threshold.

    *breach*: a programme's ratio reached by count (or by amount, when it sets one) with at least its
    minimum count of chargebacks. *nearing*: a ratio at ``warn_fraction`` of a threshold or more, any
    count (a small merchant nearing a ratio is worth a look before it grows).
    """
    programmes = [p for p in thresholds.programmes if p.level == level]
    status = np.full(len(rates), "ok", dtype=object)
    programme = np.full(len(rates), "", dtype=object)
    headroom = np.full(len(rates), np.nan)
    rank = {"ok": 0, "nearing": 1, "breach": 2}
    count_ratio = rates["chargeback_rate_count"].fillna(0).to_numpy()
    amount_ratio = rates["chargeback_rate_amount"].fillna(0).to_numpy()
    count = rates["chargebacks"].to_numpy()
    for p in sorted(programmes, key=lambda p: p.ratio):
        over = count_ratio / p.ratio
        if p.amount_ratio is not None:
            over = np.maximum(over, amount_ratio / p.amount_ratio)
        level_status = np.where((over >= 1) & (count >= p.min_count), "breach",
                                np.where(over >= thresholds.warn_fraction, "nearing", "ok"))
        # Programmes run from the lowest ratio up: the most severe one reached names the status.
        worse = np.array([s != "ok" and rank[s] >= rank[t] for s, t in zip(level_status, status)], bool)
        status[worse] = level_status[worse]
        programme[worse] = p.name
        headroom = np.where(np.isnan(headroom), p.ratio - count_ratio, headroom)
    return rates.assign(status=status, programme=programme, headroom_to_lowest_threshold=headroom)


def chargeback_monitoring(data: ReportData, level: Level, thresholds: MonitoringThresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """:func:`chargeback_rates` flagged against ``thresholds``."""
    return flag(chargeback_rates(data, level), level, thresholds)
