"""Fault injection for sandbox PSPs: what goes wrong with a request, decided from its idempotency key.

A fault is drawn from a hash of ``(seed, PSP, idempotency key)``, so a run is reproducible whatever the
thread interleaving, and a repeated request meets the same fault only if the key is the same.

Faults, in the order a request meets them:

``outage``        inside an outage window (simulated time): 503 ``processed: false``, nothing charged.
``error_before``  503 ``processed: false`` before processing: a definite error, nothing charged.
``error_after``   processed (maybe charged), then 500 without saying so: an unknown outcome.
``timeout``       processed (maybe charged), answer delayed past the client's timeout: unknown.
``reset``         processed (maybe charged), connection dropped without an answer: unknown.
``late``          answer decided only after the client's timeout (inquiry meanwhile says
                  ``processing``), then maybe charged: the nastiest unknown.
``slow``          answer delayed but inside the client's timeout.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field

FAULT_KINDS = ("error_before", "error_after", "timeout", "reset", "late", "slow")


@dataclass(frozen=True)
class OutageWindow:
    """A PSP down in ``[start, end)`` of simulated time (the transaction's timestamp)."""

    psp: str
    start: dt.datetime
    end: dt.datetime

    def covers(self, psp: str, at: dt.datetime) -> bool:
        return psp == self.psp and self.start <= at < self.end


@dataclass(frozen=True)
class FaultPlan:
    """Rates of each fault per request (authorise/payout), inquiry errors, delays and outage windows.

    ``hang_s`` is how long a ``timeout``/``late`` answer is held (longer than the client's timeout);
    ``slow_s`` is the delay of a ``slow`` answer (shorter than it).
    """

    seed: int = 0
    rates: dict[str, float] = field(default_factory=dict)
    inquiry_error_rate: float = 0.0
    hang_s: float = 0.5
    slow_s: float = 0.05
    outages: tuple[OutageWindow, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if sum(self.rates.values()) > 1:
            raise ValueError("fault rates must sum to at most 1")

    def draw(self, psp: str, key: str, stream: str = "request") -> float:
        """A uniform in [0, 1) from ``(seed, psp, key, stream)``."""
        digest = hashlib.blake2b(f"{self.seed}|{psp}|{key}|{stream}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def fault_for(self, psp: str, key: str, at: dt.datetime | None) -> str | None:
        """The fault a request meets, or None."""
        if at is not None and any(window.covers(psp, at) for window in self.outages):
            return "outage"
        u = self.draw(psp, key)
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += self.rates.get(kind, 0.0)
            if u < edge:
                return kind
        return None

    def inquiry_fails(self, psp: str, key: str, number: int) -> bool:
        return self.draw(psp, key, f"inquiry{number}") < self.inquiry_error_rate


class FaultCounter:
    """Thread-safe tally of the faults actually injected, by kind and PSP."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: str, psp: str) -> None:
        with self._lock:
            self._counts[(kind, psp)] += 1

    def by_kind(self) -> dict[str, int]:
        with self._lock:
            totals: Counter[str] = Counter()
            for (kind, _), n in self._counts.items():
                totals[kind] += n
            return dict(totals)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())
