"""The fallback dispatcher: tries PSPs in ranked order until one approves, never charging twice.

Per attempt: journal the intent (fsync) → call the PSP with idempotency key ``{transaction}:{attempt}``
→ on an unknown outcome, status inquiry at that PSP (and a void of a key it never received) before
anything else → journal the result with its outcome → buffer the outcome for ``/feedback``. Then:

* approved → done; unknown after inquiry → ``pending`` (never retried elsewhere);
* hard or customer decline, or an unmapped decline code → ``declined``, no retry;
* soft decline or definite error (nothing processed) → next PSP, within ``max_attempts``, the time
  budget, the PSP's circuit breaker and the card's scheme reattempt caps.

A dispatcher restarted on the same journal first settles every attempt left in flight by inquiry.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from payroute.catalog import Catalog, attempt_cost
from payroute.contracts import AttemptOutcome, AttemptStatus, DeclineClass, DeclineReason, Transaction, TransactionType
from payroute.serving.dispatch.breaker import CircuitBreakers
from payroute.serving.dispatch.connectors import (
    ANSWERED, APPROVED, DECLINED, FAILED, NOT_FOUND, UNKNOWN, Connector, ConnectorResult, authorisation_payload,
)
from payroute.serving.dispatch.decline_codes import Classified, DeclineCodeMap
from payroute.serving.dispatch.journal import AttemptState, Journal, TransactionState
from payroute.serving.dispatch.limits import ReattemptLimits
from payroute.serving.dispatch.outcomes import OutcomeBuffer
from payroute.serving.dispatch.ranking import DepositBook, Ranking, RankingSource, payout_order

FINAL_APPROVED, FINAL_DECLINED, FINAL_PENDING, FINAL_FAILED, FINAL_BLOCKED = (
    "approved", "declined", "pending", "failed", "blocked")


@dataclass(frozen=True)
class DispatchPolicy:
    """Limits of one dispatch. Inquiries are spaced by ``inquiry_backoff_s`` (doubling)."""

    max_attempts: int = 3
    time_budget_s: float = 20.0
    inquiries: int = 3
    inquiry_backoff_s: float = 0.05


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    psp: str
    kind: str  # approved | declined | failed | unknown (after any inquiry)
    status: str  # AttemptStatus reported to /feedback
    decline_code: str | None
    decline_class: str | None
    first_kind: str  # what the PSP call itself gave, before any inquiry
    inquiries: int
    detail: str


@dataclass
class DispatchResult:
    transaction_id: str
    status: str  # approved | declined | pending | failed | blocked
    psp: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    stop: str = ""
    ranking_source: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)


def operation_of(transaction: Transaction) -> str:
    """Deposits are authorisations; withdrawals and affiliate payouts are payouts."""
    return "payments" if transaction.type == TransactionType.deposit else "payouts"


def outcome_status(result: ConnectorResult) -> AttemptStatus:
    if result.kind == APPROVED:
        return AttemptStatus.approved
    if result.kind == DECLINED:
        return AttemptStatus(result.status) if result.status in ("error", "timeout") else AttemptStatus.declined
    return AttemptStatus.error if result.kind == FAILED else AttemptStatus.timeout


def outcome_reason(result: ConnectorResult, classified: Classified | None) -> DeclineReason | None:
    """The normalised reason; an unmapped code is reported as the generic ``do_not_honor``."""
    if result.kind == APPROVED:
        return None
    if result.kind == DECLINED:
        return classified.reason if classified and classified.reason else DeclineReason.do_not_honor
    return DeclineReason.psp_error if result.kind == FAILED else DeclineReason.psp_timeout


class Dispatcher:
    """Thread-safe: ``dispatch`` may run concurrently for different transactions."""

    def __init__(self, catalog: Catalog, connectors: dict[str, Connector], ranking: RankingSource,
                 buffer: OutcomeBuffer, journal: Journal, codes: DeclineCodeMap,
                 breakers: CircuitBreakers | None = None, limits: ReattemptLimits | None = None,
                 policy: DispatchPolicy = DispatchPolicy(), deposits: DepositBook | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.catalog, self.connectors, self.ranking = catalog, connectors, ranking
        self.buffer, self.journal, self.codes = buffer, journal, codes
        self.breakers = breakers or CircuitBreakers()
        self.limits = limits or ReattemptLimits()
        self.policy, self.deposits, self.clock = policy, deposits or DepositBook(), clock
        self._done: dict[str, DispatchResult] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._restore_deposits()

    # ------------------------------------------------------------------ public
    def dispatch(self, transaction: Transaction, ranking: Ranking | None = None) -> DispatchResult:
        """Route one payment (``ranking``: a decision already obtained for it, e.g. from a batch).
        A repeat of a transaction already dispatched returns the first result."""
        with self._lock_of(transaction.id):
            if transaction.id not in self._done:
                self._done[transaction.id] = self._dispatch(transaction, ranking)
            return self._done[transaction.id]

    def _dispatch(self, transaction: Transaction, ranking: Ranking | None) -> DispatchResult:
        state = self.journal.recovered.get(transaction.id)
        if state is not None and state.final is not None:
            return DispatchResult(transaction.id, state.final["status"], state.final.get("psp"), stop="journal")
        result = DispatchResult(transaction.id, FINAL_FAILED)
        resume = self._recover(transaction, state, result) if state is not None else None
        if result.stop:  # recovery settled it
            return self._finish(transaction, result)
        return self._run(transaction, result, resume, ranking)

    def dispatch_many(self, transactions: Iterable[Transaction], workers: int = 16,
                      batch_size: int = 64) -> list[DispatchResult]:
        """Dispatch concurrently; deposits are ranked a batch at a time when the source can
        (``rank_many``), at most about two batches ahead of the workers."""
        rank_many = getattr(self.ranking, "rank_many", None)
        ahead = threading.BoundedSemaphore(2 * batch_size + workers)
        items = list(transactions)
        futures = []

        def run(transaction: Transaction, ranking: Ranking | None) -> DispatchResult:
            try:
                return self.dispatch(transaction, ranking)
            finally:
                ahead.release()

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dispatch") as pool:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                deposits = [t for t in chunk if operation_of(t) == "payments" and t.id not in self._done]
                rankings = dict(zip((t.id for t in deposits), rank_many(deposits))) if rank_many and deposits else {}
                for transaction in chunk:
                    ahead.acquire()
                    futures.append(pool.submit(run, transaction, rankings.get(transaction.id)))
            return [future.result() for future in futures]

    def resolve_pending(self) -> dict[str, str]:
        """Inquire again about every pending payment or payout (this run's or a previous run's, from the
        journal); returns the new status of each one settled. A restarted dispatcher calls it first."""
        settled: dict[str, str] = {}
        for txn_id, state in self.journal.states().items():
            if state.final is not None and state.final["status"] == FINAL_PENDING and state.attempts:
                with self._lock_of(txn_id):
                    status = self._resolve(txn_id, state)
                if status is not None:
                    settled[txn_id] = status
        return settled

    def _resolve(self, txn_id: str, state: TransactionState) -> str | None:
        """One pending transaction: inquire its last attempt; on a definite answer, journal the final."""
        last = state.attempts[-1]
        answer, _ = self._inquire(self.connectors[last.psp], txn_id, last.key, last.operation)
        status = {APPROVED: FINAL_APPROVED, DECLINED: FINAL_DECLINED, FAILED: FINAL_FAILED}.get(answer.kind)
        if status is None:
            return None
        final = {"type": "final", "transaction_id": txn_id, "status": status,
                 "psp": last.psp if status == FINAL_APPROVED else None, "stop": "resolved_by_inquiry"}
        self.journal.write(final)
        state.final = final
        self.journal.recovered[txn_id] = state  # a later dispatch of it returns this final
        done = self._done.get(txn_id)
        if done is not None:
            done.status, done.psp, done.stop = status, final["psp"], final["stop"]
        txn = state.transaction or {}
        if status == FINAL_APPROVED and txn.get("type") == TransactionType.deposit.value:
            self.deposits.record(txn.get("customer_id"), txn.get("payment_method"), last.psp)
        return status

    def _lock_of(self, transaction_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(transaction_id, threading.Lock())

    # ------------------------------------------------------------------ the loop
    def _run(self, transaction: Transaction, result: DispatchResult,
             resume: tuple[int, set[str], bool] | None, ranking: Ranking | None = None) -> DispatchResult:
        deadline = self.clock() + self.policy.time_budget_s
        next_attempt, tried, declined_before = resume or (1, set(), False)
        operation = operation_of(transaction)
        is_card_deposit = operation == "payments" and transaction.card_fingerprint is not None
        if is_card_deposit and next_attempt == 1 and self.limits.card_blocked(transaction.card_fingerprint,
                                                                   transaction.timestamp):
            result.status, result.stop = FINAL_BLOCKED, "card_reported_lost_stolen_or_pickup"
            return self._finish(transaction, result)
        if ranking is None or operation == "payouts":
            ranking = self._ranking(transaction, operation)
        result.ranking_source = ranking.source
        reserved = 0  # the attempt number a scheme reattempt was reserved for
        payload_txn = transaction.model_dump(mode="json")
        for psp in ranking.psps:
            if psp in tried or psp not in self.connectors:
                continue
            if next_attempt > self.policy.max_attempts:
                result.stop = "max_attempts"
                break
            if self.clock() > deadline:
                result.stop = "time_budget"
                break
            if declined_before and is_card_deposit and reserved != next_attempt:
                if not self.limits.try_reattempt(transaction.card_fingerprint, _network(transaction), transaction.timestamp):
                    result.stop = "scheme_reattempt_cap"
                    break
                reserved = next_attempt
            if not self.breakers.allow(psp):
                result.skipped.append((psp, "circuit_open"))
                continue
            tried.add(psp)
            record = self._attempt(transaction, payload_txn, psp, next_attempt, operation,
                                   ranking if next_attempt == 1 else None)
            result.attempts.append(record)
            next_attempt += 1
            if record.kind == APPROVED:
                result.status, result.psp, result.stop = FINAL_APPROVED, psp, "approved"
                break
            if record.kind == UNKNOWN:
                result.status, result.psp, result.stop = FINAL_PENDING, psp, "unknown_after_inquiry"
                break
            if record.kind == DECLINED:
                declined_before = True
                if record.decline_class != DeclineClass.soft.value:
                    result.status, result.stop = FINAL_DECLINED, f"no_retry_{record.decline_class or 'unknown_code'}"
                    break
        else:
            result.stop = result.stop or ("exhausted" if result.attempts else "no_psp_available")
        if result.status == FINAL_FAILED and declined_before:
            result.status = FINAL_DECLINED
        return self._finish(transaction, result)

    def _ranking(self, transaction: Transaction, operation: str) -> Ranking:
        if operation == "payouts":
            return payout_order(self.catalog, transaction, self.deposits)
        return self.ranking.rank(transaction)

    def _attempt(self, transaction: Transaction, payload_txn: dict[str, Any], psp: str, attempt: int,
                 operation: str, ranking: Ranking | None) -> AttemptRecord:
        key = f"{transaction.id}:{attempt}"
        self.journal.write({"type": "intent", "transaction_id": transaction.id, "attempt": attempt, "psp": psp,
                            "key": key, "operation": operation, "transaction": payload_txn})
        connector = self.connectors[psp]
        started = self.clock()
        first = connector.authorise(key, authorisation_payload(payload_txn, attempt), operation)
        self.breakers.record(psp, ok=first.kind in ANSWERED)
        answer, inquiries = first, 0
        if first.kind == UNKNOWN:
            answer, inquiries = self._inquire(connector, transaction.id, key, operation)
        latency_ms = (self.clock() - started) * 1000
        return self._settle(transaction, psp, attempt, key, first, answer, inquiries, latency_ms, ranking)

    def _inquire(self, connector: Connector, txn_id: str, key: str, operation: str) -> tuple[ConnectorResult, int]:
        """Status inquiry until the PSP gives a definite answer; a key it never received is voided
        (cancelled), so a request still on its way can no longer charge. Returns (answer, inquiries)."""
        delay = self.policy.inquiry_backoff_s
        answer = ConnectorResult(UNKNOWN, detail="no_inquiry")
        for number in range(1, self.policy.inquiries + 1):
            answer = connector.inquire(key, operation)
            self.journal.write({"type": "inquiry", "transaction_id": txn_id, "key": key, "number": number,
                                "kind": answer.kind, "status": answer.status})
            if answer.kind in ANSWERED:
                return answer, number
            if answer.kind == NOT_FOUND:
                void = connector.void(key, operation)
                self.journal.write({"type": "inquiry", "transaction_id": txn_id, "key": key, "number": number,
                                    "kind": "void", "status": void.status})
                if void.status in ("cancelled", "voided"):
                    return ConnectorResult(FAILED, void.status, detail=f"{void.status}_after_inquiry"), number
            time.sleep(delay)
            delay *= 2
        return ConnectorResult(UNKNOWN, answer.status, detail="unknown_after_inquiry"), self.policy.inquiries

    def _settle(self, transaction: Transaction, psp: str, attempt: int, key: str, first: ConnectorResult,
                answer: ConnectorResult, inquiries: int, latency_ms: float, ranking: Ranking | None) -> AttemptRecord:
        """Classify, journal the result with its outcome, then buffer the outcome for /feedback."""
        classified = self.codes.classify(psp, answer.decline_code) if answer.kind == DECLINED else None
        if classified is not None and operation_of(transaction) == "payments":
            self.limits.record_decline(transaction.card_fingerprint, classified.reason, transaction.timestamp)
        if answer.kind == APPROVED and transaction.type == TransactionType.deposit:
            self.deposits.record(transaction.customer_id, transaction.payment_method.value, psp)
        outcome = self._outcome(transaction, psp, attempt, answer, classified, latency_ms, ranking)
        decline_class = classified.decline_class.value if classified and classified.decline_class else None
        self.journal.write({"type": "result", "transaction_id": transaction.id, "attempt": attempt, "psp": psp,
                            "key": key, "kind": answer.kind, "decline_class": decline_class,
                            "first_kind": first.kind, "inquiries": inquiries, "outcome": outcome})
        self.buffer.put(outcome)
        return AttemptRecord(attempt, psp, answer.kind, outcome["status"], answer.decline_code, decline_class,
                             first.kind, inquiries, answer.detail or first.detail)

    def _outcome(self, transaction: Transaction, psp: str, attempt: int, answer: ConnectorResult,
                 classified: Classified | None, latency_ms: float, ranking: Ranking | None) -> dict[str, Any]:
        status = outcome_status(answer)
        cost = attempt_cost(self.catalog, psp, transaction.amount, transaction.currency, status)
        outcome = AttemptOutcome(
            transaction_id=transaction.id, attempt=attempt, psp=psp,
            timestamp=transaction.timestamp + dt.timedelta(milliseconds=attempt),
            status=status, decline_code=(answer.decline_code or None) if answer.kind == DECLINED else None,
            decline_reason=outcome_reason(answer, classified),
            latency_ms=round(min(max(latency_ms, 0.0), 600_000.0), 3),
            fee=cost.fee, fx_cost=cost.fx_cost, fee_eur=cost.fee_eur, fx_cost_eur=cost.fx_cost_eur,
            propensity=ranking.propensity if ranking is not None and ranking.propensity else None,
        )
        body = outcome.model_dump(mode="json")
        if ranking is not None and ranking.decision_id:
            body["decision_id"] = ranking.decision_id
        return body

    def _finish(self, transaction: Transaction, result: DispatchResult) -> DispatchResult:
        self.journal.write({"type": "final", "transaction_id": transaction.id, "status": result.status,
                            "psp": result.psp, "stop": result.stop})
        return result

    # ------------------------------------------------------------------ recovery
    def _recover(self, transaction: Transaction, state: TransactionState,
                 result: DispatchResult) -> tuple[int, set[str], bool] | None:
        """Settle what a previous run left: re-buffer journaled outcomes, inquire in-flight attempts.

        Sets ``result.stop`` when the transaction is settled; otherwise returns where to resume.
        """
        for attempt in state.attempts:
            if attempt.result is not None:
                self.buffer.put(attempt.result["outcome"])  # ignored if already buffered
            else:
                self._recover_attempt(transaction, attempt)
        last = state.attempts[-1].result if state.attempts else None
        tried = {a.psp for a in state.attempts}
        declined_before = any(a.result and a.result["kind"] == DECLINED for a in state.attempts)
        result.attempts = []
        if last is not None and last["kind"] == APPROVED:
            result.status, result.psp, result.stop = FINAL_APPROVED, state.attempts[-1].psp, "approved_recovered"
        elif last is not None and last["kind"] == UNKNOWN:
            result.status, result.psp, result.stop = FINAL_PENDING, state.attempts[-1].psp, "unknown_after_inquiry"
        elif last is not None and last["kind"] == DECLINED and last.get("decline_class") != DeclineClass.soft.value:
            result.status, result.stop = FINAL_DECLINED, f"no_retry_{last.get('decline_class') or 'unknown_code'}"
        return state.next_attempt, tried, declined_before

    def _recover_attempt(self, transaction: Transaction, attempt: AttemptState) -> None:
        connector = self.connectors[attempt.psp]
        answer, inquiries = self._inquire(connector, transaction.id, attempt.key, attempt.operation)
        first = ConnectorResult(UNKNOWN, detail="in_flight_at_restart")
        record = self._settle(transaction, attempt.psp, attempt.attempt, attempt.key, first, answer,
                              inquiries, 0.0, None)
        attempt.result = {"kind": record.kind, "decline_class": record.decline_class}

    def _restore_deposits(self) -> None:
        for state in self.journal.recovered.values():
            final, txn = state.final, state.transaction
            if final and final["status"] == FINAL_APPROVED and txn and txn.get("type") == "deposit":
                self.deposits.record(txn.get("customer_id"), txn.get("payment_method"), final.get("psp"))


def _network(transaction: Transaction) -> str | None:
    return transaction.card_network.value if transaction.card_network is not None else None
