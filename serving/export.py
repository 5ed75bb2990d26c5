"""The outcome log as the next training run's history: ``transactions/attempts/chargebacks.parquet``.

Only outcomes the service learned from are exported (their decision was issued here, for that
transaction): forged or stray outcomes are kept in the log for audit but steer neither the bandit nor
the next model. Each exported attempt keeps the propensity recorded at decision time when it was the
first-ranked PSP. Then::

    python -m payroute.serving.export --state-dir state --out data/served
    payroute train --history data/served --models-dir models
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pandas as pd

from payroute.catalog import Catalog, dump_catalog, load_catalog
from payroute.contracts import ATTEMPTS_SCHEMA, CHARGEBACKS_SCHEMA, TRANSACTIONS_SCHEMA, AttemptOutcome, Transaction
from payroute.history import CATALOG_FILE, write_table

OUTCOMES_FILE = "outcomes.sqlite"


def _row(model) -> dict:
    data = model.model_dump(mode="python")
    return {key: (value.value if hasattr(value, "value") and not isinstance(value, (int, float)) else value)
            for key, value in data.items()}


def log_frames(outcomes_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transactions, attempts) frames in the contract's columns from the learnable rows of the log."""
    connection = sqlite3.connect(f"file:{outcomes_path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT outcome_json, transaction_json, propensity FROM outcomes"
            " WHERE decision_known = 1 AND transaction_json IS NOT NULL ORDER BY sequence"
        ).fetchall()
    finally:
        connection.close()
    transactions: dict[str, dict] = {}
    attempts = []
    for outcome_json, transaction_json, propensity in rows:
        outcome = AttemptOutcome.model_validate_json(outcome_json)
        transaction = Transaction.model_validate_json(transaction_json)
        transactions.setdefault(transaction.id, _row(transaction))
        attempt = _row(outcome)
        if attempt.get("propensity") is None and propensity is not None:
            attempt["propensity"] = propensity
        attempts.append(attempt)
    transactions_frame = pd.DataFrame(list(transactions.values()), columns=TRANSACTIONS_SCHEMA.names)
    attempts_frame = pd.DataFrame(attempts, columns=ATTEMPTS_SCHEMA.names)
    return transactions_frame.sort_values("timestamp", kind="stable"), attempts_frame


def export_history(state_dir: str | Path, out_dir: str | Path, catalog: Catalog | None = None) -> Path:
    """Write the log's learnable outcomes as a history folder ``payroute train --history`` reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    transactions, attempts = log_frames(Path(state_dir) / OUTCOMES_FILE)
    write_table(transactions, "transactions", out)
    write_table(attempts, "attempts", out)
    write_table(pd.DataFrame(columns=CHARGEBACKS_SCHEMA.names), "chargebacks", out)
    dump_catalog(catalog or load_catalog(), out / CATALOG_FILE)
    (out / "export.json").write_text(json.dumps({"transactions": len(transactions), "attempts": len(attempts)}))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payroute.serving.export", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path("state"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--catalog", type=Path, default=None)
    args = parser.parse_args(argv)
    out = export_history(args.state_dir, args.out, load_catalog(args.catalog))
    print(f"history exported to {out}: {(out / 'export.json').read_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
