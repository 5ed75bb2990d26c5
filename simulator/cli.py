"""Simulate payment history: DIR/transactions.parquet, attempts.parquet, chargebacks.parquet, catalog.yaml.

The history is routed by an exploring logging policy whose propensities are recorded, so it serves
training and off-policy evaluation alike. The truth (every eligible PSP's approval probability at the
first attempt) goes to DIR/truth/true_approval.parquet.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--txns", type=int, default=100_000, help="number of transactions (default 100000)")
    parser.add_argument("--days", type=float, default=30.0, help="horizon in days (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--catalog", default=None, help="PSP catalogue YAML (default: the embedded one)")
    parser.add_argument("--incidents", choices=("default", "none"), default="default",
                        help="scheduled PSP incidents: the default schedule or none")
    parser.add_argument("--max-attempts", type=int, default=3, help="cascade length (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def run(args: argparse.Namespace) -> int:
    import time

    from payroute.catalog import load_catalog
    from payroute.simulator.config import SimulationConfig
    from payroute.simulator.history import approval_summary, simulate_history, write_history

    if args.txns < 1:
        raise SystemExit("payroute simulate: --txns must be at least 1")
    catalog = load_catalog(args.catalog)
    config = SimulationConfig(
        n_transactions=args.txns,
        days=args.days,
        incidents=() if args.incidents == "none" else None,
        max_attempts=args.max_attempts,
    )
    began = time.perf_counter()
    history = simulate_history(config, catalog, seed=args.seed, progress=not args.quiet)
    paths = write_history(history, args.out, catalog)
    elapsed = time.perf_counter() - began
    if not args.quiet:
        print(
            f"wrote {len(history.transactions):,} transactions, {len(history.attempts):,} attempts, "
            f"{len(history.chargebacks):,} chargebacks to {paths['attempts'].parent} in {elapsed:.1f} s"
        )
        summary = approval_summary(history.attempts)
        print("approval rate by PSP (all attempts):")
        for psp, row in summary.iterrows():
            print(f"  {psp:<14} {int(row['attempts']):>10,} attempts  {row['approval_rate']:6.1%}")
    return 0
