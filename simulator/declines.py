"""Which decline reason a failed attempt reports, given the gate that failed it.

Fraud and customer gates pick their reason with the gate's own conditional draw (``u / q`` is uniform
given ``u < q``), so the same transaction reports the same reason at every PSP. Soft declines pick
theirs from a per-(transaction, PSP) draw, with shares that depend on the path.
"""

from __future__ import annotations

import numpy as np

from payroute.contracts import DeclineReason

REASONS = tuple(DeclineReason)
REASON_INDEX = {reason: k for k, reason in enumerate(REASONS)}

# Decline reasons per gate, with their shares (chosen by the gate's conditional draw).
_HARD_CARD = {DeclineReason.stolen_card: 0.2, DeclineReason.lost_card: 0.15, DeclineReason.suspected_fraud: 0.4,
              DeclineReason.pickup_card: 0.1, DeclineReason.restricted_card: 0.15}
_HARD_OTHER = {DeclineReason.suspected_fraud: 0.7, DeclineReason.restricted_card: 0.3}
_CUSTOMER_CARD = {DeclineReason.insufficient_funds: 0.55, DeclineReason.expired_card: 0.12,
                  DeclineReason.incorrect_cvc: 0.10, DeclineReason.limit_exceeded: 0.12,
                  DeclineReason.invalid_account: 0.04, DeclineReason.authentication_failed: 0.07}
_CUSTOMER_OTHER = {DeclineReason.insufficient_funds: 0.55, DeclineReason.invalid_account: 0.30,
                   DeclineReason.limit_exceeded: 0.15}
_CUSTOMER_PAYOUT = {DeclineReason.invalid_account: 0.7, DeclineReason.limit_exceeded: 0.2,
                    DeclineReason.expired_card: 0.1}
_SOFT = (DeclineReason.do_not_honor, DeclineReason.risk_declined, DeclineReason.issuer_unavailable,
         DeclineReason.try_again_later, DeclineReason.not_permitted_for_acquirer,
         DeclineReason.authentication_required)
_SOFT_BASE = np.array([0.55, 0.15, 0.08, 0.10, 0.07, 0.05])
_SOFT_INDEX = np.array([REASON_INDEX[r] for r in _SOFT])

HARD_TABLES = (_HARD_CARD, _HARD_OTHER)  # card, other methods
CUSTOMER_TABLES = (_CUSTOMER_CARD, _CUSTOMER_OTHER, _CUSTOMER_PAYOUT)  # card deposit, other deposit, payouts


def reason_from_table(u: np.ndarray, table: dict[DeclineReason, float]) -> np.ndarray:
    """Reason index for each conditional uniform ``u`` in [0, 1) under a fixed share table."""
    reasons = list(table)
    shares = np.array([table[r] for r in reasons])
    cumulative = np.cumsum(shares / shares.sum())
    pick = np.minimum(np.searchsorted(cumulative, u, side="right"), len(reasons) - 1)
    return np.array([REASON_INDEX[r] for r in reasons])[pick]


def soft_reason(u: np.ndarray, cross_border: np.ndarray, sca_without_3ds: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Soft-decline reason index per row: do-not-honour mostly; 'not permitted' more often cross-border;
    'authentication required' for European cards without 3-D Secure; 'issuer unavailable' at night."""
    weights = np.tile(_SOFT_BASE, (len(u), 1))
    weights[:, 2] += 0.15 * ((hour >= 1) & (hour < 5))
    weights[:, 4] += 0.35 * cross_border
    weights[:, 5] += 0.25 * sca_without_3ds
    cumulative = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    pick = np.minimum((u[:, None] >= cumulative).sum(axis=1), len(_SOFT) - 1)
    return _SOFT_INDEX[pick]
