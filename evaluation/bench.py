"""The benchmark: every policy on the same streams (common random numbers), per scenario and seed.

The world (PSP truth, issuers, drift directions) is fixed by ``world_seed``: it is the operator's
reality. Seeds vary the traffic sample and every attempt's luck. Rules and models are fitted on the
world's history before the bench window; nothing is fitted on the bench stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from payroute.catalog import Catalog, load_catalog
from payroute.evaluation.adaptive import DiscountedThompson, SuccessRateRouting
from payroute.evaluation.harness import DEFAULT_BATCH, RunRecord, run_policy
from payroute.evaluation.metrics import (
    affected_rows,
    headroom_captured,
    outage_reaction,
    run_metrics,
    summarize,
    time_series,
)
from payroute.evaluation.policies import CountryMethodRules, Oracle, Policy, StaticPriority, UniformRandom
from payroute.evaluation.scenarios import SCENARIOS, Horizon, Scenario, resolve_incident, world_config
from payroute.evaluation.stream import Stream, build_stream
from payroute.simulator.config import SimulationConfig
from payroute.simulator.history import SimulatedHistory, simulate_history

BASELINES = ("uniform", "static", "rules", "success_rate", "thompson")
MODEL_POLICIES = ("model_greedy", "payroute")
ALL_POLICIES = (*BASELINES, *MODEL_POLICIES, "oracle")

# Builds the model-based policies for one stream: (name, stream, history, seed) -> Policy, or None
# when no model is available (those policies are then skipped and the report says so).
ModelPolicyFactory = Callable[[str, Stream, SimulatedHistory, int], Policy | None]


@dataclass(frozen=True)
class BenchSettings:
    n_transactions: int = 20_000
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    world_seed: int = 7
    horizon: Horizon = field(default_factory=Horizon)
    batch_size: int = DEFAULT_BATCH
    policies: tuple[str, ...] = ALL_POLICIES
    keep_records: bool = False  # keep per-transaction records (plots, notebook)


@dataclass
class ScenarioResult:
    scenario: str
    rows: list[dict] = field(default_factory=list)  # one per (policy, seed)
    series: dict[str, pd.DataFrame] = field(default_factory=dict)  # policy -> time series (first seed)
    records: dict[tuple[str, int], RunRecord] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()


@lru_cache(maxsize=4)
def busiest_psp(world_seed: int, horizon: Horizon) -> str:
    """The PSP taking the most first attempts in the stationary history of the world."""
    config = SimulationConfig(n_transactions=horizon.history_transactions, days=horizon.history_days,
                              start=horizon.start, incidents=(), drift_strength=0.0, seasonality_strength=0.0)
    attempts = simulate_history(config, seed=world_seed).attempts
    return str(attempts.loc[attempts["attempt"] == 1, "psp"].value_counts().idxmax())


def baseline_policy(name: str, stream: Stream, history: SimulatedHistory, seed: int) -> Policy:
    """The baselines and the oracle, each with its tuned defaults (see docs/benchmarks.md)."""
    psps = stream.psps
    if name == "uniform":
        return UniformRandom(psps, seed=seed)
    if name == "static":
        return StaticPriority(psps, stream.priorities, seed=seed)
    if name == "rules":
        return CountryMethodRules(psps, stream.priorities, seed=seed).fit(history.transactions, history.attempts)
    if name == "success_rate":
        return SuccessRateRouting(psps, seed=seed)
    if name == "thompson":
        return DiscountedThompson(psps, seed=seed)
    if name == "oracle":
        return Oracle(psps, stream.approval, seed=seed)
    raise ValueError(f"unknown policy {name!r}; expected one of {ALL_POLICIES}")


def scenario_world(scenario: Scenario, settings: BenchSettings, catalog: Catalog) -> SimulatedHistory:
    busiest = busiest_psp(settings.world_seed, settings.horizon)
    return simulate_history(world_config(scenario, scenario.horizon(settings.horizon), busiest), catalog,
                            seed=settings.world_seed)


def run_scenario(scenario: Scenario, settings: BenchSettings, catalog: Catalog | None = None,
                 model_policies: ModelPolicyFactory | None = None,
                 progress: Callable[[str], None] | None = None) -> ScenarioResult:
    """Every policy × seed on the scenario; per-run metrics, outage reaction, headroom."""
    catalog = catalog or load_catalog()
    history = scenario_world(scenario, settings, catalog)
    world = history.world
    horizon = scenario.horizon(settings.horizon)
    incident = resolve_incident(scenario, horizon, busiest_psp(settings.world_seed, settings.horizon))
    result = ScenarioResult(scenario.name)
    skipped: set[str] = set()
    for seed in settings.seeds:
        stream = build_stream(world, settings.n_transactions, horizon.bench_start, horizon.bench_days, seed)
        focus = _focus_rows(stream, scenario, incident)
        seed_rows = []
        for name in settings.policies:
            if name in MODEL_POLICIES:
                policy = model_policies(name, stream, history, seed) if model_policies else None
                if policy is None:
                    skipped.add(name)
                    continue
            else:
                policy = baseline_policy(name, stream, history, seed)
            record = run_policy(policy, stream, settings.batch_size)
            metrics = run_metrics(record)
            if incident is not None:
                metrics.update(outage_reaction(record, stream, incident))
            if scenario.new_psp is not None:
                metrics.update(_launch_metrics(record, stream, scenario.new_psp))
            seed_rows.append({"scenario": scenario.name, "policy": name, "seed": seed, **metrics})
            if progress is not None:
                progress(f"{scenario.name} seed {seed} {name}: first-attempt approval "
                         f"{metrics['first_attempt_approval']:.4f}")
            if seed == settings.seeds[0]:
                result.series[name] = time_series(record, stream, focus)
            if settings.keep_records:
                result.records[(name, seed)] = record
        _add_headroom(seed_rows)
        result.rows.extend(seed_rows)
    result.skipped = tuple(sorted(skipped))
    return result


def _focus_rows(stream: Stream, scenario: Scenario, incident) -> np.ndarray:
    """Rows the time series follows: the incident's affected segment, else the whole stream."""
    return affected_rows(stream, incident) if incident is not None else np.arange(stream.size)


