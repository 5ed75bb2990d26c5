"""Feature pipeline benchmark: offline build throughput and peak memory, online update/lookup latency.

    .venv/bin/python benchmarks/bench_features.py [--attempts 1000000] [--source simulator|synthetic]

Prints figures; targets (2-core machine): offline ≥ 200,000 attempts/s, peak memory < 2 GB on 1M
attempts, online lookup for 8 PSPs p99 < 200 µs. Offline build runs in a child process so its peak
RSS is measured alone (history generation excluded: the history is written to Parquet first).
"""

from __future__ import annotations

import argparse
import multiprocessing
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

        n_transactions = int(n_attempts / 1.35)
        history = simulate_history(SimulationConfig(n_transactions=n_transactions, days=30), catalog, seed=seed)
    else:
        from payroute.features.synthetic import synthetic_history

        history = synthetic_history(catalog, int(n_attempts / 2.0), days=30, seed=seed)
    write_table(history.transactions, "transactions", directory)
    write_table(history.attempts, "attempts", directory)
    write_table(history.chargebacks, "chargebacks", directory)
    return len(history.attempts)


def offline_child(directory: str, queue) -> None:
    from payroute.catalog import load_catalog
    from payroute.features import build_training_table
    from payroute.history import read_history

    history = read_history(directory)
    catalog = load_catalog()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    table = build_training_table(history, catalog)
    seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((len(table), seconds, base_rss / 1024, peak_rss / 1024))


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
    frame_ns = np.empty(min(n_lookups, 2000))
    for i, j in enumerate(sample):
        transaction = tx_records[records[j]["transaction_id"]]
        start = time.perf_counter_ns()
        store.features_array(transaction, psps, at=at)
        lookup_ns[i] = time.perf_counter_ns() - start
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        n = make_history(args.attempts, args.source, Path(directory), args.seed)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(target=offline_child, args=(directory, queue))
        child.start()
        rows, seconds, base_mb, peak_mb = queue.get()
        child.join()
        print(f"offline: {rows:,} attempts ({args.source}) in {seconds:.2f} s = {rows / seconds:,.0f} attempts/s "
              f"(target >= 200,000); peak RSS {peak_mb:,.0f} MB (history loaded: {base_mb:,.0f} MB; target < 2048 MB)")
        online = bench_online(directory, args.lookups, args.seed)
        print(f"online update ({online['updates']:,} outcomes, {online['keys']:,} keys): "
              f"median {online['update_median_us']:.1f} us, p99 {online['update_p99_us']:.1f} us")
        print(f"online lookup, 8 PSPs, matrix: median {online['lookup_median_us']:.1f} us, "
              f"p99 {online['lookup_p99_us']:.1f} us (target p99 < 200 us)")
        print(f"online lookup, 8 PSPs, DataFrame: median {online['frame_median_us']:.1f} us, "
              f"p99 {online['frame_p99_us']:.1f} us")
        assert n == rows


if __name__ == "__main__":
    main()
