"""A circuit breaker per PSP: opened by consecutive errors, probed once after a cool-down.

closed --(``failure_threshold`` consecutive errors)--> open --(``cooldown_s`` elapsed)--> half-open:
one probe is let through; its success closes the breaker, its failure re-opens it for another
cool-down. A decline is a success here: the PSP answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    """Breakers for every PSP, sharing thresholds and an injectable clock (seconds)."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self.opened = 0

    def state(self, psp: str) -> str:
        with self._lock:
            return self._state_of(self._states.get(psp) or _State())

    def _state_of(self, state: _State) -> str:
        if state.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - state.opened_at >= self.cooldown_s else OPEN

    def allow(self, psp: str) -> bool:
        """May a request go to ``psp`` now? In half-open, only the first caller gets the probe."""
        with self._lock:
            state = self._states.setdefault(psp, _State())
            current = self._state_of(state)
            if current == CLOSED:
                return True
            if current == HALF_OPEN and not state.probing:
                state.probing = True
                return True
            return False

    def record(self, psp: str, ok: bool) -> None:
        """Report an answer (``ok``) or an error/unknown outcome (not ``ok``)."""
        with self._lock:
            state = self._states.setdefault(psp, _State())
            if ok:
                state.failures, state.opened_at, state.probing = 0, None, False
                return
            state.failures += 1
            if state.probing or (state.opened_at is None and state.failures >= self.failure_threshold):
                if state.opened_at is None:
                    self.opened += 1
                state.opened_at, state.probing = self.clock(), False
