"""Health guard: demote a PSP on a burst of errors or timeouts, probe it, restore it on recovery.

Health is about technical availability (errors, timeouts), per PSP across segments: an outage is the
PSP's, not a market's. Declines are the bandit's business. States: ``healthy`` → ``demoted`` after
``burst_errors`` consecutive errors or an EWMA error rate above the threshold; a demoted PSP keeps only
the probe rate of first places (and the end of the cascade) and returns to ``healthy`` after
``recovery_successes`` consecutive non-error outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from payroute.contracts import AttemptStatus

HEALTHY = "healthy"
DEMOTED = "demoted"
ERROR_STATUSES = frozenset({AttemptStatus.error, AttemptStatus.timeout})


@dataclass(frozen=True)
class PspHealth:
    state: str = HEALTHY
    consecutive_errors: int = 0
    consecutive_successes: int = 0
    error_rate: float = 0.0  # EWMA of the error indicator
    events: int = 0
    demoted_at: float | None = None  # epoch seconds


def next_health(
    health: PspHealth,
    is_error: bool,
    now: float,
    *,
    burst_errors: int | None,
    error_rate_threshold: float,
    alpha: float,
    min_events: int,
    recovery_successes: int,
) -> PspHealth:
    """The health after one outcome (pure)."""
    rate = (1 - alpha) * health.error_rate + alpha * float(is_error)
    errors = health.consecutive_errors + 1 if is_error else 0
    successes = 0 if is_error else health.consecutive_successes + 1
    updated = replace(
        health, consecutive_errors=errors, consecutive_successes=successes, error_rate=rate, events=health.events + 1
    )
    if health.state == HEALTHY:
        burst = burst_errors is not None and errors >= burst_errors
        sustained = updated.events >= min_events and rate >= error_rate_threshold
        if burst or sustained:
            return replace(updated, state=DEMOTED, demoted_at=now)
        return updated
    if successes >= recovery_successes:
        return replace(updated, state=HEALTHY, demoted_at=None, error_rate=0.0, events=0)
    return updated


class HealthGuard:
    """Per-PSP health states, updated from outcomes."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self._health: dict[str, PspHealth] = {}
        self._demoted: set[str] = set()

    def state(self, psp: str) -> PspHealth:
        return self._health.get(psp, _HEALTHY)

    def is_demoted(self, psp: str) -> bool:
        health = self._health.get(psp)
        return health is not None and health.state == DEMOTED

    def demoted_mask(self, psps: list[str]) -> np.ndarray:
        """Boolean mask over ``psps``: which are demoted (cheap when none is)."""
        if not self._demoted:
            return np.zeros(len(psps), dtype=bool)
        return np.fromiter((p in self._demoted for p in psps), dtype=bool, count=len(psps))

    def observe(self, psp: str, status: AttemptStatus, now: float) -> PspHealth:
        c = self.config
        if c.burst_errors is None and c.error_rate_threshold >= 1:
            return self.state(psp)
        health = next_health(
            self.state(psp), status in ERROR_STATUSES, now,
            burst_errors=c.burst_errors, error_rate_threshold=c.error_rate_threshold, alpha=c.error_ewma_alpha,
            min_events=c.min_health_events, recovery_successes=c.recovery_successes,
        )
        self._health[psp] = health
        (self._demoted.add if health.state == DEMOTED else self._demoted.discard)(psp)
        return health

    def to_json(self) -> dict[str, Any]:
        return {psp: asdict(health) for psp, health in self._health.items()}

    def load_json(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        self._health = {psp: PspHealth(**values) for psp, values in data.items()}
        self._demoted = {psp for psp, health in self._health.items() if health.state == DEMOTED}


_HEALTHY = PspHealth()
