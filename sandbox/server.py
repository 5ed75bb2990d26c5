"""A sandbox PSP: a real HTTP server on 127.0.0.1 with idempotency keys, status inquiry, void,
refund and payouts, answering through a :class:`PspBehaviour` and misbehaving through a
:class:`FaultPlan`. Every charge or payout goes to the shared :class:`Ledger`.

API (JSON; errors are ``{"code", "message"}`` and never echo the request):

``POST /v1/payments`` / ``POST /v1/payouts`` with header ``Idempotency-Key`` and body
``{"transaction": {...}, "attempt": n, "amount": "12.50", "currency": "EUR"}`` →
``200 {"status", "decline_code", "psp_reference", "reference"}``; a repeat returns the first answer;
the same key with a different body is ``422 idempotency_key_reused``; ``503 {"processed": false}`` is a
definite "nothing done".
``GET /v1/{payments|payouts}/{key}`` → the stored answer, ``{"status": "processing"}`` or
``404 {"status": "not_found"}``.
``POST /v1/{payments|payouts}/{key}/void`` → reverses an approval, or cancels a key never received
(a later arrival with that key is refused): ``{"status": "voided" | "cancelled" | "nothing_to_void"}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from payroute.sandbox.behaviour import PspBehaviour, PspAnswer
from payroute.sandbox.faults import FaultCounter, FaultPlan
from payroute.sandbox.ledger import Ledger

KINDS = {"payments": "charge", "payouts": "payout"}


@dataclass
class KeyRecord:
    """What a PSP remembers about one idempotency key."""

    params_hash: str
    kind: str
    transaction_id: str
    amount: Decimal
    currency: str
    state: str = "processing"  # processing | done | cancelled
    body: dict[str, Any] = field(default_factory=dict)
    reversed: bool = False
    inquiries: int = 0


class _QuietServer(ThreadingHTTPServer):
    """A client vanishing mid-request (a killed dispatcher, a timed-out call) is normal here."""

    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class SandboxPsp:
    """One sandbox PSP server. ``start()`` binds an ephemeral loopback port; ``url`` is its base URL."""

    def __init__(self, name: str, behaviour: PspBehaviour, ledger: Ledger, faults: FaultPlan | None = None,
                 counter: FaultCounter | None = None, latency_scale: float = 0.001) -> None:
        self.name = name
        self.behaviour = behaviour
        self.ledger = ledger
        self.faults = faults or FaultPlan()
        self.counter = counter or FaultCounter()
        self.latency_scale = latency_scale
        self.records: dict[str, KeyRecord] = {}
        self.lock = threading.Lock()
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> "SandboxPsp":
        server = _QuietServer(("127.0.0.1", port), _Handler)
        server.psp = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox-{self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ operations
    def authorise(self, kind: str, key: str, payload: dict[str, Any], raw: bytes) -> tuple[int, dict, str | None]:
        """Process one authorisation/payout; returns (HTTP status, body, delivery fault)."""
        params_hash = hashlib.sha256(raw).hexdigest()
        try:
            transaction = payload["transaction"]
            transaction_id = str(transaction["id"])
            amount = Decimal(str(payload["amount"]))
            currency = str(payload["currency"])
            attempt = int(payload.get("attempt", 1))
        except (KeyError, TypeError, ValueError, InvalidOperation):
            return 400, _error("invalid_request", "body needs transaction.id, amount, currency"), None
        with self.lock:
            self.requests += 1
            known = self.records.get(key)
            if known is not None:
                return self._repeat(known, params_hash)
            fault = self.faults.fault_for(self.name, key, _timestamp(transaction))
            if fault in ("outage", "error_before"):
                self.counter.add(fault, self.name)
                return 503, {**_error("unavailable", "service unavailable"), "processed": False}, None
            record = KeyRecord(params_hash, kind, transaction_id, amount, currency)
            self.records[key] = record
        if fault is not None:
            self.counter.add(fault, self.name)
        if fault == "late":
            time.sleep(self.faults.hang_s)
        elif fault == "slow":
            time.sleep(self.faults.slow_s)
        answer = self.behaviour.answer(self.name, transaction, attempt)
        time.sleep(max(0.0, answer.latency_ms) * self.latency_scale / 1000)
        body = self._settle(key, record, answer)
        return 200, body, fault

    def _repeat(self, known: KeyRecord, params_hash: str) -> tuple[int, dict, None]:
        if known.state == "cancelled":
            return 409, {**_error("cancelled", "key was cancelled before it was processed"), "processed": False}, None
        if known.params_hash != params_hash:
            return 422, _error("idempotency_key_reused", "idempotency key already used with other parameters"), None
        if known.state == "processing":
            return 409, _error("in_progress", "a request with this key is being processed"), None
        return 200, dict(known.body), None

    def _settle(self, key: str, record: KeyRecord, answer: PspAnswer) -> dict[str, Any]:
        """Record the decision (and the money) under the lock, exactly once per key."""
        with self.lock:
            if record.state == "cancelled":
                return {**_error("cancelled", "key was cancelled before it was processed"), "processed": False}
            reference = f"{self.name}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"
            if answer.status == "approved":
                self.ledger.record(self.name, key, record.transaction_id, record.kind, record.amount,
                                   record.currency, reference)
            record.body = {"reference": key, "psp_reference": reference, "status": answer.status,
                           "decline_code": answer.decline_code, "psp_latency_ms": answer.latency_ms}
            record.state = "done"
            return dict(record.body)

    def inquire(self, key: str) -> tuple[int, dict]:
        with self.lock:
            record = self.records.get(key)
            if record is None:
                return 404, {"reference": key, "status": "not_found"}
            record.inquiries += 1
            if self.faults.inquiry_fails(self.name, key, record.inquiries):
                self.counter.add("inquiry_error", self.name)
                return 503, {**_error("unavailable", "service unavailable"), "processed": False}
            if record.state == "done":
                return 200, dict(record.body)
            return 200, {"reference": key, "status": record.state}

    def void(self, key: str, kind: str) -> tuple[int, dict]:
        """Reverse an approval (ledger ``void``), or cancel a key this PSP has not received."""
        with self.lock:
            record = self.records.get(key)
            if record is None:
                self.records[key] = KeyRecord("", kind, "", Decimal(0), "", state="cancelled")
                return 200, {"reference": key, "status": "cancelled"}
            if record.state == "processing":
                return 409, _error("in_progress", "a request with this key is being processed")
            if record.state == "cancelled":
                return 200, {"reference": key, "status": "cancelled"}
            if record.body.get("status") != "approved":
                return 200, {"reference": key, "status": "nothing_to_void"}
            if not record.reversed:
                record.reversed = True
                self.ledger.record(self.name, key, record.transaction_id, "void", record.amount,
                                   record.currency, str(record.body.get("psp_reference")))
            return 200, {"reference": key, "status": "voided"}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def _timestamp(transaction: dict[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(transaction["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access log
        pass

    @property
    def psp(self) -> SandboxPsp:
        return self.server.psp  # type: ignore[attr-defined]

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _parts(self) -> list[str]:
        return [part for part in self.path.split("?")[0].split("/") if part]

    def do_GET(self) -> None:  # noqa: N802
        parts = self._parts()
        if parts == ["v1", "health"]:
            return self._send(200, {"status": "ok", "psp": self.psp.name})
        if len(parts) == 3 and parts[0] == "v1" and parts[1] in KINDS:
            return self._send(*self.psp.inquire(parts[2]))
        return self._send(404, _error("not_found", "no such route"))

    def do_POST(self) -> None:  # noqa: N802
        parts = self._parts()
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(parts) == 4 and parts[0] == "v1" and parts[1] in KINDS and parts[3] == "void":
            return self._send(*self.psp.void(parts[2], KINDS[parts[1]]))
        if len(parts) != 2 or parts[0] != "v1" or parts[1] not in KINDS:
            return self._send(404, _error("not_found", "no such route"))
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self._send(400, _error("missing_idempotency_key", "header Idempotency-Key is required"))
        try:
            payload = json.loads(raw)
        except ValueError:
            return self._send(400, _error("invalid_json", "body is not JSON"))
        status, body, fault = self.psp.authorise(KINDS[parts[1]], key, payload, raw)
        if fault == "error_after":
            return self._send(500, _error("internal_error", "internal error"))
        if fault == "reset":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        if fault == "timeout":
            time.sleep(self.psp.faults.hang_s)
        return self._send(status, body)
