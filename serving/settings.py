"""Service settings, read from the environment once at start-up (``payroute serve`` sets them from flags).

| variable | default | meaning |
|---|---|---|
| ``PAYROUTE_STATE_DIR`` | ``./state`` | outcome/decision logs, snapshots |
| ``PAYROUTE_MODELS_DIR`` | unset | bundle folder (``<dir>/champion`` or ``<dir>``) |
| ``PAYROUTE_TRACKING_URI`` | unset | MLflow registry holding ``payroute@champion`` (if no models dir) |
| ``PAYROUTE_CATALOG`` | embedded | PSP catalogue YAML |
| ``PAYROUTE_API_KEYS`` | unset | comma-separated API keys |
| ``PAYROUTE_API_KEYS_FILE`` | unset | file with one API key per line |
| ``PAYROUTE_RANK_REQUIRES_KEY`` | ``0`` | require the key on /rank and /rank_batch too |
| ``PAYROUTE_MODEL_POLL_S`` | ``5`` | how often the champion is checked for a change |
| ``PAYROUTE_SNAPSHOT_S`` | ``60`` | how often bandit + feature state is snapshotted |
| ``PAYROUTE_MAX_CONCURRENCY`` | ``64`` | in-flight requests before 429 (read at import) |
| ``PAYROUTE_TRACE_REQUESTS`` | ``0`` | OpenTelemetry spans for the API routes too (read at import; set it when traces are exported) |
| ``PAYROUTE_SEED`` | ``0`` | router seed |
| ``PAYROUTE_DECISION_RETENTION_DAYS`` | ``30`` | decisions older than this are deleted (an outcome for one is stored, not learned from); ``0`` keeps all |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def read_api_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Keys from ``PAYROUTE_API_KEYS`` and ``PAYROUTE_API_KEYS_FILE`` (blank lines and ``#`` comments skipped)."""
    keys = [k.strip() for k in environ.get("PAYROUTE_API_KEYS", "").split(",")]
    path = environ.get("PAYROUTE_API_KEYS_FILE")
    if path:
        keys += [line.strip() for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    return tuple(k for k in keys if k)


DEFAULT_DECISION_RETENTION_DAYS = 30.0


def retention_seconds(days: str | None) -> float | None:
    """``PAYROUTE_DECISION_RETENTION_DAYS`` as seconds: unset → the default, 0 (or less) → keep every decision."""
    value = DEFAULT_DECISION_RETENTION_DAYS if days is None or not days.strip() else float(days)
    return value * 86_400 if value > 0 else None


@dataclass(frozen=True)
class ServiceSettings:
    state_dir: Path
    models_dir: Path | None
    tracking_uri: str | None
    catalog_path: Path | None
    api_keys: tuple[str, ...]
    rank_requires_key: bool
    model_poll_s: float
    snapshot_s: float
    seed: int
    decision_retention_s: float | None = DEFAULT_DECISION_RETENTION_DAYS * 86_400

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if environ is None else environ
        optional_path = lambda name: Path(env[name]) if env.get(name) else None  # noqa: E731
        return cls(
            state_dir=Path(env.get("PAYROUTE_STATE_DIR", "state")),
            models_dir=optional_path("PAYROUTE_MODELS_DIR"),
            tracking_uri=env.get("PAYROUTE_TRACKING_URI") or None,
            catalog_path=optional_path("PAYROUTE_CATALOG"),
            api_keys=read_api_keys(env),
            rank_requires_key=_flag(env.get("PAYROUTE_RANK_REQUIRES_KEY")),
            model_poll_s=float(env.get("PAYROUTE_MODEL_POLL_S", "5")),
            snapshot_s=float(env.get("PAYROUTE_SNAPSHOT_S", "60")),
            seed=int(env.get("PAYROUTE_SEED", "0")),
            decision_retention_s=retention_seconds(env.get("PAYROUTE_DECISION_RETENTION_DAYS")),
        )


def max_concurrency(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    return int(env.get("PAYROUTE_MAX_CONCURRENCY", "64"))


def tracing_config(routes: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """BentoML's ``tracing`` service config: ``routes`` left out of OpenTelemetry unless ``PAYROUTE_TRACE_REQUESTS``.

    BentoML wraps every request in OpenTelemetry's ASGI middleware (four spans, ≈ 15 attributes in all)
    whether or not an exporter is configured: 0.3–0.45 ms of CPU per request on this machine, about
    as much as a /rank's own routing work, for spans nobody records by default. Operators who export traces turn it
    back on; the decision id already ties a decision to its outcomes.
    """
    env = os.environ if environ is None else environ
    if _flag(env.get("PAYROUTE_TRACE_REQUESTS")):
        return {}
    return {"excluded_urls": [re.escape(route) + "$" for route in routes]}
