"""Where the order of PSPs comes from: the scoring service with a tight timeout, else the catalogue.

:class:`FallbackRanking` asks the service and, if it is slow, down or answers nonsense, uses the
catalogue's static order (eligible PSPs by ``static_priority``) — a payment is never refused because
the ranking service is unavailable. :func:`payout_order` orders payouts and withdrawals by least cost,
with the closed-loop rule first.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from payroute.catalog import Catalog, attempt_cost
from payroute.contracts import AttemptStatus, Transaction


@dataclass(frozen=True)
class Ranking:
    """PSPs to try, in order, and the decision that produced them."""

    psps: tuple[str, ...]
    decision_id: str | None = None
    propensity: float | None = None
    source: str = "static"  # service | static | least_cost | closed_loop


class RankingSource(Protocol):
    def rank(self, transaction: Transaction) -> Ranking: ...


class StaticRanking:
    """The catalogue's fail-open order over the eligible PSPs."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def rank(self, transaction: Transaction) -> Ranking:
        eligible = set(self.catalog.eligibility(transaction).eligible)
        return Ranking(tuple(p for p in self.catalog.static_order if p in eligible), None, None, "static")


class ServiceRanking:
    """The scoring service's ``/rank`` through its client (``rank(transaction) -> dict``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def rank(self, transaction: Transaction) -> Ranking:
        answer = self.client.rank(transaction)
        entries = answer["ranking"]
        psps = tuple(entry["psp"] if isinstance(entry, dict) else str(entry) for entry in entries)
        return Ranking(psps, answer.get("decision_id"), answer.get("propensity"), "service")


class FallbackRanking:
    """``primary`` if it answers with at least one usable PSP, else ``fallback``; fallbacks counted."""

    def __init__(self, primary: RankingSource | None, fallback: RankingSource, known: set[str] | None = None) -> None:
        self.primary, self.fallback, self.known = primary, fallback, known
        self.fallbacks = self.served = 0
        self._lock = threading.Lock()

    def rank(self, transaction: Transaction) -> Ranking:
        if self.primary is not None:
            try:
                ranking = self.primary.rank(transaction)
                psps = tuple(p for p in ranking.psps if self.known is None or p in self.known)
                if psps:
                    with self._lock:
                        self.served += 1
                    return Ranking(psps, ranking.decision_id, ranking.propensity, ranking.source)
            except Exception:  # slow, down, or malformed: the static order takes over
                pass
        with self._lock:
            self.fallbacks += 1
        return self.fallback.rank(transaction)


class DepositBook:
    """Closed loop: the PSP of each customer's latest approved deposit, per payment method."""

    def __init__(self) -> None:
        self._book: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def record(self, customer_id: str | None, method: str, psp: str) -> None:
        if customer_id:
            with self._lock:
                self._book[(customer_id, method)] = psp

    def psp_for(self, customer_id: str | None, method: str) -> str | None:
        with self._lock:
            return self._book.get((customer_id, method)) if customer_id else None


def payout_order(catalog: Catalog, transaction: Transaction, deposits: DepositBook | None = None) -> Ranking:
    """Eligible PSPs by least approved cost (EUR); a withdrawal's deposit PSP first when eligible."""
    eligible = catalog.eligibility(transaction).eligible
    cost = {p: attempt_cost(catalog, p, transaction.amount, transaction.currency, AttemptStatus.approved).total_eur
            for p in eligible}
    order = sorted(eligible, key=lambda p: (cost[p], catalog.by_name[p].static_priority, p))
    source = "least_cost"
    if deposits is not None and transaction.type.value == "withdrawal":
        home = deposits.psp_for(transaction.customer_id, transaction.payment_method.value)
        if home in cost:
            order = [home] + [p for p in order if p != home]
            source = "closed_loop"
    return Ranking(tuple(order), None, None, source)
