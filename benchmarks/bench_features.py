"""Feature pipeline benchmark: offline build throughput and peak memory, online update/lookup latency.

    .venv/bin/python benchmarks/bench_features.py [--attempts 1000000] [--source simulator|synthetic]

Prints figures; targets (2-core machine): offline ≥ 200,000 attempts/s, peak memory < 2 GB on 1M
attempts, online lookup for 8 PSPs p99 < 200 µs. Offline build runs in a child process so its peak
RSS is measured alone (history generation excluded: the history is written to Parquet first).
Wall-clock figures depend on what else runs on the machine, so the load average is printed with them,
and the lookup's thread CPU time (which excludes time preempted by other processes) beside it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def make_history(n_attempts: int, source: str, directory: Path, seed: int) -> int:
    from payroute.catalog import load_catalog
    from payroute.history import write_table

    catalog = load_catalog()
    if source == "simulator":
        from payroute.simulator import SimulationConfig, simulate_history

        history = simulate_history(SimulationConfig(n_transactions=int(n_attempts / 1.08), days=30), catalog, seed=seed)
    else:
        from payroute.features.synthetic import synthetic_history

        history = synthetic_history(catalog, int(n_attempts / 2.0), days=30, seed=seed)
    attempts = history.attempts.sort_values("timestamp", kind="stable").head(n_attempts)
    write_table(history.transactions, "transactions", directory)
    write_table(attempts, "attempts", directory)
    write_table(history.chargebacks, "chargebacks", directory)
    return len(attempts)


def offline_child(directory: str, queue) -> None:
    from payroute.catalog import load_catalog
    from payroute.features import build_training_table
    from payroute.history import read_history

    history = read_history(directory)
    catalog = load_catalog()
    with open("/proc/self/statm") as statm:
        resident_mb = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    read_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu = time.perf_counter(), time.process_time()
    table = build_training_table(history, catalog)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((len(table), seconds, cpu, resident_mb, read_peak, peak_rss))


def bench_online(directory: str, n_lookups: int, seed: int) -> dict[str, float]:
    from payroute.catalog import load_catalog
    from payroute.features import OnlineFeatureStore
    from payroute.history import read_history

    catalog = load_catalog()
    history = read_history(directory)
    transactions = history.transactions.set_index("id", drop=False)
    attempts = history.attempts.sort_values("timestamp", kind="stable").head(200_000)
    store = OnlineFeatureStore(catalog)
    records = attempts.to_dict("records")
    tx_records = {tx_id: row for tx_id, row in zip(transactions.index, transactions.to_dict("records"))}
    update_ns = np.empty(len(records))
    for i, outcome in enumerate(records):
        transaction = tx_records[outcome["transaction_id"]]
        start = time.perf_counter_ns()
        store.update(outcome, transaction)
        update_ns[i] = time.perf_counter_ns() - start
    psps = list(catalog.psp_names)[:8]
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(records), n_lookups)
    at = records[-1]["timestamp"]
    lookup_ns = np.empty(n_lookups)
    lookup_cpu_ns = np.empty(n_lookups)
    frame_ns = np.empty(min(n_lookups, 2000))
    for i, j in enumerate(sample):
        transaction = tx_records[records[j]["transaction_id"]]
        start, cpu = time.perf_counter_ns(), time.thread_time_ns()
        store.features_array(transaction, psps, at=at)
        lookup_ns[i], lookup_cpu_ns[i] = time.perf_counter_ns() - start, time.thread_time_ns() - cpu
    for i, j in enumerate(sample[: len(frame_ns)]):
        transaction = tx_records[records[j]["transaction_id"]]
        start = time.perf_counter_ns()
        store.features(transaction, psps, at=at)
        frame_ns[i] = time.perf_counter_ns() - start
    return {
        "updates": len(records),
        "update_median_us": np.median(update_ns) / 1e3,
        "update_p99_us": np.percentile(update_ns, 99) / 1e3,
        "lookup_median_us": np.median(lookup_ns) / 1e3,
        "lookup_p99_us": np.percentile(lookup_ns, 99) / 1e3,
        "lookup_cpu_median_us": np.median(lookup_cpu_ns) / 1e3,
        "lookup_cpu_p99_us": np.percentile(lookup_cpu_ns, 99) / 1e3,
        "frame_median_us": np.median(frame_ns) / 1e3,
        "frame_p99_us": np.percentile(frame_ns, 99) / 1e3,
        "keys": len(store.backend),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000)
    parser.add_argument("--source", choices=["simulator", "synthetic"], default="simulator")
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--history", type=Path, help="reuse (or create) the history in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        load_before = os.getloadavg()
        directory = str(args.history or scratch)
        if args.history and (args.history / "attempts.parquet").exists():
            import pyarrow.parquet as pq

            n = pq.read_metadata(args.history / "attempts.parquet").num_rows
        else:
            Path(directory).mkdir(parents=True, exist_ok=True)
            n = make_history(args.attempts, args.source, Path(directory), args.seed)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=offline_child, args=(directory, queue))
        child.start()
        rows, seconds, cpu, resident_mb, read_peak, peak_mb = queue.get()
        child.join()
        print(f"machine: {os.cpu_count()} cores, load average before the run {load_before}")
        print(f"offline: {rows:,} attempts ({args.source}) in {seconds:.2f} s wall = {rows / seconds:,.0f} attempts/s "
              f"(target >= 200,000); process CPU {cpu:.2f} s")
        print(f"offline memory: peak RSS {peak_mb:,.0f} MB (target < 2048 MB); before the build {resident_mb:,.0f} MB "
              f"resident with the history loaded, {read_peak:,.0f} MB peak while reading Parquet")
        online = bench_online(directory, args.lookups, args.seed)
        print(f"online update ({online['updates']:,} outcomes, {online['keys']:,} keys): "
              f"median {online['update_median_us']:.1f} us, p99 {online['update_p99_us']:.1f} us")
        print(f"online lookup, 8 PSPs, matrix: median {online['lookup_median_us']:.1f} us, "
              f"p99 {online['lookup_p99_us']:.1f} us (target p99 < 200 us); thread CPU time median "
              f"{online['lookup_cpu_median_us']:.1f} us, p99 {online['lookup_cpu_p99_us']:.1f} us")
        print(f"machine load average after the run {os.getloadavg()}")
        print(f"online lookup, 8 PSPs, DataFrame: median {online['frame_median_us']:.1f} us, "
              f"p99 {online['frame_p99_us']:.1f} us")
        assert n == rows


if __name__ == "__main__":
    main()
