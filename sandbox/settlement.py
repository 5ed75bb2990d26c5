"""Settlement files from the sandbox ledger, in the one settlement format
(:mod:`payroute.reporting.settlement`): what the sandbox PSPs would send the merchant.

The ledger is the PSPs' side of the story: every charge and payout not reversed by a void or refund
settles once, at the contract fee (:func:`payroute.catalog.attempt_cost`). The rows are written by
:func:`payroute.reporting.settlement.write_settlements` from a history built here, so there is no second
format; reconciling them against what the dispatcher recorded (``payroute.reporting.reconcile``) shows
any charge the dispatcher does not know about, or any approval no PSP took money for.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from payroute.catalog import Catalog, attempt_cost
from payroute.contracts import AttemptStatus, TransactionType
from payroute.history import History
from payroute.sandbox.ledger import MONEY_IN, MONEY_OUT, REVERSALS, Ledger, LedgerEntry

_TYPE_OF_KIND = {MONEY_IN: TransactionType.deposit.value, MONEY_OUT: TransactionType.withdrawal.value}


def settled_entries(ledger: Ledger) -> list[LedgerEntry]:
    """Charges and payouts whose idempotency key was not reversed (void or refund), in ledger order."""
    entries = ledger.entries
    reversed_keys = {(e.psp, e.idempotency_key) for e in entries if e.kind in REVERSALS}
    return [e for e in entries if e.kind in _TYPE_OF_KIND and (e.psp, e.idempotency_key) not in reversed_keys]


def ledger_history(ledger: Ledger, catalog: Catalog) -> History:
    """The ledger as a history: one approved attempt per settled movement, at the contract fee.

    ``transactions`` holds what a PSP knows of a payment (id, type, amount, currency); money stays
    ``Decimal``. Two movements for one transaction stay two rows (a double charge settles twice).
    """
    transactions, attempts = {}, []
    for number, entry in enumerate(settled_entries(ledger), start=1):
        transactions.setdefault(entry.transaction_id, {
            "id": entry.transaction_id, "type": _TYPE_OF_KIND[entry.kind], "amount": entry.amount,
            "currency": entry.currency})
        cost = attempt_cost(catalog, entry.psp, entry.amount, entry.currency, AttemptStatus.approved)
        attempts.append({"transaction_id": entry.transaction_id, "attempt": number, "psp": entry.psp,
                         "timestamp": pd.Timestamp(entry.recorded_at, unit="s", tz="UTC"),
                         "status": AttemptStatus.approved.value, "fee": cost.fee, "fx_cost": cost.fx_cost})
    attempt_columns = ["transaction_id", "attempt", "psp", "timestamp", "status", "fee", "fx_cost"]
    return History(
        transactions=pd.DataFrame(list(transactions.values()), columns=["id", "type", "amount", "currency"]),
        attempts=pd.DataFrame(attempts, columns=attempt_columns),
        chargebacks=pd.DataFrame(columns=["transaction_id", "amount", "currency", "date"]),
    )


def write_ledger_settlements(ledger: Ledger, catalog: Catalog, directory: str | Path, seed: int = 0) -> list[Path]:
    """One ``<psp>.csv`` per PSP that moved money, in the settlement format; returns the files written."""
    from payroute.reporting.settlement import write_settlements

    write_settlements(ledger_history(ledger, catalog), catalog, directory, seed=seed)
    return sorted(Path(directory).glob("*.csv"))
