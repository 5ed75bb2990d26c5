"""Client of the scoring service for the dispatcher and users: tight timeouts, typed answers, typed failures.

A caller inside a card authorisation must hear "no" fast: any timeout, connection failure, 429 or 5xx
raises :class:`ServiceUnavailable` (use the static order); a 4xx the caller caused raises
:class:`RequestRejected` with the service's ``errors`` rows (409 is :class:`OutcomeConflict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel

from payroute.serving.schemas import FeedbackAck, RankBatchResponse, RankResponse

DEFAULT_TIMEOUT_S = 0.5


class ScoringError(Exception):
    """Base of the client's failures."""


class ServiceUnavailable(ScoringError):
    """Timeout, connection error, overload (429/503) or server error: fall back to the static order."""


class RequestRejected(ScoringError):
    """The service refused the request (4xx); ``errors`` holds its ``{field, code, message}`` rows."""

    def __init__(self, status_code: int, errors: list[dict[str, Any]]) -> None:
        self.status_code = status_code
        self.errors = errors
        super().__init__(f"HTTP {status_code}: " + "; ".join(f"{e.get('field')}: {e.get('code')}" for e in errors))


class OutcomeConflict(RequestRejected):
    """409: a different outcome was already recorded for this (transaction, attempt)."""


def _payload(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    return value.model_dump(mode="json", exclude_none=True) if isinstance(value, BaseModel) else dict(value)


def feedback_payload(outcome: BaseModel | Mapping[str, Any], decision_id: str | None) -> dict[str, Any]:
    body = _payload(outcome)
    body.pop("decision_id", None)
    if decision_id is not None:
        body["decision_id"] = decision_id
    return body


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 200:
        return response.json()
    if response.status_code in (429, 503) or response.status_code >= 500:
        raise ServiceUnavailable(f"HTTP {response.status_code}")
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        errors = []
    kind = OutcomeConflict if response.status_code == 409 else RequestRejected
    raise kind(response.status_code, errors)


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 0.2))


class ScoringClient:
    """Synchronous client: ``rank``, ``rank_batch``, ``feedback`` (and ``status``)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=_timeout(timeout))

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return _check(self._http.post(path, json=body))
        except httpx.HTTPError as error:
            raise ServiceUnavailable(f"{type(error).__name__} calling {path}") from error

    def rank(self, transaction: BaseModel | Mapping[str, Any]) -> RankResponse:
        return RankResponse.model_validate(self._post("/rank", {"transaction": _payload(transaction)}))

    def rank_batch(self, transactions: Sequence[BaseModel | Mapping[str, Any]]) -> list[RankResponse]:
        body = {"transactions": [_payload(t) for t in transactions]}
        return RankBatchResponse.model_validate(self._post("/rank_batch", body)).decisions

    def feedback(self, outcome: BaseModel | Mapping[str, Any], decision_id: str | None = None) -> FeedbackAck:
        return FeedbackAck.model_validate(self._post("/feedback", feedback_payload(outcome, decision_id)))

    def status(self) -> dict[str, Any]:
        try:
            return _check(self._http.get("/status"))
        except httpx.HTTPError as error:
            raise ServiceUnavailable(type(error).__name__) from error

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ScoringClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncScoringClient:
    """Asynchronous twin of :class:`ScoringClient`."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=_timeout(timeout))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return _check(await self._http.post(path, json=body))
        except httpx.HTTPError as error:
            raise ServiceUnavailable(f"{type(error).__name__} calling {path}") from error

    async def rank(self, transaction: BaseModel | Mapping[str, Any]) -> RankResponse:
        return RankResponse.model_validate(await self._post("/rank", {"transaction": _payload(transaction)}))

    async def rank_batch(self, transactions: Sequence[BaseModel | Mapping[str, Any]]) -> list[RankResponse]:
        body = {"transactions": [_payload(t) for t in transactions]}
        return RankBatchResponse.model_validate(await self._post("/rank_batch", body)).decisions

    async def feedback(self, outcome: BaseModel | Mapping[str, Any], decision_id: str | None = None) -> FeedbackAck:
        return FeedbackAck.model_validate(await self._post("/feedback", feedback_payload(outcome, decision_id)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncScoringClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
