"""Where the order of PSPs comes from: the scoring service with a tight timeout, else the catalogue.

:class:`FallbackRanking` asks the service and, if it is slow, down or answers nonsense, uses the
catalogue's static order (eligible PSPs by ``static_priority``) — a payment is never refused because
the ranking service is unavailable. :func:`payout_order` orders payouts and withdrawals by least cost,
with the closed-loop rule first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


def _field(answer: Any, name: str) -> Any:
    return answer.get(name) if isinstance(answer, dict) else getattr(answer, name, None)


def ranking_from_answer(answer: Any) -> Ranking:
    """A service answer (``RankResponse`` or its JSON dict) as a :class:`Ranking`."""
    psps = tuple(str(_field(entry, "psp")) for entry in _field(answer, "ranking"))
    return Ranking(psps, _field(answer, "decision_id"), _field(answer, "propensity"), "service")


class ServiceRanking:
    """The scoring service's ``/rank`` and ``/rank_batch`` through its client
    (``payroute.serving.client.ScoringClient``, built with a tight timeout)."""

    def __init__(self, client: Any, batch_size: int = 100) -> None:
        self.client, self.batch_size = client, batch_size

    def rank(self, transaction: Transaction) -> Ranking:
        return ranking_from_answer(self.client.rank(transaction))

    def rank_many(self, transactions: list[Transaction]) -> list[Ranking]:
        answers = self.client.rank_batch(transactions)
        if len(answers) != len(transactions):
            raise ValueError("rank_batch answered a different number of decisions")
        return [ranking_from_answer(answer) for answer in answers]


class FallbackRanking:
    """``primary`` if it answers with at least one usable PSP, else ``fallback``; fallbacks counted.

    After a primary failure the primary is not asked again for ``retry_after_s`` (a slow service would
    otherwise cost its timeout on every payment).
    """

    def __init__(self, primary: RankingSource | None, fallback: RankingSource, known: set[str] | None = None,
                 retry_after_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.primary, self.fallback, self.known = primary, fallback, known
        self.retry_after_s, self.clock = retry_after_s, clock
        self.fallbacks = self.served = 0
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def _primary_usable(self) -> bool:
        with self._lock:
            return self.primary is not None and (
                self._failed_at is None or self.clock() - self._failed_at >= self.retry_after_s)

    def _failed(self) -> None:
        with self._lock:
            self._failed_at = self.clock()

    def rank(self, transaction: Transaction) -> Ranking:
        if self._primary_usable():
            try:
                ranking = self.primary.rank(transaction)
                psps = tuple(p for p in ranking.psps if self.known is None or p in self.known)
                if psps:
                    with self._lock:
                        self.served += 1
                    return Ranking(psps, ranking.decision_id, ranking.propensity, ranking.source)
            except Exception:  # slow, down, or malformed: the static order takes over
                self._failed()
        with self._lock:
            self.fallbacks += 1
        return self.fallback.rank(transaction)

    def rank_many(self, transactions: list[Transaction]) -> list[Ranking]:
        """One batch call to the primary when it has ``rank_many``; per transaction fallback otherwise."""
        batch = getattr(self.primary, "rank_many", None)
        if batch is None:
            return [self.rank(t) for t in transactions]
        rankings: list[Ranking | None] = [None] * len(transactions)
        if self._primary_usable():
            try:
                rankings = list(batch(transactions))
            except Exception:
                self._failed()
        out = []
        for transaction, ranking in zip(transactions, rankings):
            psps = tuple(p for p in ranking.psps if self.known is None or p in self.known) if ranking else ()
            if psps:
                with self._lock:
                    self.served += 1
                out.append(Ranking(psps, ranking.decision_id, ranking.propensity, ranking.source))
            else:
                with self._lock:
                    self.fallbacks += 1
                out.append(self.fallback.rank(transaction))
        return out


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
