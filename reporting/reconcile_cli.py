"""Reconcile PSP settlement files (one CSV per PSP) with recorded attempts and the contract fee schedule.

Prints a summary per PSP and kind, writes every discrepancy line (transaction id, amount at stake) to
``--out`` and the observed fee deviations to ``--deviations`` (default: ``<history>/fee_deviations.parquet``,
where the training job's cost model reads them). Unreadable settlement lines are reported with file,
line and field, and the rest is reconciled.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("must be a non-negative number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settlement", required=True, help="folder of settlement CSVs, one per PSP")
    parser.add_argument("--history", required=True, help="history folder (transactions/attempts/chargebacks Parquet)")
    parser.add_argument("--out", default="reconciliation.csv", help="discrepancy lines CSV (summary and errors beside it)")
    parser.add_argument("--tolerance", type=_decimal, default=Decimal("0.01"),
                        help="fee/FX excess allowed per payment, in EUR (default 0.01)")
    parser.add_argument("--tolerance-relative", type=_decimal, default=Decimal(0),
                        help="fee/FX excess allowed as a share of the contract amount (default 0)")
    parser.add_argument("--deviations", help="fee deviations Parquet (default: <history>/fee_deviations.parquet)")
    parser.add_argument("--catalog", help="PSP catalogue YAML (default: the history's catalog.yaml, else the embedded one)")
    parser.add_argument("--fail-on-discrepancy", action="store_true", help="exit 1 when any discrepancy is found")


def run(args: argparse.Namespace) -> int:
    from payroute.catalog import load_catalog
    from payroute.history import HistoryError, read_history
    from payroute.reporting.frames import catalog_path
    from payroute.reporting.reconcile import (
        FEE_DEVIATIONS_FILE, Tolerance, reconcile, write_discrepancies, write_fee_deviations,
    )
    from payroute.reporting.settlement import read_settlements

    catalog = load_catalog(catalog_path(args.catalog, args.history))
    try:
        history = read_history(args.history, money="decimal")
        settlements, errors, files = read_settlements(args.settlement)
    except (HistoryError, FileNotFoundError) as error:
        print(f"payroute reconcile: {error}", file=sys.stderr)
        return 2
    for error in errors:
        print(f"payroute reconcile: skipped {error}", file=sys.stderr)
    result = reconcile(
        settlements, history, catalog,
        tolerance=Tolerance(args.tolerance, args.tolerance_relative), settled_psps=files, errors=errors,
    )
    paths = write_discrepancies(result, args.out)
    deviations = write_fee_deviations(result.fee_deviations, args.deviations or Path(args.history) / FEE_DEVIATIONS_FILE)
    print(f"reconciled {result.settled_rows:,} settlement rows from {len(files)} files; "
          f"{len(result.discrepancies):,} discrepancies, {len(errors)} unreadable lines")
    if not result.summary.empty:
        print(result.summary.to_string(index=False))
    print(f"wrote {', '.join(str(p) for p in paths)} and {deviations}")
    return 1 if args.fail_on_discrepancy and not result.clean else 0
