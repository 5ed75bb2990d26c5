"""Train, evaluate and register the approval and cost models from a history folder.

Builds the point-in-time training table through payroute.features, splits it by time, trains the
calibrated LightGBM approval model and the learned cost heads, logs everything to MLflow (default: an
embedded SQLite store ./mlflow.db with artifacts in ./mlartifacts), registers a `payroute` version, moves
the `champion` alias only if the promotion gate passes, and exports the champion to MODELS_DIR/champion.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", required=True, type=Path, help="history folder (transactions/attempts/chargebacks.parquet)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///./mlflow.db)")
    parser.add_argument("--sample", type=int, default=None, help="train on N transactions drawn at random (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and LightGBM (default 0)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="where the champion bundle is exported")
    parser.add_argument("--catalog", type=Path, default=None, help="catalogue YAML (default: HISTORY/catalog.yaml or embedded)")
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (default 1; fixed for reproducibility)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from payroute.training.pipeline import TrainingConfig
    from payroute.training.tracking import default_tracking_uri
    from payroute.training.workflow import train_from_history

    tracking_uri = args.tracking_uri or default_tracking_uri(Path.cwd())
    config = TrainingConfig(seed=args.seed, num_threads=args.threads, progress=not args.no_progress)
    report = train_from_history(
        args.history,
        tracking_uri=tracking_uri,
        models_dir=args.models_dir,
        catalog_path=args.catalog,
        sample=args.sample,
        config=config,
    )
    metrics, outcome = report.result.metrics, report.outcome
    print(f"run {outcome.run_id} -> payroute version {outcome.version} ({tracking_uri})")
    print(
        f"test: AUC {metrics['test_auc']:.4f}  log loss {metrics['test_log_loss']:.4f}  ECE {metrics['test_ece']:.4f}  "
        f"| segment baseline: AUC {metrics['baseline_segment_auc']:.4f}  log loss {metrics['baseline_segment_log_loss']:.4f}"
    )
    print(f"promotion: {'promoted' if outcome.decision.promote else 'refused'} ({outcome.decision.reason}); champion = version {outcome.champion_version}")
    if outcome.exported_to is not None:
        print(f"champion exported to {outcome.exported_to}")
    return 0
