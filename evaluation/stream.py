"""The benchmark stream: one simulated transaction stream with every attempt's outcome decided up front.

Common random numbers by construction: the outcome of attempt ``a`` of transaction ``i`` at PSP ``j``
is computed once, from the world's counter-based draws for ``(seed, i, j)``, before any policy runs;
every policy then reads from the same tables, so two policies that make the same choice get the same
result, and a policy run twice with one seed gives identical results.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from payroute.contracts import DeclineReason

# Status codes of the outcome tables (positions in STATUSES); reasons are positions in REASONS.
STATUSES = ("approved", "declined", "error", "timeout")
APPROVED, DECLINED, ERROR, TIMEOUT = range(4)
_STATUS_CODE = {name: code for code, name in enumerate(STATUSES)}
REASONS = tuple(DeclineReason)
_REASON_CODE = {reason.value: code for code, reason in enumerate(REASONS)}
NO_REASON = -1


@dataclass(frozen=True)
class Stream:
    """``n`` transactions in time order, ``k`` PSPs, up to ``A`` attempts each.

    transactions : DataFrame, n rows (contract columns, hidden simulator columns, ``amount_eur``)
    psps : tuple of k names;  priorities : int array (k,) catalogue static priority
    eligible : bool (n, k)            routable PSPs (catalogue, and a new PSP only once live)
    approval : float (n, k)           TRUE first-attempt approval probability (the oracle's knowledge)
    status : int8 (A, n, k)           outcome code of attempt a at PSP j (APPROVED, DECLINED, ERROR, TIMEOUT)
    soft : bool (A, n, k)             the failure blames the PSP path (soft decline, error, timeout): retry
    cost_eur : float (A, n, k)        fee + FX cost of that attempt in EUR (the catalogue's fee rule)
    reason : int8 (A, n, k)           decline reason (position in REASONS; NO_REASON when approved)
    latency_ms : float32 (A, n, k)
    amount_eur : float (n,);  minutes : float (n,) since ``start``;  segments : object (n,)
    """

    transactions: pd.DataFrame
    psps: tuple[str, ...]
    priorities: np.ndarray
    eligible: np.ndarray
    approval: np.ndarray
    status: np.ndarray
    soft: np.ndarray
    cost_eur: np.ndarray
    reason: np.ndarray
    latency_ms: np.ndarray
    amount_eur: np.ndarray
    minutes: np.ndarray
    segments: np.ndarray
    start: dt.datetime

    @property
    def size(self) -> int:
        return len(self.amount_eur)

    @property
    def max_attempts(self) -> int:
        return self.status.shape[0]


def segment_keys(transactions: pd.DataFrame) -> np.ndarray:
    """``country|payment_method|card_network`` per transaction: the segment of the segment policies."""
    network = transactions["card_network"].astype(object).where(transactions["card_network"].notna(), "-")
    keys = transactions["country"].astype(str) + "|" + transactions["payment_method"].astype(str) + "|" + network.astype(str)
    return keys.to_numpy(dtype=object)


def build_stream(world, n: int, start: dt.datetime, days: float, seed: int, max_attempts: int = 3) -> Stream:
    """Sample ``n`` transactions from ``world`` in ``[start, start + days)`` and decide every outcome.

    ``seed`` drives the traffic sample and the attempt draws; the world (PSP truth, incidents, drift)
    is the world's own.
    """
    rng = np.random.default_rng([seed, 0xBE7C])
    transactions = world.sample_transactions(n, start=start, days=days, rng=rng).reset_index(drop=True)
    encoded = world.encode(transactions)
    transactions["amount_eur"] = encoded.amount_eur
    eligible = world.routable(transactions)
    at_us = transactions["timestamp"].dt.as_unit("us").astype("int64").to_numpy()
    approval = np.where(eligible, world.approval_matrix(encoded, at=at_us), 0.0)
    k = len(world.psps)
    status = np.full((max_attempts, n, k), DECLINED, dtype=np.int8)
    soft = np.zeros((max_attempts, n, k), dtype=bool)
    cost = np.zeros((max_attempts, n, k))
    reason = np.full((max_attempts, n, k), NO_REASON, dtype=np.int8)
    latency = np.zeros((max_attempts, n, k), dtype=np.float32)
    for j, psp in enumerate(world.psps):
        rows = np.flatnonzero(eligible[:, j])
        if len(rows) == 0:
            continue
        subset = encoded.take(rows)
        draws = world.uniforms(subset.ids, psp, seed=seed)
        for a in range(max_attempts):
            outcome = world.attempt(subset, psp, at=at_us[rows], attempt=a + 1, uniforms=draws)
            status[a, rows, j] = outcome["status"].map(_STATUS_CODE).to_numpy(dtype=np.int8)
            soft[a, rows, j] = (outcome["decline_class"] == "soft").to_numpy()
            cost[a, rows, j] = (outcome["fee_eur"] + outcome["fx_cost_eur"]).to_numpy(dtype=float)
            reason[a, rows, j] = outcome["decline_reason"].map(_REASON_CODE).fillna(NO_REASON).to_numpy(dtype=np.int8)
            latency[a, rows, j] = outcome["latency_ms"].to_numpy(dtype=np.float32)
    minutes = ((transactions["timestamp"] - pd.Timestamp(start)).dt.total_seconds() / 60.0).to_numpy()
    priorities = np.array([world.catalog.by_name[name].static_priority for name in world.psps])
    return Stream(transactions, tuple(world.psps), priorities, eligible, approval, status, soft, cost, reason,
                  latency, encoded.amount_eur, minutes, segment_keys(transactions), start)
