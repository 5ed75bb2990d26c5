"""Training time on ~1M simulated attempts: simulate (not timed as training), build features, train +
calibrate + evaluate, log + register + gate + export.

    .venv/bin/python benchmarks/bench_training.py [--attempts 1000000] [--threads 1] [--out DIR]

Prints stage timings and writes ``DIR/bench_training.json``. The MLflow store is a fresh SQLite file in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=1_000_000, help="target number of attempts (approximate)")
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from payroute.simulator import SimulationConfig, simulate_history, write_history
    from payroute.training.pipeline import TrainingConfig
    from payroute.training.tracking import default_tracking_uri
    from payroute.training.workflow import train_from_history

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-training-"))
    out.mkdir(parents=True, exist_ok=True)
    history_dir = out / "history"
    started = time.perf_counter()
    if not (history_dir / "attempts.parquet").exists():
        # Attempts per transaction is about 1.2 with the default cascade; a 20k pilot measures it.
        pilot = simulate_history(SimulationConfig(n_transactions=20_000, days=args.days), seed=args.seed)
        per_transaction = len(pilot.attempts) / len(pilot.transactions)
        n_transactions = int(args.attempts / per_transaction)
        history = simulate_history(SimulationConfig(n_transactions=n_transactions, days=args.days), seed=args.seed, progress=True)
        write_history(history, history_dir, history.world.catalog)
        del history
    simulate_seconds = time.perf_counter() - started

    cpu_started = time.process_time()
    report = train_from_history(
        history_dir,
        tracking_uri=default_tracking_uri(out),
        models_dir=out / "models",
        config=TrainingConfig(seed=args.seed, num_threads=args.threads, progress=True),
    )
    cpu_seconds = time.process_time() - cpu_started  # this process only: comparable on a busy machine
    result = {
        "attempts": sum(report.result.row_counts.values()),
        "threads": args.threads,
        "simulate_seconds": round(simulate_seconds, 1),
        "stage_seconds": {k: round(v, 1) for k, v in report.seconds.items()},
        "total_training_seconds": round(sum(report.seconds.values()), 1),
        "training_cpu_seconds": round(cpu_seconds, 1),
        "best_iteration": report.result.approval.best_iteration,
        "test_auc": report.result.metrics["test_auc"],
        "test_log_loss": report.result.metrics["test_log_loss"],
        "test_ece": report.result.metrics["test_ece"],
        "baseline_segment_log_loss": report.result.metrics["baseline_segment_log_loss"],
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }
    (out / "bench_training.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
