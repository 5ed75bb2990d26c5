"""Card-scheme reattempt limits per card, keyed by the caller's card fingerprint (never the number).

A *reattempt* is any authorisation of a transaction sent after that transaction was declined (at any
PSP): the schemes count them per card, whoever the acquirer. Defaults are the published caps:

* Visa — no reattempt after a category-1 decline ("issuer will never approve": the hard class here);
  at most 15 reattempts per card in 30 days for the other categories (Visa Core Rules, "Excessive
  reattempts" / decline response code categories, effective April 2021).
* Mastercard — at most 10 reattempts per card in 24 hours and 35 in 30 days (Mastercard Transaction
  Processing Excellence program, "Excessive Authorization Attempts"; 30-day cap from 2024), and no
  reattempt after a merchant-advice-code 03/21 "do not try again" (the hard class here).

Within a transaction a hard decline always ends it (the dispatcher). Across transactions, a card whose
issuer said it is dead — lost, stolen, pick up (Visa category 1) — is refused outright for
``block_days``; the other hard reasons (suspected fraud, restricted) are Visa category 2 and only end
the transaction.

Windows use the transaction's timestamp. A reattempt is refused if the cap is already reached in the
window *centred* on it (``(at - W, at + W)``): conservative, and it keeps every sliding window within
the cap even when concurrent transactions arrive slightly out of order.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from payroute.contracts import DeclineReason


@dataclass(frozen=True)
class ReattemptCap:
    window: dt.timedelta
    max_reattempts: int


DEFAULT_CAPS: dict[str, tuple[ReattemptCap, ...]] = {
    "visa": (ReattemptCap(dt.timedelta(days=30), 15),),
    "mastercard": (ReattemptCap(dt.timedelta(hours=24), 10), ReattemptCap(dt.timedelta(days=30), 35)),
}


CARD_DEAD_REASONS: frozenset[DeclineReason] = frozenset(
    {DeclineReason.lost_card, DeclineReason.stolen_card, DeclineReason.pickup_card}
)


@dataclass
class ReattemptLimits:
    """Thread-safe book of reattempts and card-dead declines per card fingerprint."""

    caps: dict[str, tuple[ReattemptCap, ...]] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    block_reasons: frozenset[DeclineReason] = CARD_DEAD_REASONS
    block_days: float = 30.0
    reattempts: dict[str, list[dt.datetime]] = field(default_factory=lambda: defaultdict(list))
    hard_declined: dict[str, dt.datetime] = field(default_factory=dict)
    refused: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def card_blocked(self, fingerprint: str | None, at: dt.datetime) -> bool:
        """True within ``block_days`` of a card-dead decline of this card (any transaction)."""
        if fingerprint is None:
            return False
        with self._lock:
            return self._blocked(fingerprint, at)

    def _blocked(self, fingerprint: str, at: dt.datetime) -> bool:
        since = self.hard_declined.get(fingerprint)
        return since is not None and abs(at - since) < dt.timedelta(days=self.block_days)

    def record_decline(self, fingerprint: str | None, reason: DeclineReason | None, at: dt.datetime) -> None:
        if fingerprint is not None and reason in self.block_reasons:
            with self._lock:
                self.hard_declined.setdefault(fingerprint, at)

    def try_reattempt(self, fingerprint: str | None, network: str | None, at: dt.datetime) -> bool:
        """Reserve one reattempt for the card at ``at`` if every cap of its network allows it."""
        if fingerprint is None:
            return True
        with self._lock:
            if self._blocked(fingerprint, at):
                self.refused += 1
                return False
            history = self.reattempts[fingerprint]
            for cap in self.caps.get(network or "", ()):
                near = sum(1 for t in history if abs(t - at) < cap.window)
                if near >= cap.max_reattempts:
                    self.refused += 1
                    return False
            history.append(at)
            return True


def worst_window(times: list[dt.datetime], window: dt.timedelta) -> int:
    """The most reattempts any half-open window ``[s, s + window)`` holds (for checking the caps)."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(ordered):
        while t - ordered[left] >= window:
            left += 1
        best = max(best, right - left + 1)
    return best
