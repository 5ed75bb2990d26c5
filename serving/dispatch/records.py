"""What the dispatcher believes happened, as a contract history read from its journal.

Each attempt is the outcome journaled when it settled, except that a payment left ``pending`` and later
settled by status inquiry (``resolve_pending``) takes its final status: the outcome sent to ``/feedback``
stays as seen at the time (the service is idempotent per attempt), but the money moved, and a
reconciliation against PSP settlement files must know it.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pandas as pd

from payroute.catalog import Catalog, attempt_cost
from payroute.contracts import ATTEMPTS_SCHEMA, TRANSACTIONS_SCHEMA, AttemptStatus
from payroute.history import History

RESOLVED = "resolved_by_inquiry"


def resolved_finals(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per transaction, the last ``final`` that a later inquiry settled."""
    return {r["transaction_id"]: r for r in records if r.get("type") == "final" and r.get("stop") == RESOLVED}


def journal_history(records: list[dict[str, Any]], catalog: Catalog) -> History:
    """Transactions (from the intents) and attempts (journaled outcomes, resolved ones updated)."""
    transactions: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("type") == "intent" and record.get("transaction"):
            transactions.setdefault(record["transaction_id"], dict(record["transaction"]))
    resolved = resolved_finals(records)
    attempts = []
    for record in records:
        if record.get("type") != "result":
            continue
        outcome = dict(record["outcome"])
        final = resolved.get(record["transaction_id"])
        if final is not None and final["status"] == "approved" and final.get("psp") == record["psp"] \
                and record["kind"] == "unknown":
            outcome = _approved(outcome, transactions[record["transaction_id"]], catalog)
        attempts.append(outcome)
    transaction_frame = pd.DataFrame(list(transactions.values()), columns=TRANSACTIONS_SCHEMA.names)
    transaction_frame["amount"] = transaction_frame["amount"].map(Decimal)
    attempt_frame = pd.DataFrame(attempts, columns=ATTEMPTS_SCHEMA.names)
    attempt_frame["timestamp"] = pd.to_datetime(attempt_frame["timestamp"], utc=True)
    for column in ("fee", "fx_cost", "fee_eur", "fx_cost_eur"):
        attempt_frame[column] = attempt_frame[column].map(Decimal)
    return History(transaction_frame, attempt_frame,
                   pd.DataFrame(columns=["transaction_id", "amount", "currency", "date"]))


def _approved(outcome: dict[str, Any], transaction: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """An attempt reported as a timeout that inquiry later found approved, at the approved cost."""
    cost = attempt_cost(catalog, outcome["psp"], Decimal(transaction["amount"]), transaction["currency"],
                        AttemptStatus.approved)
    return outcome | {"status": AttemptStatus.approved.value, "decline_code": None, "decline_reason": None,
                      "fee": cost.fee, "fx_cost": cost.fx_cost, "fee_eur": cost.fee_eur, "fx_cost_eur": cost.fx_cost_eur}
