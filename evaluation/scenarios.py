"""Benchmark scenarios: one world, one history to fit on, then a bench window with one change.

Time layout: history ``[T0, T0 + history_days)`` (what rules and models are fitted on), then the
bench stream ``[T0 + history_days, + bench_days)``. Incidents and launches are placed at fixed
fractions of the bench window so any horizon shows them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from payroute.simulator.config import DEFAULT_START, Incident, NewPsp, SimulationConfig


@dataclass(frozen=True)
class IncidentPlan:
    """An incident on ``psp`` (``None``: the busiest PSP of the history) at ``start_fraction`` of the bench."""

    psp: str | None
    start_fraction: float
    hours: float
    country: str | None = None
    network: str | None = None
    kind: str = "outage"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    drift_strength: float = 0.0
    seasonality_strength: float = 0.0
    incident: IncidentPlan | None = None
    new_psp: str | None = None
    new_psp_fraction: float = 0.25
    history_days: float | None = None  # the scenario's own history length (None: the bench horizon's)

    def horizon(self, default: "Horizon") -> "Horizon":
        """The bench horizon, with this scenario's history length (same traffic per day) when it sets one."""
        if self.history_days is None or self.history_days == default.history_days:
            return default
        per_day = default.history_transactions / default.history_days
        return replace(default, history_days=self.history_days,
                       history_transactions=int(round(per_day * self.history_days)))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("stationary", "no drift, no seasonality, no incident"),
        Scenario("outage", "the busiest PSP fully down for 4 hours",
                 incident=IncidentPlan(None, 0.30, 4.0)),
        Scenario("partial_outage", "latamconnect down for Brazil only, 6 hours",
                 incident=IncidentPlan("latamconnect", 0.30, 6.0, country="BR")),
        # The simulator's drift is linear from the world's start, so a long history would put the bench
        # window many standard deviations away (one PSP dominating everywhere): drift keeps 14 days.
        Scenario("drift", "PSP approval drifting (logit std 2.0 per 30 days) with a daily cycle",
                 drift_strength=2.0, seasonality_strength=0.2, history_days=14.0),
        Scenario("new_psp", "britpay goes live a quarter into the bench with no history",
                 new_psp="britpay"),
    )
}


@dataclass(frozen=True)
class Horizon:
    """History (what rules and models are fitted on: 60 days, about the traffic per day of the bench's
    first version) followed by the bench window."""

    history_days: float = 60.0
    bench_days: float = 2.0
    history_transactions: int = 150_000
    start: dt.datetime = DEFAULT_START

    @property
    def bench_start(self) -> dt.datetime:
        return self.start + dt.timedelta(days=self.history_days)


def resolve_incident(scenario: Scenario, horizon: Horizon, busiest: str) -> Incident | None:
    plan = scenario.incident
    if plan is None:
        return None
    begin = horizon.bench_start + dt.timedelta(days=horizon.bench_days * plan.start_fraction)
    return Incident(psp=plan.psp or busiest, start=begin, end=begin + dt.timedelta(hours=plan.hours),
                    country=plan.country, network=plan.network, kind=plan.kind)


def world_config(scenario: Scenario, horizon: Horizon, busiest: str) -> SimulationConfig:
    """The simulator config of the scenario's world; its ``n_transactions``/``days`` are the history's."""
    incident = resolve_incident(scenario, horizon, busiest)
    launch = None
    if scenario.new_psp is not None:
        at = horizon.bench_start + dt.timedelta(days=horizon.bench_days * scenario.new_psp_fraction)
        launch = NewPsp(name=scenario.new_psp, available_from=at)
    return SimulationConfig(
        n_transactions=horizon.history_transactions, days=horizon.history_days, start=horizon.start,
        incidents=() if incident is None else (incident,), drift_strength=scenario.drift_strength,
        seasonality_strength=scenario.seasonality_strength, new_psp=launch,
    )
