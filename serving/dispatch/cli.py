"""Route payments through PSPs with fallback: ranking from the scoring service (static catalogue order
when it is slow or down), idempotent attempts, status inquiry on unknown outcomes, circuit breakers,
scheme reattempt caps, a durable journal (restart-safe) and a durable /feedback buffer.

Run it again on the same --state-dir after a crash: attempts left in flight are settled by status
inquiry first, finished transactions are skipped, unsent outcomes are re-sent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transactions", type=Path, required=True, help="transactions (.parquet or .jsonl, contract columns)")
    parser.add_argument("--psp", action="append", default=[], metavar="NAME=URL", help="a PSP endpoint (repeatable)")
    parser.add_argument("--psp-endpoints", type=Path, default=None, help="JSON file {psp: base_url}")
    parser.add_argument("--state-dir", type=Path, default=Path("dispatch-state"), help="journal and outcome buffer")
    parser.add_argument("--service-url", default=None, help="scoring service base URL (default: static order only)")
    parser.add_argument("--api-key-file", type=Path, default=None, help="file holding the /feedback API key")
    parser.add_argument("--rank-timeout", type=float, default=0.3, help="ranking call timeout in seconds")
    parser.add_argument("--psp-timeout", type=float, default=2.0, help="PSP call timeout in seconds")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--time-budget", type=float, default=20.0, help="seconds per payment")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--catalog", type=Path, default=None, help="PSP catalogue YAML (default: embedded)")
    parser.add_argument("--decline-codes", type=Path, default=None, help="decline-code mapping YAML (default: embedded)")
    parser.add_argument("--results", type=Path, default=None, help="write one JSON line per transaction here")
    parser.add_argument("--resolve-pending-after", type=float, default=0.0,
                        help="seconds to wait before re-inquiring pending payments (0: no second pass)")


def transactions_from_frame(frame) -> list:
    """Contract transactions from a frame (hidden ``_`` columns ignored, missing values as None);
    a row the contract refuses raises, naming the field."""
    from payroute.contracts import Transaction

    rows = frame[[c for c in frame.columns if not c.startswith("_")]].astype(object)
    return [Transaction.model_validate(row) for row in rows.where(rows.notna(), None).to_dict("records")]


def load_transactions(path: Path) -> list:
    """Contract transactions from Parquet or JSON lines (hidden ``_`` columns ignored)."""
    import pandas as pd

    from payroute.contracts import Transaction

    if path.suffix == ".parquet":
        return transactions_from_frame(pd.read_parquet(path))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Transaction.model_validate({k: v for k, v in row.items() if not k.startswith("_")}) for row in rows]


def endpoints(args: argparse.Namespace) -> dict[str, str]:
    found = json.loads(args.psp_endpoints.read_text()) if args.psp_endpoints else {}
    for item in args.psp:
        name, _, url = item.partition("=")
        if not url:
            raise SystemExit(f"--psp expects NAME=URL, got {item!r}")
        found[name] = url
    return found


def run(args: argparse.Namespace) -> int:
    from collections import Counter

    from payroute.catalog import load_catalog
    from payroute.serving.dispatch.assembly import build_dispatcher

    catalog = load_catalog(args.catalog)
    urls = endpoints(args)
    if not urls:
        raise SystemExit("no PSP endpoints: pass --psp NAME=URL or --psp-endpoints FILE")
    api_key = args.api_key_file.read_text().strip() if args.api_key_file else None
    parts = build_dispatcher(catalog, urls, args.state_dir, service_url=args.service_url, api_key=api_key,
                             rank_timeout_s=args.rank_timeout, psp_timeout_s=args.psp_timeout,
                             max_attempts=args.max_attempts, time_budget_s=args.time_budget,
                             decline_codes=args.decline_codes)
    transactions = load_transactions(args.transactions)
    try:
        earlier = parts.dispatcher.resolve_pending()  # a restart: payments and payouts a previous run left pending
        results = parts.dispatcher.dispatch_many(transactions, workers=args.workers)
        if args.resolve_pending_after > 0:
            import time

            time.sleep(args.resolve_pending_after)
            parts.dispatcher.resolve_pending()
        delivered = parts.buffer.flush(timeout=60)
    finally:
        parts.close()
    if args.results:
        with args.results.open("w") as handle:
            for result in results:
                handle.write(json.dumps({"transaction_id": result.transaction_id, "status": result.status,
                                         "psp": result.psp, "attempts": len(result.attempts), "stop": result.stop,
                                         "ranking": result.ranking_source}) + "\n")
    counts = Counter(result.status for result in results)
    print(f"payroute dispatch: {len(results)} transactions: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if earlier:
        print(f"  left pending by an earlier run and settled by inquiry: {len(earlier)}")
    print(f"  ranking fallbacks {parts.ranking.fallbacks}, unknown decline codes {parts.codes.unknown_total()}, "
          f"outcomes delivered {'all' if delivered else 'not all (kept in the buffer)'}")
    return 0
