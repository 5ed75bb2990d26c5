"""Off-policy evaluation: estimate a routing policy's first-attempt approval rate from logged history.

Reads a history folder in the contract (transactions/attempts Parquet with recorded propensities):
simulated history, or the service's event log exported to the same files. The later half of the log
(by time) is evaluated; rules and the DR reward model are fitted on the earlier half. When the folder
holds the simulator's truth (truth/true_approval.parquet) the true value is printed beside the
estimates. ``--validate K`` instead checks the estimators against the simulator over K seeds.
"""

from __future__ import annotations

import argparse

from payroute.evaluation.offpolicy import OPE_POLICIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", choices=OPE_POLICIES, default="rules", help="candidate policy (default rules)")
    parser.add_argument("--logs", help="history folder (transactions.parquet, attempts.parquet)")
    parser.add_argument("--state-dir", help="the service's state folder: its event log is exported to the "
                        "history contract first (into --logs when given, else a temporary folder)")
    parser.add_argument("--estimators", default="ips,snips,dr", help="comma-separated: ips, snips, dr, dm")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--validate", type=int, default=0, metavar="K",
                        help="validate against the simulator's truth over K seeds instead")
    parser.add_argument("--txns", type=int, default=40_000, help="transactions per validation history")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from payroute.catalog import load_catalog
    from payroute.evaluation.offpolicy import (
        TRUTH_FILE,
        evaluate_policy,
        split_logs,
        truth_matrix,
        validate,
        validation_summary,
    )
    from payroute.history import CATALOG_FILE, HistoryError, read_history

    if args.validate:
        summary = validation_summary(validate(range(1, args.validate + 1), args.txns, n_bootstrap=args.bootstrap))
        print(summary.to_json(orient="records", indent=1) if args.json else summary.round(4).to_string(index=False))
        return 0
    if args.state_dir:
        import tempfile

        from payroute.serving.export import export_history

        args.logs = args.logs or tempfile.mkdtemp(prefix="payroute-events-")
        export_history(args.state_dir, args.logs)
    if not args.logs:
        raise SystemExit("payroute evaluate: --logs DIR or --state-dir DIR is required (or --validate K)")
    folder = Path(args.logs)
    try:
        history = read_history(folder)
    except HistoryError as error:
        raise SystemExit(f"payroute evaluate: {error}") from None
    catalog = load_catalog(folder / CATALOG_FILE if (folder / CATALOG_FILE).exists() else None)
    if history.attempts["propensity"].isna().all():
        raise SystemExit("payroute evaluate: the attempts carry no propensities; off-policy evaluation needs them")
    split = split_logs(history.transactions, history.attempts, catalog)
    truth = logging = None
    if (folder / TRUTH_FILE).exists():
        table = pd.read_parquet(folder / TRUTH_FILE)
        truth = truth_matrix(table, split.feedback, "p_approve")
        logging = truth_matrix(table, split.feedback, "propensity") if "propensity" in table else None
    try:
        estimates, value = evaluate_policy(args.policy, split, rng=np.random.default_rng(args.seed),
                                           estimators=tuple(args.estimators.split(",")), truth=truth,
                                           logging=logging, n_bootstrap=args.bootstrap)
    except (ValueError, KeyError) as error:
        raise SystemExit(f"payroute evaluate: {error}") from None
    rows = [{"policy": args.policy, "estimator": e.estimator, "estimate": e.value, "lower": e.lower,
             "upper": e.upper, "ess": e.effective_sample_size, "n": e.n_rounds, "truth": value} for e in estimates]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(pd.DataFrame(rows).round(4).to_string(index=False))
    return 0
