"""The whole loop on embedded defaults: simulated traffic → dispatcher → scoring service → sandbox PSPs,
with injected faults and an outage of the busiest PSP midway. Prints approval (first attempt and
final), attempts per transaction, cost, and each PSP's share of first attempts before, during and
after the outage.

The scoring service is started as a child process on the champion in --models-dir; when there is none,
the service trains its default model there first (as ``payroute serve`` does; a few minutes, once), or
with --no-train starts degraded (static ranking). With --no-service the dispatcher uses the catalogue's
static order and says so. The service and all its workers are killed before the demo returns.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--txns", type=int, default=3000, help="transactions (default 3000)")
    parser.add_argument("--days", type=float, default=2.0, help="simulated horizon in days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=24)
    parser.add_argument("--no-service", action="store_true", help="static order only (no scoring service)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="champion bundle for the service")
    parser.add_argument("--no-train", action="store_true", help="no champion: start the service degraded, do not train")
    parser.add_argument("--kill-service", action="store_true", help="kill the service at 30%% and restart it at 50%%")
    parser.add_argument("--workdir", type=Path, default=None, help="keep state here (default: a temporary folder)")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from payroute.serving.dispatch.scenario import Scenario, format_summary, run_scenario
    from payroute.serving.dispatch.service_process import ServiceProcess

    scenario = Scenario(n_transactions=args.txns, days=args.days, seed=args.seed, workers=args.workers,
                        use_service=not args.no_service, kill_service=args.kill_service and not args.no_service,
                        models_dir=args.models_dir, train_model=not args.no_train)
    if scenario.use_service and scenario.train_model and not ServiceProcess(Path("."), args.models_dir).has_model:
        print(f"payroute demo: no champion in {args.models_dir}: the service trains its default model there first",
              flush=True)
    with tempfile.TemporaryDirectory(prefix="payroute-demo-") as tmp:
        report = run_scenario(scenario, args.workdir or Path(tmp))
    print(format_summary(report))
    return 0
