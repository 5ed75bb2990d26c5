"""Fail-open ranking: the catalogue's static priority order over the eligible PSPs, no model involved.

Used when no model is loaded or anything in the learned path fails. It must not fail itself: it uses
only the catalogue's eligibility rules and fee rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from payroute.catalog import Catalog, attempt_cost
from payroute.contracts import Transaction


@dataclass(frozen=True)
class RankedEntry:
    psp: str
    p_approve: float | None
    expected_cost: float | None
    score: float
    reasons: tuple[dict, ...] = ()


@dataclass(frozen=True)
class ExcludedEntry:
    psp: str
    reason: str


@dataclass(frozen=True)
class StaticDecision:
    """Same public fields as the router's ``Decision``."""

    decision_id: str
    ranking: tuple[RankedEntry, ...]
    excluded: tuple[ExcludedEntry, ...]
    model_version: str | None = None
    propensity: float | None = 1.0
    degraded: bool = True
    objective: str = "static_priority"
    reasons: tuple[dict, ...] = field(default=())


def static_decision(
    catalog: Catalog,
    transaction: Transaction,
    decision_id: str,
    *,
    exclude: tuple[str, ...] = (),
    cause: str = "no_model",
) -> StaticDecision:
    """Rank eligible PSPs by ``static_priority`` (ties by name); deterministic, so propensity 1."""
    report = catalog.eligibility(transaction)
    eligible = set(report.eligible) - set(exclude)
    order = [psp for psp in catalog.static_order if psp in eligible]
    ranking = tuple(
        RankedEntry(
            psp=psp,
            p_approve=None,
            expected_cost=_approved_cost_eur(catalog, transaction, psp),
            score=float(len(order) - position),
            reasons=({"code": "degraded", "value": cause}, {"code": "static_priority", "value": position}),
        )
        for position, psp in enumerate(order)
    )
    excluded = tuple(ExcludedEntry(psp, reason) for psp, reason in sorted(report.excluded.items()))
    excluded += tuple(ExcludedEntry(psp, "excluded_by_caller") for psp in exclude if psp in report.eligible)
    return StaticDecision(
        decision_id=decision_id,
        ranking=ranking,
        excluded=excluded,
        propensity=1.0 if ranking else None,
        reasons=({"code": "degraded", "value": cause},),
    )


def _approved_cost_eur(catalog: Catalog, transaction: Transaction, psp: str) -> float | None:
    """Fee plus FX cost in EUR if the attempt is approved (the catalogue's one fee rule)."""
    try:
        cost = attempt_cost(catalog, psp, transaction.amount, transaction.currency, "approved")
    except (KeyError, ArithmeticError):
        return None
    return float(cost.total_eur)
