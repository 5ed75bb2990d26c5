"""Consolidated operations report: approval, conversion, cost, chargebacks, payouts and routing.

Writes one self-contained HTML page (plots embedded, opens without network) and the tables as CSV in
``<page stem>_tables/`` beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", required=True, help="history folder (transactions/attempts/chargebacks Parquet)")
    parser.add_argument("--from", dest="start", type=dt.date.fromisoformat, help="first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--to", dest="end", type=dt.date.fromisoformat, help="last day, inclusive (YYYY-MM-DD)")
    parser.add_argument("--out", default="report.html", help="HTML page to write (default: report.html)")
    parser.add_argument("--catalog", help="PSP catalogue YAML (default: the history's catalog.yaml, else the embedded one)")
    parser.add_argument("--thresholds", help="chargeback monitoring thresholds YAML (default: scheme programmes)")


def run(args: argparse.Namespace) -> int:
    from payroute.catalog import load_catalog
    from payroute.history import HistoryError
    from payroute.reporting.chargebacks import load_thresholds
    from payroute.reporting.frames import catalog_path, load
    from payroute.reporting.report import build_report, write_report

    began = time.perf_counter()
    catalog = load_catalog(catalog_path(args.catalog, args.history))
    try:
        data = load(args.history, catalog, args.start, args.end)
    except HistoryError as error:
        print(f"payroute report: {error}", file=sys.stderr)
        return 2
    if data.payments.empty:
        print("payroute report: no transactions in the window", file=sys.stderr)
        return 1
    report = build_report(data, catalog, load_thresholds(args.thresholds))
    paths = write_report(report, args.out)
    print(
        f"report: {len(data.payments):,} payments, {len(data.attempts):,} attempts, "
        f"{len(report.psps)} PSPs -> {paths[0]} (+{len(paths) - 1} tables in {paths[1].parent}) "
        f"in {time.perf_counter() - began:.1f} s"
    )
    return 0
