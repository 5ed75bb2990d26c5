"""Start the BentoML scoring service (POST /rank, /rank_batch, /feedback; GET /status, /readyz, /metrics).

With no champion in --models-dir (and no --tracking-uri), a default model is trained first on simulated
history (``payroute simulate`` + ``payroute train``); if that is impossible the service starts degraded
(static priority order) and says so. The /feedback API key is read from PAYROUTE_API_KEYS /
PAYROUTE_API_KEYS_FILE or, when neither is set, generated once into STATE_DIR/api_key.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

SERVICE_IMPORT = "payroute.serving.service:PayrouteService"
BOOTSTRAP_TXNS = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="champion bundle folder (default models/)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow registry with payroute@champion (instead of --models-dir)")
    parser.add_argument("--state-dir", type=Path, default=Path("state"), help="outcome log, decisions, snapshots (default state/)")
    parser.add_argument("--catalog", type=Path, default=None, help="PSP catalogue YAML (default: embedded)")
    parser.add_argument("--history", type=Path, default=None, help="history to train the default model on, if none exists")
    parser.add_argument("--rank-requires-key", action="store_true", help="require X-API-Key on /rank too")
    parser.add_argument("--max-concurrency", type=int, default=None, help="in-flight requests before 429 (default 64)")
    parser.add_argument("--no-train", action="store_true", help="never train a default model; start degraded instead")
    parser.add_argument("--decision-retention-days", type=float, default=None,
                        help="forget decisions older than this (default 30; 0 keeps all)")
    parser.add_argument("--trace-requests", action="store_true",
                        help="OpenTelemetry spans for /rank, /rank_batch and /feedback too (≈ 0.3 ms of CPU each; "
                             "for when traces are exported)")


def has_champion(models_dir: Path) -> bool:
    from payroute.serving.predictor import bundle_folder

    return (bundle_folder(models_dir) / "manifest.json").is_file()


def unservable_reason(models_dir: Path) -> str | None:
    """Why the champion in ``models_dir`` cannot be served (unreadable, corrupt, or trained under a feature
    spec this code no longer computes), or None when it can."""
    from payroute.serving.predictor import ModelSource

    try:
        ModelSource(models_dir=models_dir).load()
    except Exception as error:  # BundleError and anything a broken bundle raises
        return str(error)
    return None


def ensure_api_key(state_dir: Path, environ: dict[str, str]) -> Path | None:
    """When no key is configured, create one in ``state_dir/api_key`` (mode 600) and point the service at it."""
    if environ.get("PAYROUTE_API_KEYS") or environ.get("PAYROUTE_API_KEYS_FILE"):
        return None
    path = state_dir / "api_key"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    environ["PAYROUTE_API_KEYS_FILE"] = str(path.resolve())
    return path


def bootstrap_model(args: argparse.Namespace) -> str:
    """Train a default champion on (simulated) history; returns what happened, for the start-up message."""
    from payroute.cli import _available, main

    commands = _available()
    if "train" not in commands:
        return "no training stage installed: starting degraded (static priority order)"
    history = args.history
    if history is None or not (history / "attempts.parquet").exists():
        if "simulate" not in commands:
            return "no history and no simulator: starting degraded (static priority order)"
        history = args.state_dir / "bootstrap-history"
        if not (history / "attempts.parquet").exists():
            print(f"payroute serve: simulating {BOOTSTRAP_TXNS} transactions into {history}", flush=True)
            main(["simulate", "--txns", str(BOOTSTRAP_TXNS), "--days", "14", "--seed", "7", "--out", str(history), "--quiet"])
    print(f"payroute serve: training a default model on {history}", flush=True)
    try:
        code = main(["train", "--history", str(history), "--models-dir", str(args.models_dir), "--no-progress"])
    except Exception as error:  # start anyway: fail-open is the service's contract
        return f"default model training failed ({error}): starting degraded"
    if code:
        return f"default model training exited with {code}: starting degraded"
    if not has_champion(args.models_dir):
        return "no champion exported: starting degraded"
    reason = unservable_reason(args.models_dir)
    return "trained a default model" if reason is None else f"the champion still cannot be served ({reason}): starting degraded"


def service_environment(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, str]:
    env = dict(environ)
    env["PAYROUTE_STATE_DIR"] = str(args.state_dir.resolve())
    if args.tracking_uri:
        env["PAYROUTE_TRACKING_URI"] = args.tracking_uri
    else:
        env["PAYROUTE_MODELS_DIR"] = str(args.models_dir.resolve())
    if args.catalog is not None:
        env["PAYROUTE_CATALOG"] = str(args.catalog.resolve())
    if args.rank_requires_key:
        env["PAYROUTE_RANK_REQUIRES_KEY"] = "1"
    if args.max_concurrency is not None:
        env["PAYROUTE_MAX_CONCURRENCY"] = str(args.max_concurrency)
    if getattr(args, "decision_retention_days", None) is not None:
        env["PAYROUTE_DECISION_RETENTION_DAYS"] = str(args.decision_retention_days)
    if getattr(args, "trace_requests", False):
        env["PAYROUTE_TRACE_REQUESTS"] = "1"
    return env


def run(args: argparse.Namespace) -> int:
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if not args.tracking_uri and not has_champion(args.models_dir):
        note = "no champion and --no-train: starting degraded" if args.no_train else bootstrap_model(args)
        print(f"payroute serve: {note}", flush=True)
    elif not args.tracking_uri and (reason := unservable_reason(args.models_dir)) is not None:
        print(f"payroute serve: the champion in {args.models_dir} cannot be served: {reason}", flush=True)
        note = "--no-train: starting degraded" if args.no_train else bootstrap_model(args)
        print(f"payroute serve: {note}", flush=True)
    env = service_environment(args, dict(os.environ))
    key_file = ensure_api_key(args.state_dir, env)
    if key_file is not None:
        print(f"payroute serve: /feedback API key in {key_file}", flush=True)
    print(f"payroute serve: http://{args.host}:{args.port} (state in {args.state_dir})", flush=True)
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE_IMPORT, "--host", args.host, "--port", str(args.port)]
    os.execve(sys.executable, command, env)  # the server replaces this process: signals reach it directly
    return 0  # not reached
