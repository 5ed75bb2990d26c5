"""Assemble the operations report: every table from :class:`ReportData`, then write HTML and CSVs.

:func:`build_report` is what the CLI, the notebook and the benchmark call; it returns plain frames so a
notebook can show, filter or plot any of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from payroute.catalog import Catalog

from payroute.reporting.chargebacks import DEFAULT_THRESHOLDS, MonitoringThresholds, chargeback_monitoring
from payroute.reporting.costs import cost_by_psp, savings_by_psp
from payroute.reporting.frames import DIMENSIONS, ReportData
from payroute.reporting.kpis import approval_kpis, overall_kpis, payout_kpis
from payroute.reporting.routing import incident_windows, service_views, traffic_share


@dataclass(frozen=True)
class Report:
    """Named tables (insertion order is the page's order), plus what the page needs to describe itself."""

    tables: dict[str, pd.DataFrame]
    traffic: pd.DataFrame
    psps: tuple[str, ...]
    start: dt.datetime | None
    end: dt.datetime | None
    catalog_version: str
    thresholds: MonitoringThresholds = field(default=DEFAULT_THRESHOLDS)


def build_report(data: ReportData, catalog: Catalog, thresholds: MonitoringThresholds = DEFAULT_THRESHOLDS) -> Report:
    """Every table of the report from prepared data."""
    tables: dict[str, pd.DataFrame] = {"overall": overall_kpis(data)}
    for dimension in DIMENSIONS:
        tables[f"approval_by_{dimension}"] = approval_kpis(data, dimension)
    tables["cost_by_psp"] = cost_by_psp(data)
    tables["saving_vs_cheapest_eligible"] = savings_by_psp(data, catalog)
    tables["chargebacks_by_psp"] = chargeback_monitoring(data, "psp", thresholds)
    tables["chargebacks_by_merchant"] = chargeback_monitoring(data, "merchant_id", thresholds)
    tables["payouts"] = payout_kpis(data)
    tables["incidents"] = incident_windows(data)
    tables.update(service_views(data))
    psps = tuple(sorted(set(data.attempts["psp"].unique())))
    return Report(
        tables=tables,
        traffic=traffic_share(data),
        psps=psps,
        start=data.start,
        end=data.end,
        catalog_version=catalog.version,
        thresholds=thresholds,
    )


def write_tables(report: Report, directory: str | Path) -> list[Path]:
    """One CSV per table (and the hourly traffic share) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in report.tables.items():
        path = directory / f"{name}.csv"
        table.to_csv(path, index=False)
        paths.append(path)
    path = directory / "traffic_share_hourly.csv"
    report.traffic.to_csv(path)
    paths.append(path)
    return paths


def write_report(report: Report, out: str | Path) -> list[Path]:
    """Write ``out`` (self-contained HTML) and its tables in ``<out stem>_tables/`` beside it."""
    from payroute.reporting.render import render_html

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return [out, *write_tables(report, out.parent / f"{out.stem}_tables")]
