"""Cascade order: what earlier attempts say about the next ones.

A customer-class decline (the customer's card or account) or a hard decline ends the cascade; so does an
approval. A PSP-class soft decline (including errors and timeouts) says the acquiring path failed, so a
PSP sharing an acquiring region with it is less likely to succeed: its P(approve) is multiplied by
``same_region_retry_factor``. PSPs already tried are excluded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from payroute.catalog import Catalog
from payroute.contracts import AttemptOutcome, AttemptStatus, DeclineClass

STOP_REASONS: dict[DeclineClass, str] = {
    DeclineClass.customer: "customer_decline",
    DeclineClass.hard: "hard_decline",
}


def stop_reason(previous: Sequence[AttemptOutcome]) -> str | None:
    """Why the cascade must end after these outcomes, or None if another PSP may be tried."""
    for outcome in previous:
        if outcome.status == AttemptStatus.approved:
            return "already_approved"
        if outcome.decline_class in STOP_REASONS:
            return STOP_REASONS[outcome.decline_class]
    return None


def soft_declined_regions(catalog: Catalog, previous: Iterable[AttemptOutcome]) -> frozenset[str]:
    """Acquiring regions of the PSPs that soft-declined (or erred) earlier in this cascade."""
    regions: set[str] = set()
    for outcome in previous:
        if outcome.decline_class == DeclineClass.soft and outcome.psp in catalog.by_name:
            regions.update(catalog.by_name[outcome.psp].acquiring_regions)
    return frozenset(regions)


def shares_region(regions_by_psp: Sequence[frozenset[str]], regions: frozenset[str]) -> np.ndarray:
    """Boolean mask: which PSPs share an acquiring region with ``regions``."""
    return np.fromiter((bool(r & regions) for r in regions_by_psp), dtype=bool, count=len(regions_by_psp))


def cascade_order(
    first: int,
    score: Sequence[float],
    score_after_same_region_decline: Sequence[float],
    overlap: Sequence[Sequence[bool]],
    demoted: Sequence[bool],
) -> list[int]:
    """Positions after ``first``, each chosen assuming every PSP placed before it soft-declined.

    Greedy by score, using ``score_after_same_region_decline`` (the score with P(approve) multiplied by
    the retry factor) for PSPs whose acquiring regions overlap an earlier position's
    (``overlap[i][j]``: PSPs i and j share a region); demoted PSPs go last. Lists (or arrays) of length m,
    or m × m for ``overlap``.
    """
    plain, after, overlaps, down = (
        _listed(score), _listed(score_after_same_region_decline), _listed(overlap), _listed(demoted)
    )
    order = [first]
    remaining = [j for j in range(len(plain)) if j != first]
    penalised = list(overlaps[first])
    while remaining:
        # max over (healthy, score), the first maximum in position order (as max() with a key would pick)
        best, best_healthy, best_score = -1, False, 0.0
        for j in remaining:
            healthy, value = not down[j], after[j] if penalised[j] else plain[j]
            if best < 0 or healthy > best_healthy or (healthy == best_healthy and value > best_score):
                best, best_healthy, best_score = j, healthy, value
        order.append(best)
        remaining.remove(best)
        penalised = [a or b for a, b in zip(penalised, overlaps[best])]
    return order


def _listed(values: Any) -> list:
    """An array as a (nested) list; lists as they are (the router passes lists)."""
    return values.tolist() if isinstance(values, np.ndarray) else values
