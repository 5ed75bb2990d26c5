"""Benchmark: how fast the simulator produces and writes history (target: 1M attempts in < 60 s).

    python benchmarks/bench_simulate.py [--txns 900000] [--days 30] [--seed 0]

Prints seconds per phase, attempts per second, and the extrapolated wall-clock and CPU seconds for one
million attempts (simulation + Parquet writing of all files, truth included).
"""

from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txns", type=int, default=900_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from payroute.catalog import load_catalog
    from payroute.simulator import SimulationConfig, simulate_history, write_history

    catalog = load_catalog()
    config = SimulationConfig(n_transactions=args.txns, days=args.days)
    began, cpu_began = time.perf_counter(), time.process_time()
    history = simulate_history(config, catalog, seed=args.seed)
    simulated = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        write_history(history, directory, catalog)
        written, cpu_written = time.perf_counter(), time.process_time()
    attempts = len(history.attempts)
    total = written - began
    print(f"transactions        {len(history.transactions):>12,}")
    print(f"attempts            {attempts:>12,}")
    print(f"chargebacks         {len(history.chargebacks):>12,}")
    print(f"simulate            {simulated - began:>12.1f} s")
    print(f"write Parquet       {written - simulated:>12.1f} s")
    print(f"total               {total:>12.1f} s")
    print(f"attempts/s          {attempts / total:>12,.0f}")
    print(f"s per 1M attempts   {1e6 * total / attempts:>12.1f} s  (target < 60 s)")
    # CPU time is what the run costs regardless of other load on the machine (all threads counted).
    print(f"CPU s per 1M        {1e6 * (cpu_written - cpu_began) / attempts:>12.1f} s")


if __name__ == "__main__":
    main()
