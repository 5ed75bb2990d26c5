"""The dispatcher's durable memory: append-only JSON lines, fsync'd before anything depends on them.

The journal records an *intent* before a PSP is called, the attempt's *result* after, every status
*inquiry*, and the transaction's *final* state. A dispatcher killed at any point is restarted on the
same journal: an intent without a result is an attempt in flight, inquired about before anything else
happens to that payment (:func:`replay` gives what is needed).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DurableLog:
    """Thread-safe append-only JSON-lines file; ``append`` returns once the line is on disk.

    Group commit: concurrent appends share one fsync. Each line is written under a short lock; then one
    writer at a time flushes and fsyncs everything written so far, and the writers whose lines that
    covered return without an fsync of their own.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the buffer and the write counter
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._written = self._synced = 0
        self.fsyncs = 0
        self._handle = self.path.open("ab")
        # A line torn by a kill mid-write is skipped by read(); start the next record on a new line.
        if self._handle.tell() > 0:
            with self.path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    self._handle.write(b"\n")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            self._handle.write(line)
            self._written += 1
            ticket = self._written
        self._sync(ticket)

    def _sync(self, ticket: int) -> None:
        """Return once line number ``ticket`` is on disk, fsyncing (for every waiting line) if needed."""
        with self._sync_lock:
            if self._synced >= ticket:
                return
            with self._lock:
                self._handle.flush()
                covered = self._written
            os.fsync(self._handle.fileno())
            self._synced = covered
            self.fsyncs += 1

    def close(self) -> None:
        with self._sync_lock, self._lock:
            self._handle.close()

    @staticmethod
    def read(path: str | Path) -> Iterator[dict[str, Any]]:
        """Every complete record, in order (a torn last line from a kill is ignored)."""
        path = Path(path)
        if not path.exists():
            return
        with path.open("rb") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


@dataclass
class AttemptState:
    """One attempt as the journal knows it."""

    attempt: int
    psp: str
    key: str
    operation: str
    result: dict[str, Any] | None = None
    inquiries: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TransactionState:
    """One transaction as the journal knows it: attempts so far and its final state if any."""

    transaction_id: str
    attempts: list[AttemptState] = field(default_factory=list)
    final: dict[str, Any] | None = None
    transaction: dict[str, Any] | None = None

    @property
    def in_flight(self) -> list[AttemptState]:
        return [a for a in self.attempts if a.result is None]

    @property
    def next_attempt(self) -> int:
        return max((a.attempt for a in self.attempts), default=0) + 1


def replay(records: Iterator[dict[str, Any]]) -> dict[str, TransactionState]:
    """Fold journal records into per-transaction state (the last final wins)."""
    states: dict[str, TransactionState] = {}
    by_key: dict[str, AttemptState] = {}
    for record in records:
        txn = record.get("transaction_id")
        state = states.setdefault(txn, TransactionState(txn)) if txn else None
        kind = record.get("type")
        if kind == "intent" and state is not None:
            attempt = AttemptState(record["attempt"], record["psp"], record["key"], record.get("operation", "authorise"))
            state.attempts.append(attempt)
            state.transaction = record.get("transaction") or state.transaction
            by_key[record["key"]] = attempt
        elif kind == "result" and record.get("key") in by_key:
            by_key[record["key"]].result = record
        elif kind == "inquiry" and record.get("key") in by_key:
            by_key[record["key"]].inquiries.append(record)
        elif kind == "final" and state is not None:
            state.final = record
    return states


class Journal:
    """The dispatcher's journal file plus its replayed state at open time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.recovered: dict[str, TransactionState] = replay(DurableLog.read(self.path))
        self.log = DurableLog(self.path)

    def write(self, record: dict[str, Any]) -> None:
        self.log.append(record)

    def close(self) -> None:
        self.log.close()

    def states(self) -> dict[str, TransactionState]:
        """The journal's state now (re-read from disk)."""
        return replay(DurableLog.read(self.path))
