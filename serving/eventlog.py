"""Durable logs of the scoring service: outcomes (append-only, fsync'd before acknowledgement) and decisions.

Two SQLite files in WAL mode, so a slow outcome fsync never blocks ranking:

- ``outcomes.sqlite`` (``synchronous=FULL``): one row per ``(transaction_id, attempt)``; an insert
  returns only after the WAL is on disk, so an acknowledged outcome survives ``kill -9`` and power loss.
  Each learnable row carries the transaction it was routed for, so replay and export need this file only.
  Triggers refuse UPDATE and DELETE: the log is append-only.
- ``decisions.sqlite`` (``synchronous=NORMAL``): decisions issued, written by a background thread in
  batches (group commit) so ``/rank`` never waits for disk. A process crash loses at most the batch in
  flight (~``flush_interval``); feedback for such a decision is stored but not learned from.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from payroute.contracts import AttemptOutcome

_OUTCOMES_DDL = """
CREATE TABLE IF NOT EXISTS outcomes (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    decision_id TEXT,
    decision_known INTEGER NOT NULL,
    outcome_json TEXT NOT NULL,
    transaction_json TEXT,
    propensity REAL,
    received_at REAL NOT NULL,
    UNIQUE (transaction_id, attempt)
);
CREATE TRIGGER IF NOT EXISTS outcomes_no_update BEFORE UPDATE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS outcomes_no_delete BEFORE DELETE ON outcomes
BEGIN SELECT RAISE(ABORT, 'outcome log is append-only'); END;
"""

_DECISIONS_DDL = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    transaction_id TEXT NOT NULL,
    transaction_json TEXT NOT NULL,
    first_psp TEXT,
    propensity REAL,
    model_version TEXT,
    degraded INTEGER NOT NULL,
    issued_at REAL NOT NULL
);
"""


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    return connection


# --------------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeRecord:
    """One outcome as logged: the contract row plus what the service knew about its decision."""

    outcome: AttemptOutcome
    decision_id: str | None
    decision_known: bool
    transaction_json: str | None
    propensity: float | None
    received_at: float


@dataclass(frozen=True)
class AppendResult:
    status: Literal["recorded", "duplicate", "conflict"]
    sequence: int
    decision_known: bool


class OutcomeLog:
    """Append-only outcome log, idempotent on ``(transaction_id, attempt)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = _connect(self.path, "FULL")
        self._connection.executescript(_OUTCOMES_DDL)
        self._lock = threading.Lock()

    def append(self, record: OutcomeRecord) -> AppendResult:
        """Insert durably; an identical repeat is ``duplicate``, a different one ``conflict``."""
        outcome, decision_id = record.outcome, record.decision_id
        row = (
            outcome.transaction_id,
            outcome.attempt,
            decision_id,
            int(record.decision_known),
            outcome.model_dump_json(),
            record.transaction_json,
            record.propensity,
            record.received_at,
        )
        with self._lock:
            try:
                cursor = self._connection.execute(
                    "INSERT INTO outcomes (transaction_id, attempt, decision_id, decision_known, outcome_json,"
                    " transaction_json, propensity, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                return AppendResult("recorded", int(cursor.lastrowid), record.decision_known)
            except sqlite3.IntegrityError:
                sequence, stored_decision, known, stored_json = self._connection.execute(
                    "SELECT sequence, decision_id, decision_known, outcome_json FROM outcomes"
                    " WHERE transaction_id = ? AND attempt = ?",
                    (outcome.transaction_id, outcome.attempt),
                ).fetchone()
        same = stored_decision == decision_id and AttemptOutcome.model_validate_json(stored_json) == outcome
        return AppendResult("duplicate" if same else "conflict", int(sequence), bool(known))

    def since(self, sequence: int) -> Iterator[tuple[int, OutcomeRecord]]:
        """Rows after ``sequence`` in log order (the replay tail)."""
        reader = _connect(self.path, "FULL")
        try:
            rows = reader.execute(
                "SELECT sequence, outcome_json, decision_id, decision_known, transaction_json, propensity,"
                " received_at FROM outcomes WHERE sequence > ? ORDER BY sequence",
                (sequence,),
            )
            for seq, outcome_json, decision_id, known, transaction_json, propensity, received_at in rows:
                record = OutcomeRecord(
                    AttemptOutcome.model_validate_json(outcome_json),
                    decision_id,
                    bool(known),
                    transaction_json,
                    propensity,
                    received_at,
                )
                yield int(seq), record
        finally:
            reader.close()

    def last_sequence(self) -> int:
        with self._lock:
            (value,) = self._connection.execute("SELECT COALESCE(MAX(sequence), 0) FROM outcomes").fetchone()
        return int(value)

    def close(self) -> None:
        with self._lock:
            self._connection.close()


# --------------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRecord:
    decision_id: str
    transaction_id: str
    transaction_json: str
    first_psp: str | None
    propensity: float | None
    model_version: str | None
    degraded: bool
    issued_at: float


class DecisionLog:
    """Decisions issued, with an in-memory cache of recent ones and a group-committing writer thread.

    The writer wakes every ``flush_interval`` seconds (not per decision), so ranking threads rarely
    hand the GIL to it; :meth:`flush` forces a write and waits for it.
    """

    def __init__(self, path: str | Path, *, cache_size: int = 200_000, flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = _connect(self.path, "NORMAL")
        self._writer.executescript(_DECISIONS_DDL)
        self._reader = _connect(self.path, "NORMAL")
        self._reader_lock = threading.Lock()
        self._cache: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._cache_size = cache_size
        self._pending: list[DecisionRecord] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._generation = 0
        self._stopping = False
        self._flush_interval = flush_interval
        self._thread = threading.Thread(target=self._run, name="payroute-decision-log", daemon=True)
        self._thread.start()

    def record(self, records: Sequence[DecisionRecord]) -> None:
        """Remember and queue for writing; never blocks on disk."""
        cache = self._cache
        for record in records:
            cache[record.decision_id] = record
        with self._pending_lock:
            self._pending.extend(records)
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def lookup(self, decision_id: str) -> DecisionRecord | None:
        """The decision from memory, else from disk (after a restart); None if never issued."""
        cached = self._cache.get(decision_id)
        if cached is not None:
            return cached
        with self._reader_lock:
            row = self._reader.execute(
                "SELECT decision_id, transaction_id, transaction_json, first_psp, propensity, model_version,"
                " degraded, issued_at FROM decisions WHERE decision_id = ?",
                (decision_id,),
            ).fetchone()
        return None if row is None else DecisionRecord(*row[:6], bool(row[6]), row[7])

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything recorded so far is committed."""
        with self._written:
            target = self._generation + 2  # the write in progress may have missed our records
            self._wake.set()
            self._written.wait_for(lambda: self._generation >= target or self._stopping, timeout)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._writer.close()
        self._reader.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                self._write(batch)
            with self._written:
                self._generation += 1
                self._written.notify_all()
            if self._stopping:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                if batch:
                    self._write(batch)
                return

    def _write(self, batch: list[DecisionRecord]) -> None:
        rows = [
            (r.decision_id, r.transaction_id, r.transaction_json, r.first_psp, r.propensity, r.model_version,
             int(r.degraded), r.issued_at)
            for r in batch
        ]
        self._writer.execute("BEGIN")
        self._writer.executemany("INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self._writer.execute("COMMIT")

