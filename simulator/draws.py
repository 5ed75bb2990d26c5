"""Counter-based random draws for attempts: common random numbers across routing policies.

A draw is a hash of ``(seed, transaction id, PSP, stream)``, not a position in a generator's stream,
so the same transaction sent to the same PSP meets the same luck under every policy, in any order,
in any batch. The customer-level and fraud draws ignore the PSP: a customer decline or a fraud
decline is the same wherever the payment goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

# Columns of a draws array (n, N_DRAWS).
U_SYSTEM, U_HARD, U_CUSTOMER, U_APPROVE, U_REASON, U_LATENCY = range(6)
N_DRAWS = 6
_PER_TRANSACTION = (U_HARD, U_CUSTOMER)  # identical at every PSP

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective, well-mixed uint64 -> uint64 hash."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash_strings(values: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
    """Stable 64-bit hashes of strings (pandas' SipHash with its fixed key: same across runs)."""
    return pd.util.hash_array(np.asarray(values, dtype=object))


def _to_unit(bits: np.ndarray) -> np.ndarray:
    """Top 53 bits to a float in (0, 1): never exactly 0, so ``u < p`` is false when ``p == 0``."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def attempt_draws(
    transaction_ids: Sequence[str] | np.ndarray | pd.Series,
    psps: Sequence[str] | np.ndarray | str,
    seed: int,
    attempt: int | np.ndarray | None = None,
) -> np.ndarray:
    """Uniform draws of shape ``(n, N_DRAWS)`` for attempts of ``transaction_ids`` at ``psps``.

    ``psps`` is one name or one per transaction. With ``attempt=None`` the PSP-specific draws depend on
    (transaction, PSP) only, which is what common random numbers across policies need; pass the attempt
    number to get fresh draws for a repeated attempt at the same PSP.
    """
    ids = np.asarray(transaction_ids, dtype=object)
    n = len(ids)
    psp_names = np.full(n, psps, dtype=object) if isinstance(psps, str) else np.asarray(psps, dtype=object)
    with np.errstate(over="ignore"):
        seed_key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN)
        txn_key = _splitmix64(_hash_strings(ids) ^ seed_key)
        psp_key = _splitmix64(_hash_strings(psp_names) * np.uint64(0xD6E8FEB86659FD93))
        if attempt is not None:
            psp_key = _splitmix64(psp_key + np.asarray(attempt, dtype=np.uint64) * _GOLDEN)
        draws = np.empty((n, N_DRAWS))
        for stream in range(N_DRAWS):
            stream_key = np.uint64((stream + 1) * 0x632BE59BD9B4E019 & 0xFFFFFFFFFFFFFFFF)
            key = txn_key if stream in _PER_TRANSACTION else txn_key ^ psp_key
            draws[:, stream] = _to_unit(_splitmix64(key ^ stream_key))
    return draws
