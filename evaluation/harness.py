"""Run one policy over one stream: decide a batch, play the cascade from the outcome tables, feed back.

Feedback arrives batch by batch (a few seconds to minutes of traffic), as in a service whose outcomes
come back asynchronously; with the default batch of 16 decisions a policy reacts within tens of
decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payroute.evaluation.policies import AttemptFeedback, DecisionBatch, Policy
from payroute.evaluation.stream import APPROVED, Stream

DEFAULT_BATCH = 16


@dataclass(frozen=True)
class RunRecord:
    """Per-transaction results of one policy on one stream (arrays of length n).

    first_psp, exploit_psp : int     PSP tried first, and the one the policy would pick without exploring
    propensity : float               the policy's probability of ``first_psp`` at decision time
    first_p, exploit_p, oracle_p     TRUE approval probability of those choices and of the best eligible PSP
    first_approved, approved : bool  first attempt approved; approved after the cascade
    attempts : int;  cost_eur : float (all attempts' fees);  approved_eur : float (amount if approved)
    """

    policy: str
    first_psp: np.ndarray
    exploit_psp: np.ndarray
    propensity: np.ndarray
    first_p: np.ndarray
    exploit_p: np.ndarray
    oracle_p: np.ndarray
    first_approved: np.ndarray
    approved: np.ndarray
    attempts: np.ndarray
    cost_eur: np.ndarray
    approved_eur: np.ndarray


def play_cascade(stream: Stream, rows: np.ndarray, rankings: np.ndarray) -> tuple[AttemptFeedback, np.ndarray, np.ndarray, np.ndarray]:
    """Try each transaction's ranking in order until approval, a non-retryable decline, or no attempts left.

    Returns the feedback for the policy, and per transaction: approved, attempts made, total cost (EUR).
    """
    n = len(rows)
    approved = np.zeros(n, bool)
    attempts = np.zeros(n, np.int64)
    cost = np.zeros(n)
    active = np.arange(n)
    parts = []
    for a in range(min(stream.max_attempts, rankings.shape[1])):
        psp = rankings[active, a]
        active, psp = active[psp >= 0], psp[psp >= 0]
        if len(active) == 0:
            break
        stream_rows = rows[active]
        ok = stream.status[a, stream_rows, psp] == APPROVED
        soft = stream.soft[a, stream_rows, psp]
        approved[active] = ok
        attempts[active] += 1
        cost[active] += stream.cost_eur[a, stream_rows, psp]
        parts.append((active, psp, np.full(len(active), a + 1), ok, ok | soft, stream.status[a, stream_rows, psp],
                      stream.reason[a, stream_rows, psp], stream.latency_ms[a, stream_rows, psp]))
        active = active[soft]
    if not parts:
        raise ValueError("a policy ranked no eligible PSP first")
    feedback = AttemptFeedback(*(np.concatenate([part[i] for part in parts]) for i in range(8)))
    return feedback, approved, attempts, cost


def eligible_only(rankings: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Rankings with PSPs the stream does not allow removed (order kept, ``-1`` padding after)."""
    safe = np.where(rankings >= 0, rankings, 0)
    keep = (rankings >= 0) & np.take_along_axis(eligible, safe, axis=1)
    if keep.all() or (keep == (rankings >= 0)).all():
        return rankings
    order = np.argsort(~keep, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(rankings, order, axis=1), -1)


def run_policy(policy: Policy, stream: Stream, batch_size: int = DEFAULT_BATCH) -> RunRecord:
    """Route the whole stream with ``policy``; deterministic given the policy's seed and the stream."""
    n = stream.size
    out = {name: np.zeros(n, dtype) for name, dtype in (
        ("first_psp", np.int64), ("exploit_psp", np.int64), ("propensity", float), ("first_approved", bool),
        ("approved", bool), ("attempts", np.int64), ("cost_eur", float))}
    for begin in range(0, n, batch_size):
        rows = np.arange(begin, min(begin + batch_size, n))
        batch = DecisionBatch(rows, stream.transactions.iloc[begin:begin + len(rows)], stream.eligible[rows],
                              stream.segments[rows], stream.minutes[rows])
        decisions = policy.select(batch)
        rankings = eligible_only(decisions.rankings, batch.eligible)
        feedback, approved, attempts, cost = play_cascade(stream, rows, rankings)
        policy.update(batch, feedback)
        first = feedback.attempts == 1
        out["first_psp"][rows] = rankings[:, 0]
        out["exploit_psp"][rows] = decisions.exploit
        out["propensity"][rows] = decisions.propensities
        out["first_approved"][rows[feedback.rows[first]]] = feedback.approved[first]
        out["approved"][rows] = approved
        out["attempts"][rows] = attempts
        out["cost_eur"][rows] = cost
    index = np.arange(n)
    return RunRecord(
        policy=policy.name,
        first_p=stream.approval[index, out["first_psp"]],
        exploit_p=stream.approval[index, out["exploit_psp"]],
        oracle_p=np.where(stream.eligible, stream.approval, 0.0).max(axis=1),
        approved_eur=stream.amount_eur * out["approved"],
        **out,
    )
