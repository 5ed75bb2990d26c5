"""The request guard: an ASGI middleware in front of the service's API routes.

For each API route, before BentoML parses anything: bounded body size (413), JSON only (415, so
pickle and multipart payloads never reach a deserialiser), API key (401 missing / 403 wrong), and
validation against the route's request model (422 with ``{"errors": [{field, code, message}]}``).
Error bodies never contain input values, and field names that look like card numbers are redacted.
Nothing here logs request bodies.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from payroute.contracts import field_errors, screening_context
from payroute.pan import contains_pan
from payroute.serving.schemas import MAX_BODY_BYTES, error_body

API_KEY_HEADER = "x-api-key"
REDACTED = "<redacted>"
VALIDATED_SCOPE_KEY = "payroute.validated"
"""Where the guard leaves the request model it validated, so the API parses the body only once."""


@dataclass(frozen=True)
class RouteRule:
    """How one API route is guarded."""

    model: type[BaseModel]
    requires_key: bool


def api_key_error(presented: str | None, keys: Iterable[str]) -> tuple[int, dict] | None:
    """None when the key is one of ``keys``; else (status, error body). Compared in constant time."""
    if not presented:
        return 401, error_body("X-API-Key", "missing_api_key", "header X-API-Key is required")
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(presented.encode(), key.encode())
    if not valid:
        return 403, error_body("X-API-Key", "invalid_api_key", "the API key is not valid")
    return None


def redact_field(field: str) -> str:
    """A field path safe to answer with: any part that holds a card number is replaced."""
    if not contains_pan(field):
        return field
    return ".".join(REDACTED if contains_pan(part) else part for part in field.split("."))


def validation_body(error: ValidationError) -> dict:
    """422 body from a pydantic error: fields (redacted), codes and messages, no input values."""
    rows = []
    for row in field_errors(error):
        message = row.message if not contains_pan(row.message) else "invalid value"
        rows.append({"field": redact_field(row.field), "code": row.code, "message": message})
    return {"errors": rows}


def json_media_type(content_type: str | None) -> bool:
    """True for ``application/json`` (any parameters); other media types are refused with 415."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class RequestGuard:
    """ASGI middleware; ``config()`` gives (route path -> :class:`RouteRule`, API keys); other paths pass through."""

    def __init__(
        self,
        app,
        config: Callable[[], tuple[Mapping[str, RouteRule], Iterable[str]]],
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        # Rules and keys are read when the server builds its middleware stack (the environment is set).
        rules, keys = config()
        self.rules = dict(rules)
        self.api_keys = tuple(keys)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        rule = self.rules.get(scope.get("path", "")) if scope["type"] == "http" else None
        if rule is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        failure = self._check_headers(headers, rule)
        if failure is None:
            body, failure = await self._read_body(receive, headers)
        if failure is None:
            try:
                scope[VALIDATED_SCOPE_KEY] = rule.model.model_validate_json(body, context=screening_context())
            except ValidationError as error:
                failure = (422, validation_body(error))
        if failure is not None:
            await _respond(send, *failure)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_headers(self, headers: Mapping[str, str], rule: RouteRule) -> tuple[int, dict] | None:
        if rule.requires_key:
            failure = api_key_error(headers.get(API_KEY_HEADER), self.api_keys)
            if failure is not None:
                return failure
        if not json_media_type(headers.get("content-type")):
            return 415, error_body("Content-Type", "unsupported_media_type", "only application/json is accepted")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, error_body("<body>", "body_too_large", f"request body exceeds {self.max_body_bytes} bytes")
        return None

    async def _read_body(self, receive, headers) -> tuple[bytes, tuple[int, dict] | None]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, error_body("<body>", "disconnected", "client disconnected"))
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", (413, error_body("<body>", "body_too_large", f"request body exceeds {self.max_body_bytes} bytes"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _replay(body: bytes, downstream):
    """A ``receive`` that hands the already-read body to the inner app once, then the real channel."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await downstream()

    return receive


async def _respond(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class GuardValidatedInput:
    """Mixin for a BentoML input spec: take the model the guard validated instead of parsing the body again
    (the same model class on the same bytes); parse as usual when the guard did not run."""

    @classmethod
    async def from_http_request(cls, request, serde):
        validated = request.scope.get(VALIDATED_SCOPE_KEY)
        if type(validated) in cls.__bases__:  # exactly the request model this spec was built on
            return validated
        return await super().from_http_request(request, serde)
