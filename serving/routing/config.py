"""Routing configuration: one frozen dataclass, validated once when it is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

OBJECTIVES: tuple[str, ...] = ("expected_value", "approval_first", "least_cost")


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class RoutingConfig:
    """Knobs of the ranker, the bandit, the health guard and the cascade (defaults documented in docs/routing.md).

    Objective
        approval_value_fraction: value of an approved payment as a fraction of its EUR amount
        (the operator's margin); ``approval_value_by_vertical`` overrides it per vertical.
        chargeback_rate_by_vertical / chargeback_fee_eur: the default expected chargeback cost
        ``rate × (amount_eur + fee)`` when no :class:`ChargebackCostPredictor` is given.
        objective_by_type: default objective per transaction type.
    Bandit
        prior_strength: pseudo-observations n0 behind the model prediction (Beta(p·n0, (1−p)·n0)).
        cold_prior_strength: n0 for a PSP the model does not know (prior mean: mean of known PSPs).
        max_evidence: cap on a cell's effective observations (older evidence is scaled down).
        shared_max_evidence: cap on the PSP-wide pooled residual cell that shifts every segment's
        prior (0: off).
        half_life_s: time half-life of a cell's evidence.
        exploration_cap: max expected approval (absolute probability) given up per decision versus
        the greedy choice; min_propensity: floor on every eligible PSP's probability of being first.
        propensity_samples: K posterior draws per decision for the first-place distribution.
        normal_approximation_strength: posteriors with κ at least this are drawn from the
        moment-matched normal instead of the Beta (inf: always Beta).
    Health guard
        burst_errors: consecutive errors/timeouts that demote a PSP; error_rate_threshold over an
        EWMA (``error_ewma_alpha``) also demotes once ``min_health_events`` were seen;
        probe_rate: probability a demoted PSP is placed first (probe); recovery_successes:
        consecutive non-error outcomes that restore it.
    Cascade
        same_region_retry_factor: multiplies P(approve) of a PSP sharing an acquiring region with
        a PSP that soft-declined earlier in the cascade.
    """

    approval_value_fraction: float = 0.05
    approval_value_by_vertical: Mapping[str, float] = field(default_factory=dict)
    chargeback_rate_by_vertical: Mapping[str, float] = field(
        default_factory=lambda: {
            "igaming": 0.004, "sports_betting": 0.004, "forex": 0.006, "crypto": 0.005, "ecommerce": 0.003,
        }
    )
    chargeback_fee_eur: float = 15.0
    objective_by_type: Mapping[str, str] = field(
        default_factory=lambda: {
            "deposit": "expected_value", "withdrawal": "least_cost", "affiliate_payout": "least_cost",
        }
    )
    least_cost_min_probability: float = 0.05
    prior_strength: float = 20.0
    cold_prior_strength: float = 2.0
    max_evidence: float = 200.0
    shared_max_evidence: float = 1000.0
    half_life_s: float = 1800.0
    exploration_cap: float = 0.02
    min_propensity: float = 0.01
    propensity_samples: int = 128
    normal_approximation_strength: float = 20.0
    burst_errors: int | None = 5
    error_rate_threshold: float = 0.5
    error_ewma_alpha: float = 0.1
    min_health_events: int = 20
    probe_rate: float = 0.02
    recovery_successes: int = 3
    same_region_retry_factor: float = 0.9
    decision_memory: int = 100_000

    def __post_init__(self) -> None:
        for name in ("approval_value_by_vertical", "chargeback_rate_by_vertical", "objective_by_type"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        problems = [message for check, message in _CHECKS if not check(self)]
        if problems:
            raise ValueError("RoutingConfig: " + "; ".join(problems))

    def approval_value(self, vertical: str) -> float:
        return self.approval_value_by_vertical.get(vertical, self.approval_value_fraction)

    def to_json(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RoutingConfig":
        return cls(**data)


# Parameter constraints, declared once (one message each).
_CHECKS: tuple[tuple[Any, str], ...] = (
    (lambda c: c.approval_value_fraction >= 0, "approval_value_fraction must be >= 0"),
    (lambda c: all(v >= 0 for v in c.approval_value_by_vertical.values()), "approval values must be >= 0"),
    (lambda c: all(0 <= v <= 1 for v in c.chargeback_rate_by_vertical.values()), "chargeback rates in [0, 1]"),
    (lambda c: set(c.objective_by_type.values()) <= set(OBJECTIVES), f"objectives must be among {OBJECTIVES}"),
    (lambda c: 0 < c.least_cost_min_probability <= 1, "least_cost_min_probability in (0, 1]"),
    (lambda c: c.prior_strength > 0 and c.cold_prior_strength > 0, "prior strengths must be > 0"),
    (lambda c: c.max_evidence > 0 and c.half_life_s > 0, "max_evidence and half_life_s must be > 0"),
    (lambda c: c.shared_max_evidence >= 0, "shared_max_evidence must be >= 0"),
    (lambda c: 0 <= c.exploration_cap <= 1, "exploration_cap in [0, 1]"),
    (lambda c: 0 <= c.min_propensity <= 0.1, "min_propensity in [0, 0.1]"),
    (lambda c: c.propensity_samples >= 1, "propensity_samples must be >= 1"),
    (lambda c: c.normal_approximation_strength > 0, "normal_approximation_strength must be > 0"),
    (lambda c: c.burst_errors is None or c.burst_errors >= 1, "burst_errors must be >= 1 or None"),
    (lambda c: 0 < c.error_rate_threshold <= 1 and 0 < c.error_ewma_alpha <= 1, "health rates in (0, 1]"),
    (lambda c: 0 <= c.probe_rate <= 0.2, "probe_rate in [0, 0.2]"),
    (lambda c: c.recovery_successes >= 1, "recovery_successes must be >= 1"),
    (lambda c: 0 < c.same_region_retry_factor <= 1, "same_region_retry_factor in (0, 1]"),
)
