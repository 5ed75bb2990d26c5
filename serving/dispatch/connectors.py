"""PSP connectors: authorise, payout, status inquiry and void, with every outcome classified.

The one question a connector must answer honestly is *could money have moved?*

``approved`` / ``declined``  the PSP answered (a PSP-reported error or timeout is a decline with its code);
``failed``                   definitely nothing done: connection refused before sending, a 503 that says
                             ``processed: false``, a refused request (4xx), a cancelled key;
``not_found``                (inquiry) the PSP never received the key;
``unknown``                  anything else: read timeout, connection reset, a 5xx after the request was
                             sent, a key still processing. Never retried elsewhere without an inquiry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import httpx

APPROVED, DECLINED, FAILED, NOT_FOUND, UNKNOWN = "approved", "declined", "failed", "not_found", "unknown"
ANSWERED = (APPROVED, DECLINED)

# Transport errors raised before the request could have reached the PSP.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class ConnectorResult:
    """A classified PSP answer. ``status`` is the PSP's own status word when it gave one."""

    kind: str
    status: str | None = None
    decline_code: str | None = None
    psp_reference: str | None = None
    latency_ms: float = 0.0
    detail: str = ""


class Connector(Protocol):
    psp: str

    def authorise(self, key: str, payload: dict[str, Any], operation: str = "payments") -> ConnectorResult: ...
    def inquire(self, key: str, operation: str = "payments") -> ConnectorResult: ...
    def void(self, key: str, operation: str = "payments") -> ConnectorResult: ...


def classify_response(status_code: int, body: dict[str, Any] | None) -> ConnectorResult:
    """Classify an HTTP answer (pure; see the module docstring for the rules)."""
    body = body if isinstance(body, dict) else {}
    word = body.get("status")
    if status_code == 200:
        if word == "approved":
            return ConnectorResult(APPROVED, word, None, body.get("psp_reference"), detail="answered")
        if word in ("declined", "error", "timeout"):
            return ConnectorResult(DECLINED, word, body.get("decline_code"), body.get("psp_reference"), detail="answered")
        if word in ("cancelled", "voided", "nothing_to_void"):
            return ConnectorResult(FAILED, word, detail=word)
        return ConnectorResult(UNKNOWN, word, detail=f"status_{word}")
    if status_code == 404 and word == "not_found":
        return ConnectorResult(NOT_FOUND, word, detail="not_found")
    if body.get("processed") is False:
        return ConnectorResult(FAILED, None, detail=f"http_{status_code}_not_processed")
    code = body.get("code")
    if status_code >= 500 or code in ("in_progress", "idempotency_key_reused"):
        # The request may have been processed (or an earlier one under this key was): only an
        # inquiry can tell.
        return ConnectorResult(UNKNOWN, None, detail=f"http_{status_code}_{code or 'error'}")
    return ConnectorResult(FAILED, None, detail=f"http_{status_code}_{code or 'refused'}")


def classify_exception(error: Exception) -> ConnectorResult:
    """Transport errors: before sending → ``failed``; after (timeouts, resets) → ``unknown``."""
    if isinstance(error, _NOT_SENT):
        return ConnectorResult(FAILED, detail=f"not_sent_{type(error).__name__}")
    return ConnectorResult(UNKNOWN, detail=f"transport_{type(error).__name__}")


class HttpConnector:
    """A connector for the sandbox PSP API (``payroute.sandbox.server``) over httpx."""

    def __init__(self, psp: str, base_url: str, timeout_s: float = 2.0, connect_timeout_s: float = 0.5,
                 max_connections: int = 64) -> None:
        self.psp = psp
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> ConnectorResult:
        started = time.perf_counter()
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            result = classify_exception(error)
        else:
            try:
                body = response.json()
            except ValueError:
                body = None
            if response.status_code == 200 and body is None:
                result = ConnectorResult(UNKNOWN, detail="unreadable_answer")
            else:
                result = classify_response(response.status_code, body)
        elapsed = (time.perf_counter() - started) * 1000
        return ConnectorResult(result.kind, result.status, result.decline_code, result.psp_reference,
                               round(elapsed, 3), result.detail)

    def authorise(self, key: str, payload: dict[str, Any], operation: str = "payments") -> ConnectorResult:
        return self._call("POST", f"/v1/{operation}", json=payload, headers={"Idempotency-Key": key})

    def inquire(self, key: str, operation: str = "payments") -> ConnectorResult:
        return self._call("GET", f"/v1/{operation}/{key}")

    def void(self, key: str, operation: str = "payments") -> ConnectorResult:
        return self._call("POST", f"/v1/{operation}/{key}/void")

    def close(self) -> None:
        self.client.close()


def authorisation_payload(transaction: dict[str, Any], attempt: int) -> dict[str, Any]:
    """The request body for an authorisation or payout (amount as a decimal string)."""
    return {"transaction": transaction, "attempt": attempt, "amount": str(Decimal(str(transaction["amount"]))),
            "currency": transaction["currency"]}
