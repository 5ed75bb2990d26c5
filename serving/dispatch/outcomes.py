"""Attempt outcomes to the scoring service's ``/feedback``, through an on-disk buffer so none is lost.

Every outcome is appended (fsync) to ``outbox.jsonl`` before it is sent; a sender pool drains it and
appends each delivered ``(transaction_id, attempt)`` to ``acked.jsonl``. While the service is down the
outcomes wait and are retried with back-off; a restarted dispatcher re-sends whatever was not
acknowledged. The service is idempotent on ``(transaction_id, attempt)``, so a re-send after a lost
acknowledgement stores nothing twice. A refused outcome (4xx) is parked in ``rejected.jsonl``.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from payroute.serving.dispatch.journal import DurableLog


class SinkUnavailable(Exception):
    """The sink could not be reached or failed (retry later)."""


class SinkRejected(Exception):
    """The sink refused the outcome for good (validation, conflicting repeat)."""


class OutcomeSink(Protocol):
    def send(self, outcome: dict[str, Any]) -> None: ...


def outcome_key(outcome: dict[str, Any]) -> str:
    return f"{outcome['transaction_id']}:{outcome['attempt']}"


class MemorySink:
    """An in-process sink with the service's idempotency rule; ``down`` simulates an outage."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self.deliveries = 0
        self.down = False
        self._lock = threading.Lock()

    def send(self, outcome: dict[str, Any]) -> None:
        if self.down:
            raise SinkUnavailable("sink down")
        key = outcome_key(outcome)
        with self._lock:
            self.deliveries += 1
            known = self.events.get(key)
            if known is not None and known != outcome:
                raise SinkRejected(f"conflicting repeat for {key}")
            self.events[key] = outcome


class ClientSink:
    """``/feedback`` through the scoring service's client (``feedback(dict)``); errors classified.

    A refused outcome (4xx) is not re-sent in another shape: the buffer parks and counts it. (The service
    once refused its own decision ids as PANs; since it issues them in 32-hex form, it cannot.)
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def send(self, outcome: dict[str, Any]) -> None:
        body = {k: v for k, v in outcome.items() if k != "decision_id"}
        try:
            self.client.feedback(body, decision_id=outcome.get("decision_id"))
        except Exception as error:  # the client's own error types: classify by HTTP status if present
            status = getattr(getattr(error, "response", None), "status_code", None) or getattr(error, "status_code", None)
            if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
                raise SinkRejected(f"feedback refused with HTTP {status}") from error
            raise SinkUnavailable(type(error).__name__) from error


class OutcomeBuffer:
    """Durable outbox in ``directory`` with ``workers`` sender threads draining it into ``sink``."""

    def __init__(self, directory: str | Path, sink: OutcomeSink, workers: int = 4,
                 retry_s: float = 0.1, max_retry_s: float = 2.0) -> None:
        self.directory = Path(directory)
        self.sink = sink
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        outbox, acked = self.directory / "outbox.jsonl", self.directory / "acked.jsonl"
        done = {r["key"] for r in DurableLog.read(acked)}
        self.recorded: set[str] = set()
        backlog = []
        for outcome in DurableLog.read(outbox):
            key = outcome_key(outcome)
            if key not in self.recorded:
                self.recorded.add(key)
                if key not in done:
                    backlog.append(outcome)
        self.replayed = len(backlog)
        self._outbox, self._acked = DurableLog(outbox), DurableLog(acked)
        self._rejected = DurableLog(self.directory / "rejected.jsonl")
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self.sent = self.rejected = self.failures = 0
        self._lock = threading.Lock()
        for outcome in backlog:
            self._enqueue(outcome)
        self._threads = [threading.Thread(target=self._run, name=f"outbox-{k}", daemon=True) for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def put(self, outcome: dict[str, Any]) -> bool:
        """Record durably, then queue for sending. A repeat of a recorded attempt is ignored (False)."""
        key = outcome_key(outcome)
        with self._lock:
            if key in self.recorded:
                return False
            self.recorded.add(key)
        self._outbox.append(outcome)
        self._enqueue(outcome)
        return True

    def has(self, transaction_id: str, attempt: int) -> bool:
        with self._lock:
            return f"{transaction_id}:{attempt}" in self.recorded

    def _enqueue(self, outcome: dict[str, Any]) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put(outcome)

    def _run(self) -> None:
        delay = self.retry_s
        while True:
            outcome = self._queue.get()
            if outcome is None:
                return
            try:
                self.sink.send(outcome)
            except SinkUnavailable:
                with self._lock:
                    self.failures += 1
                self._queue.put(outcome)  # back in line; wait before the next try
                time.sleep(delay)
                delay = min(self.max_retry_s, delay * 2)
                continue
            except SinkRejected as error:
                self._rejected.append({"key": outcome_key(outcome), "error": str(error)})
                with self._lock:
                    self.rejected += 1
            else:
                self._acked.append({"key": outcome_key(outcome)})
                with self._lock:
                    self.sent += 1
            delay = self.retry_s
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._pending

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every recorded outcome is delivered or parked; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        for log in (self._outbox, self._acked, self._rejected):
            log.close()
