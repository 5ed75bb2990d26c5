"""Benchmark: `payroute report` over about 1M attempts (target: under 30 s on the 2-core machine).

Simulates a history with the simulator (seeded; cached in the work folder between runs), then times
reading + preparing, building every table, and writing the HTML page and CSVs. Prints the figures.

    .venv/bin/python benchmarks/bench_report.py [--attempts 1000000] [--workdir /tmp/payroute-bench-report]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

TARGET_SECONDS = 30.0
ATTEMPTS_PER_TRANSACTION = 1.117  # the simulator's default 30-day history, measured


def simulated_history(directory: Path, attempts: int, seed: int) -> Path:
    from payroute.simulator.config import SimulationConfig
    from payroute.simulator.history import simulate_history, write_history

    config = SimulationConfig(n_transactions=int(attempts / ATTEMPTS_PER_TRANSACTION), days=30)
    marker = directory / f"transactions-{config.n_transactions}-seed-{seed}.done"
    if marker.exists():
        return directory
    for stale in directory.glob("*.done"):
        stale.unlink()
    began = time.perf_counter()
    write_history(simulate_history(config, seed=seed), directory)
    print(f"simulated {config.n_transactions:,} transactions in {time.perf_counter() - began:.1f} s (not timed)")
    marker.touch()
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/payroute-bench-report")
    args = parser.parse_args()

    from payroute.catalog import load_catalog
    from payroute.reporting.frames import catalog_path, load
    from payroute.reporting.report import build_report, write_report

    workdir = Path(args.workdir)
    history = simulated_history(workdir / "history", args.attempts, args.seed)
    catalog = load_catalog(catalog_path(None, history))

    cpu_began = time.process_time()
    began = time.perf_counter()
    data = load(history, catalog)
    loaded = time.perf_counter()
    report = build_report(data, catalog)
    built = time.perf_counter()
    write_report(report, workdir / "report.html")
    written = time.perf_counter()

    total = written - began
    cpu = time.process_time() - cpu_began
    print(f"machine: {os.cpu_count()} CPUs")
    print(f"history: {len(data.payments):,} payments, {len(data.attempts):,} attempts, {len(data.chargebacks):,} chargebacks")
    print(f"read + prepare : {loaded - began:6.2f} s")
    print(f"build tables   : {built - loaded:6.2f} s")
    print(f"write HTML+CSV : {written - built:6.2f} s")
    print(f"total          : {total:6.2f} s  (target < {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'MISSED'})")
    print(f"CPU time       : {cpu:6.2f} s  (wall time is inflated when other jobs share the 2 cores)")
    print(f"load average   : {os.getloadavg()[0]:.1f}")
    print(f"throughput     : {len(data.attempts) / total:,.0f} attempts/s")


if __name__ == "__main__":
    main()
