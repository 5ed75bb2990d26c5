"""The sandbox's money ledger: every charge, payout, void and refund any sandbox PSP made.

One ledger is shared by all sandbox PSPs of a run, so it sees the customer's side of things: a
transaction charged at two PSPs (or twice at one) is a double charge whatever the dispatcher believed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

MONEY_IN = "charge"
MONEY_OUT = "payout"
REVERSALS = ("void", "refund")


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of money at one PSP (amounts positive; ``kind`` says the direction)."""

    psp: str
    idempotency_key: str
    transaction_id: str
    kind: str  # charge | payout | void | refund
    amount: Decimal
    currency: str
    psp_reference: str
    recorded_at: float


class Ledger:
    """Thread-safe, append-only; optionally mirrored to a JSON-lines file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._entries: list[LedgerEntry] = []
        self._lock = threading.Lock()
        self._path = Path(path) if path else None

    def record(self, psp: str, idempotency_key: str, transaction_id: str, kind: str, amount: Decimal,
               currency: str, psp_reference: str) -> LedgerEntry:
        entry = LedgerEntry(psp, idempotency_key, transaction_id, kind, Decimal(amount), currency,
                            psp_reference, time.time())
        with self._lock:
            self._entries.append(entry)
            if self._path is not None:
                with self._path.open("a") as handle:
                    handle.write(json.dumps(asdict(entry), default=str) + "\n")
        return entry

    @property
    def entries(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._entries)

    def net_count(self, kind: str = MONEY_IN) -> dict[str, int]:
        """Per transaction: movements of ``kind`` not reversed by a void or a full refund."""
        counts: dict[str, int] = defaultdict(int)
        for entry in self.entries:
            if entry.kind == kind:
                counts[entry.transaction_id] += 1
            elif entry.kind in REVERSALS:
                counts[entry.transaction_id] -= 1
        return dict(counts)

    def double_charges(self) -> dict[str, int]:
        """Transactions with money taken more than once (charges net of reversals), with the count."""
        return {txn: n for txn, n in self.net_count(MONEY_IN).items() if n > 1}

    def double_payouts(self) -> dict[str, int]:
        return {txn: n for txn, n in self.net_count(MONEY_OUT).items() if n > 1}

    def charged(self) -> set[str]:
        return {txn for txn, n in self.net_count(MONEY_IN).items() if n > 0}
