"""payroute.simulator: the seeded payment world (PSPs, issuers, incidents, fees, chargebacks).

Public API::

    from payroute.simulator import SimulationConfig, Incident, World, simulate_history, write_history

    history = simulate_history(SimulationConfig(n_transactions=50_000, days=14), seed=7)
    write_history(history, "data/sim", history.world.catalog)
    history.world.approval_probability(history.transactions, "euroacq")   # the oracle

The world model is documented in ``docs/data.md`` and in :mod:`payroute.simulator.world`.
"""

from payroute.simulator.config import (
    ChargebackSettings,
    Incident,
    NewPsp,
    SimulationConfig,
    TrafficMix,
    default_incidents,
)
from payroute.simulator.draws import N_DRAWS, attempt_draws
from payroute.simulator.history import (
    SimulatedHistory,
    approval_summary,
    chargeback_probability,
    simulate_history,
    write_history,
)
from payroute.simulator.logging_policy import LoggingPolicy
from payroute.simulator.world import World

__all__ = [
    "ChargebackSettings",
    "Incident",
    "LoggingPolicy",
    "N_DRAWS",
    "NewPsp",
    "SimulatedHistory",
    "SimulationConfig",
    "TrafficMix",
    "World",
    "approval_summary",
    "attempt_draws",
    "chargeback_probability",
    "default_incidents",
    "simulate_history",
    "write_history",
]
