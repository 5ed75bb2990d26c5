"""Compare routing policies on simulated traffic with common random numbers (scenarios × seeds).

Policies: uniform, static, rules, success_rate, thompson, model_greedy, payroute, oracle. The two
model policies train the approval model once per distinct history (the stationary, outage and partial
outage scenarios share one; drift and new PSP have their own): three trainings for all five scenarios.
"""

from __future__ import annotations

import argparse

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from payroute.evaluation.scenarios import SCENARIOS

    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="scenario to run (repeatable; default: all)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per scenario (default 5)")
    parser.add_argument("--seed-offset", type=int, default=0,
                        help="seeds are offset+1 .. offset+SEEDS (default 0: seeds 1..SEEDS); tune on one "
                             "range, report on another")
    parser.add_argument("--txns", type=int, default=20_000, help="transactions per stream (default 20000)")
    parser.add_argument("--policies", default=None, help="comma-separated policies (default: all)")
    parser.add_argument("--no-model", action="store_true", help="skip the model policies (no training)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--out", default=None, help="directory for rows.csv, summary.csv and plots")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI,
                        help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI}); 'none' to skip")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from payroute.catalog import load_catalog
    from payroute.evaluation.bench import ALL_POLICIES, MODEL_POLICIES, BenchSettings, run_bench
    from payroute.evaluation.report import headline_table, log_to_mlflow, write_outputs
    from payroute.evaluation.scenarios import SCENARIOS

    if args.seeds < 1 or args.txns < 100:
        raise SystemExit("payroute bench: --seeds must be >= 1 and --txns >= 100")
    if args.seed_offset < 0:
        raise SystemExit("payroute bench: --seed-offset must be >= 0")
    policies = tuple(args.policies.split(",")) if args.policies else ALL_POLICIES
    unknown = set(policies) - set(ALL_POLICIES)
    if unknown:
        raise SystemExit(f"payroute bench: unknown policies {sorted(unknown)}; expected {ALL_POLICIES}")
    if args.no_model:
        policies = tuple(p for p in policies if p not in MODEL_POLICIES)
    catalog = load_catalog()
    factory = None
    if any(p in MODEL_POLICIES for p in policies):
        from payroute.evaluation.model_policies import ModelPolicies

        factory = ModelPolicies(catalog)
    settings = BenchSettings(n_transactions=args.txns, seeds=tuple(range(args.seed_offset + 1, args.seed_offset + args.seeds + 1)), policies=policies)
    scenarios = args.scenario or list(SCENARIOS)
    rows, summary, results = run_bench(scenarios, settings, catalog, factory,
                                       progress=None if args.quiet else lambda line: print(line, file=sys.stderr))
    if args.out:
        write_outputs(args.out, rows, summary, results)
    if args.tracking_uri.lower() != "none":
        log_to_mlflow(args.tracking_uri, settings, rows, summary, results)
    table = headline_table(summary)
    if args.json:
        json.dump(summary.to_dict("records"), sys.stdout, indent=1, default=float)
        print()
    else:
        print(table.to_string(index=False))
    if factory is not None and not args.quiet:
        print(f"approval models trained: {factory.trained}", file=sys.stderr)
    for result in results.values():
        if result.skipped:
            print(f"{result.scenario}: skipped {', '.join(result.skipped)} (no model)", file=sys.stderr)
    return 0