def _launch_metrics(record: RunRecord, stream: Stream, psp: str) -> dict[str, float]:
    j = stream.psps.index(psp)
    live = stream.eligible[:, j]
    if not live.any():
        return {"new_psp_share": np.nan, "new_psp_segment_regret_pp": np.nan}
    return {"new_psp_share": float((record.first_psp[live] == j).mean()),
            "new_psp_segment_regret_pp": 100 * float((record.oracle_p[live] - record.first_p[live]).mean())}


def _add_headroom(rows: list[dict]) -> None:
    by_policy = {row["policy"]: row for row in rows}
    if "static" not in by_policy or "oracle" not in by_policy:
        return
    for key, name in (("first_attempt_approval", "headroom_captured"),
                      ("expected_first_attempt_approval", "expected_headroom_captured")):
        static, oracle = by_policy["static"][key], by_policy["oracle"][key]
        for row in rows:
            row[name] = headroom_captured(row[key], static, oracle)


def run_bench(scenarios: Sequence[str], settings: BenchSettings, catalog: Catalog | None = None,
              model_policies: ModelPolicyFactory | None = None, progress: Callable[[str], None] | None = None,
              ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, ScenarioResult]]:
    """Run scenarios; returns (per-run rows, summary with CIs over seeds, per-scenario results)."""
    results = {name: run_scenario(SCENARIOS[name], settings, catalog, model_policies, progress) for name in scenarios}
    rows = pd.DataFrame([row for result in results.values() for row in result.rows])
    return rows, summarize(rows.to_dict("records")), results
