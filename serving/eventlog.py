"""Durable logs of the scoring service: outcomes (append-only, fsync'd before acknowledgement) and decisions.

Two SQLite files in WAL mode, so a slow outcome fsync never blocks ranking:

- ``outcomes.sqlite`` (``synchronous=FULL``): one row per ``(transaction_id, attempt)``; an append
  returns only after the WAL is on disk, so an acknowledged outcome survives ``kill -9`` and power loss.
  Concurrent appends are *group committed*: whoever finds no commit in flight writes every queued
  outcome in one transaction (one fsync) and wakes the others, each acknowledged only after the commit
  that holds it. Each learnable row carries its transaction and the bandit baseline the decision
  recorded, so replay and export need this file only. Triggers refuse UPDATE and DELETE.
- ``decisions.sqlite`` (``synchronous=NORMAL``): decisions issued, one transaction per ``/rank`` or
  ``/rank_batch`` call, committed before the answer. In WAL mode a NORMAL commit is in the OS's hands
  when it returns (no fsync): it survives a process crash (``kill -9``, OOM kill), and only an OS crash
  or power loss can lose the decisions since the last checkpoint; feedback for such a decision is then
  stored but not learned from.
"""

from __future__ import annotations

import functools
import itertools
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

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
    baseline REAL,
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
    issued_at REAL NOT NULL,
    baselines_json TEXT
);
"""
# Columns added after the first release: (table, column, type); a file from before gets them on open.
_ADDED_COLUMNS = (("outcomes", "baseline", "REAL"), ("decisions", "baselines_json", "TEXT"))


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    return connection


def _migrate(connection: sqlite3.Connection, table: str) -> None:
    """Add the columns a log file written by an older release lacks (NULL in old rows)."""
    present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    for name, column, kind in _ADDED_COLUMNS:
        if name == table and column not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


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
    baseline: float | None = None  # the bandit's prior mean for this PSP at decision time (exact replay)


@dataclass(frozen=True)
class AppendResult:
    status: Literal["recorded", "duplicate", "conflict"]
    sequence: int
    decision_known: bool


class OutcomeLog:
    """Append-only outcome log, idempotent on ``(transaction_id, attempt)``, with group commit.

    ``on_commit`` (optional) receives the rows each commit recorded, as ``(sequence, record)`` in log
    order, before any of their appends returns and before the next commit starts: the service queues
    them for learning, so learning order is log order.
    """

    def __init__(
        self, path: str | Path, *, on_commit: Callable[[list[tuple[int, OutcomeRecord]]], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = _connect(self.path, "FULL")
        self._connection.executescript(_OUTCOMES_DDL)
        _migrate(self._connection, "outcomes")
        self._lock = threading.Lock()  # the connection
        self._group = threading.Condition()  # the queue and the "commit in flight" flag
        self._queue: list[_Pending] = []
        self._committing = False
        self.on_commit = on_commit
        self.commits = 0  # transactions (fsyncs) so far: appends / commits is the group size

    def append(self, record: OutcomeRecord) -> AppendResult:
        """Insert durably; an identical repeat is ``duplicate``, a different one ``conflict``."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[OutcomeRecord]) -> list[AppendResult]:
        """Insert durably, in order; returns once the commit holding them is on disk."""
        entry = _Pending(list(records))
        with self._group:
            self._queue.append(entry)
            while entry.results is None and entry.error is None:
                if self._committing:
                    self._group.wait()
                    continue
                batch, self._queue, self._committing = self._queue, [], True
                self._group.release()
                try:
                    self._commit(batch)
                finally:
                    self._group.acquire()
                    self._committing = False
                    self._group.notify_all()
        if entry.error is not None:
            raise entry.error
        return entry.results

    def _commit(self, batch: list["_Pending"]) -> None:
        """One transaction for every queued append: one fsync, however many outcomes."""
        committed: list[tuple[int, OutcomeRecord]] = []
        try:
            with self._lock:
                self._connection.execute("BEGIN IMMEDIATE")
                try:
                    results = [[self._insert(record, committed) for record in entry.records] for entry in batch]
                    self._connection.execute("COMMIT")
                except BaseException:
                    self._connection.execute("ROLLBACK")
                    raise
                self.commits += 1
            if committed and self.on_commit is not None:
                self.on_commit(committed)
        except Exception as error:  # every waiter of a failed commit hears it (nothing was acknowledged)
            for entry in batch:
                entry.error = error
            return
        for entry, result in zip(batch, results):
            entry.results = result

    def _insert(self, record: OutcomeRecord, committed: list[tuple[int, OutcomeRecord]]) -> AppendResult:
        outcome, decision_id = record.outcome, record.decision_id
        row = (
            outcome.transaction_id, outcome.attempt, decision_id, int(record.decision_known), outcome.model_dump_json(),
            record.transaction_json, record.propensity, record.received_at, record.baseline,
        )
        try:
            cursor = self._connection.execute(
                "INSERT INTO outcomes (transaction_id, attempt, decision_id, decision_known, outcome_json,"
                " transaction_json, propensity, received_at, baseline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.IntegrityError:  # aborts this statement only, not the group's transaction
            sequence, stored_decision, known, stored_json = self._connection.execute(
                "SELECT sequence, decision_id, decision_known, outcome_json FROM outcomes"
                " WHERE transaction_id = ? AND attempt = ?",
                (outcome.transaction_id, outcome.attempt),
            ).fetchone()
            same = stored_decision == decision_id and AttemptOutcome.model_validate_json(stored_json) == outcome
            return AppendResult("duplicate" if same else "conflict", int(sequence), bool(known))
        sequence = int(cursor.lastrowid)
        committed.append((sequence, record))
        return AppendResult("recorded", sequence, record.decision_known)

    def since(self, sequence: int) -> Iterator[tuple[int, OutcomeRecord]]:
        """Rows after ``sequence`` in log order (the replay tail)."""
        reader = _connect(self.path, "FULL")
        try:
            rows = reader.execute(
                "SELECT sequence, outcome_json, decision_id, decision_known, transaction_json, propensity,"
                " received_at, baseline FROM outcomes WHERE sequence > ? ORDER BY sequence",
                (sequence,),
            )
            for seq, outcome_json, decision_id, known, transaction_json, propensity, received_at, baseline in rows:
                record = OutcomeRecord(
                    AttemptOutcome.model_validate_json(outcome_json),
                    decision_id,
                    bool(known),
                    transaction_json,
                    propensity,
                    received_at,
                    baseline,
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


@dataclass
class _Pending:
    """Appends waiting for a group commit: their results, or the error that failed the commit."""

    records: list[OutcomeRecord]
    results: list[AppendResult] | None = None
    error: Exception | None = None


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
    baselines: Mapping[str, float] = field(default_factory=dict)  # the bandit's prior mean per ranked PSP


_DECISION_COLUMNS = (
    "decision_id, transaction_id, transaction_json, first_psp, propensity, model_version, degraded, issued_at,"
    " baselines_json"
)


# Up to this many decisions go in one multi-row INSERT (9 bound values each: 2 304, far below SQLite's
# 32 766-variable limit); larger groups use BEGIN, executemany, COMMIT.
_ROWS_PER_STATEMENT = 256


PRUNE_CHUNK = 1000  # decisions deleted per transaction when pruning (a /rank waits for one chunk at most)
PRUNE_PAUSE_S = 0.005  # between two chunks, so that the writer gets the lock
PRUNE_MAX_CHUNKS = 200  # per pass (a minute apart): 200 000 decisions, more than a minute of traffic
_WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes a restarted decisions WAL is truncated to (journal_size_limit)


@functools.lru_cache(maxsize=64)
def _insert_decisions(rows: int) -> str:
    """``INSERT OR IGNORE`` of ``rows`` decisions in one statement (sqlite3 caches the compiled statement)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT OR IGNORE INTO decisions ({_DECISION_COLUMNS}) VALUES {values}"


class DecisionLog:
    """Decisions issued: written before the answer (one WAL transaction per call, no fsync), recent ones cached.

    WAL checkpoints (copying committed pages into the database file, with its fsync) run on a thread of
    their own every ``checkpoint_every_s`` seconds, on their own connection (``PASSIVE``: never waits for
    the writer, never blocks it), instead of inside whichever commit crosses SQLite's 1 000-page mark:
    there a checkpoint held one /rank for 4-13 ms every few hundred decisions (measured: 51 of 20 000
    single-decision writes over 1 ms). ``None`` leaves checkpoints to SQLite.

    A PASSIVE checkpoint leaves the frames written while it ran, and SQLite starts the WAL over only when a
    write finds every frame copied, which a steady writer never lets happen: once the WAL holds
    ``restart_frames`` frames, the thread copies what is left with the writer held (a few frames and two
    fsyncs), so the next write starts the WAL from its beginning and the file stays bounded.

    ``retention_s``: decisions older than this are forgotten (deleted by the same thread every
    ``prune_every_s``, oldest first, :data:`PRUNE_CHUNK` rows per transaction so a /rank waits for one
    chunk at most; freed pages are reused, so the file stops growing); an outcome for one of them is then
    stored but not learned from. ``None`` keeps every decision. Replay and export read the outcome log
    only, so forgetting decisions changes neither."""

    def __init__(self, path: str | Path, *, cache_size: int = 200_000, checkpoint_every_s: float | None = 1.0,
                 restart_frames: int = 4096, retention_s: float | None = None, prune_every_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = _connect(self.path, "NORMAL")
        self._connection.executescript(_DECISIONS_DDL)
        _migrate(self._connection, "decisions")
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, DecisionRecord] = OrderedDict()
        self._cache_size = cache_size
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_connection = self._connection
        self.retention_s = retention_s
        self._prune_every_s = prune_every_s
        if checkpoint_every_s is not None:
            self._connection.execute("PRAGMA wal_autocheckpoint=0")
            self._connection.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")  # a larger WAL shrinks on restart
            self._checkpoint_connection = _connect(self.path, "NORMAL")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_every_s, restart_frames), name="decision-log-checkpoints",
                daemon=True,
            )
            self._checkpointer.start()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint on the checkpoint connection (the writer's, under its lock, when checkpoints
        are left to SQLite): (busy, WAL frames, frames checkpointed)."""
        if self._checkpoint_connection is self._connection:
            with self._lock:
                return tuple(self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0])
        busy, frames, done = self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        return busy, frames, done

    def restart_wal(self) -> tuple[int, int, int]:
        """Copy the frames left by the last checkpoint with the writer held, so that the next write finds
        every frame copied and starts the WAL over: (busy, WAL frames, frames checkpointed)."""
        with self._lock:
            busy, frames, done = self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        return busy, frames, done

    def _checkpoint_loop(self, every_s: float, restart_frames: int) -> None:
        next_prune = time.monotonic()
        while not self._stop.wait(every_s):
            try:
                if self.retention_s is not None and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self._prune_every_s
                    self.prune(time.time() - self.retention_s, max_chunks=PRUNE_MAX_CHUNKS)
                if self.checkpoint()[1] >= restart_frames:
                    self.restart_wal()
            except sqlite3.Error:  # e.g. the disk is full: the WAL keeps the decisions, the next try may pass
                continue

    def prune(self, issued_before: float, *, chunk: int | None = None, max_chunks: int | None = None) -> int:
        """Delete the decisions issued before ``issued_before`` (epoch seconds), oldest first, ``chunk``
        rows per transaction with the writer held only for that transaction, at most ``max_chunks``
        transactions; returns how many.

        Rows are appended in issue order, so the old ones are a prefix by rowid: each step deletes the old
        rows among the next ``chunk`` and stops at the first chunk that is not all old (no table scan).
        Between chunks the thread pauses (:data:`PRUNE_PAUSE_S`): a lock is not fair, and without the pause
        a long backlog could keep the writer from the lock for as long as it lasts."""
        chunk = chunk or PRUNE_CHUNK
        deleted = 0
        for step in itertools.count():
            if self._stop.is_set() or (max_chunks is not None and step >= max_chunks):
                break
            if step:
                time.sleep(PRUNE_PAUSE_S)
            with self._lock:
                edge = self._connection.execute(
                    "SELECT rowid FROM decisions ORDER BY rowid LIMIT 1 OFFSET ?", (chunk - 1,)
                ).fetchall() or self._connection.execute("SELECT max(rowid) FROM decisions").fetchall()
                if edge[0][0] is None:
                    break
                cursor = self._connection.execute(
                    "DELETE FROM decisions WHERE rowid <= ? AND issued_at < ?", (edge[0][0], issued_before)
                )
            deleted += cursor.rowcount
            if cursor.rowcount < chunk:
                break
        return deleted  # the cache keeps its size bound; lookup() ignores what it holds past retention

    def record(self, records: Sequence[DecisionRecord]) -> None:
        """Write (one transaction) and remember; returns once SQLite holds them (survives a process crash)."""
        rows = [
            (r.decision_id, r.transaction_id, r.transaction_json, r.first_psp, r.propensity, r.model_version,
             int(r.degraded), r.issued_at, orjson.dumps(dict(r.baselines)).decode() if r.baselines else None)
            for r in records
        ]
        with self._lock:
            if len(rows) <= _ROWS_PER_STATEMENT:  # one statement is one transaction: no BEGIN/COMMIT round trips
                self._connection.execute(_insert_decisions(len(rows)), [value for row in rows for value in row])
            else:
                insert = _insert_decisions(1)
                self._connection.execute("BEGIN")
                try:
                    self._connection.executemany(insert, rows)
                except BaseException:
                    self._connection.execute("ROLLBACK")
                    raise
                self._connection.execute("COMMIT")
        cache = self._cache
        for record in records:
            cache[record.decision_id] = record
        while len(cache) > self._cache_size:
            cache.popitem(last=False)

    def lookup(self, decision_id: str) -> DecisionRecord | None:
        """The decision from memory, else from disk (after a restart); None if never issued."""
        cached = self._cache.get(decision_id)
        if cached is not None:
            if self.retention_s is not None and cached.issued_at < time.time() - self.retention_s:
                return None  # past retention: forgotten, as on disk (pruned there at the next pass)
            return cached
        with self._lock:  # fetchall: the statement is done, no read left open on the writer's connection
            rows = self._connection.execute(
                f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?", (decision_id,)
            ).fetchall()
        if not rows:
            return None
        row = rows[0]
        return DecisionRecord(*row[:6], bool(row[6]), row[7], json.loads(row[8]) if row[8] else {})

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpoint_connection.close()
            self._checkpointer = None
        with self._lock:
            self._connection.close()  # the last connection to close checkpoints the WAL into the file
