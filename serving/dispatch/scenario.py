"""A full dispatcher scenario on the simulator's world — used by ``payroute demo`` and the end-to-end
tests: traffic, sandbox PSPs with faults and an outage, the real scoring service (optionally killed
and restarted midway), then the figures that prove the guarantees.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from payroute.sandbox.faults import FaultPlan, OutageWindow
from payroute.sandbox.ledger import Ledger
from payroute.sandbox.world import Sandbox
from payroute.serving.dispatch.assembly import build_dispatcher
from payroute.serving.dispatch.breaker import CircuitBreakers
from payroute.serving.dispatch.cli import transactions_from_frame
from payroute.serving.dispatch.dispatcher import DispatchPolicy, DispatchResult
from payroute.serving.dispatch.journal import DurableLog
from payroute.serving.dispatch.limits import DEFAULT_CAPS, ReattemptCap, ReattemptLimits
from payroute.serving.dispatch.outcomes import MemorySink
from payroute.serving.dispatch.ranking import StaticRanking
from payroute.serving.dispatch.service_process import ServiceProcess

DEFAULT_FAULTS = {"error_before": 0.01, "error_after": 0.005, "timeout": 0.005, "reset": 0.005, "late": 0.002,
                  "slow": 0.02}
PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class Scenario:
    """What to run. Times: ``outage`` as fractions of the simulated horizon; others wall-clock seconds."""

    n_transactions: int = 3000
    days: float = 2.0
    seed: int = 7
    workers: int = 24
    use_service: bool = True
    kill_service: bool = False
    kill_at: tuple[float, float] = (0.3, 0.5)  # share of transactions: kill after, restart after
    models_dir: Path | None = None
    train_model: bool = False  # no champion in models_dir: let the service train its default model there
    fault_rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FAULTS))
    inquiry_error_rate: float = 0.02
    hang_s: float = 0.6
    slow_s: float = 0.05
    psp_timeout_s: float = 0.25
    latency_scale: float = 0.001
    outage: tuple[float, float] = (0.4, 0.6)
    outage_psp: str | None = None  # default: the PSP most often ranked first by the static order
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 0.5
    caps: dict[str, tuple[ReattemptCap, ...]] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    resolve_pending_after_s: float = 1.0
    senders: int = 16  # outcome-buffer threads sending to /feedback (the service group-commits them)


@dataclass
class ScenarioReport:
    scenario: Scenario
    service_note: str
    outage_psp: str
    outage_window: tuple[dt.datetime, dt.datetime]
    results: list[DispatchResult]
    ledger: Ledger
    faults: dict[str, int]
    journal: list[dict[str, Any]]
    logged: list[tuple[str, int]]
    statuses: Counter
    ranking_sources: Counter
    scheme_refusals: int
    breakers_opened: int
    unknown_codes: int
    pending_resolved: dict[str, str]
    approval_first: float
    approval_final: float
    attempts_per_transaction: float
    cost_eur: Decimal
    shares: pd.DataFrame
    approval_by_phase: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    outcomes_rejected: int = 0

    @property
    def attempt_keys(self) -> list[tuple[str, int]]:
        return [(r["transaction_id"], r["attempt"]) for r in self.journal if r.get("type") == "result"]

    @property
    def outcomes_lost(self) -> int:
        return len(set(self.attempt_keys) - set(self.logged))

    @property
    def outcomes_duplicated(self) -> int:
        return len(self.logged) - len(set(self.logged))

    @property
    def double_charges(self) -> int:
        return len(self.ledger.double_charges()) + len(self.ledger.double_payouts())

    @property
    def figures(self) -> dict[str, Any]:
        return {"transactions": len(self.results), "attempts": len(self.attempt_keys),
                "faults_injected": sum(self.faults.values()), "double_charges": self.double_charges,
                "outcomes_lost": self.outcomes_lost, "outcomes_duplicated": self.outcomes_duplicated,
                "outcomes_rejected": self.outcomes_rejected, "pending_left": self.statuses.get("pending", 0)}


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[name]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def run_scenario(scenario: Scenario, workdir: Path) -> ScenarioReport:
    from payroute.simulator.config import SimulationConfig
    from payroute.simulator.world import World

    timings: dict[str, float] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    with _timed(timings, "setup"):
        world = World(seed=scenario.seed, config=SimulationConfig(incidents=(), days=scenario.days))
        frame = world.sample_transactions(scenario.n_transactions, days=scenario.days)
        transactions = transactions_from_frame(frame)
        start = world.config.start
        horizon = dt.timedelta(days=scenario.days)
        window = (start + horizon * scenario.outage[0], start + horizon * scenario.outage[1])
        static = StaticRanking(world.catalog)
        outage_psp = scenario.outage_psp or Counter(
            r.psps[0] for r in map(static.rank, transactions) if r.psps).most_common(1)[0][0]
        plan = FaultPlan(seed=scenario.seed, rates=scenario.fault_rates, inquiry_error_rate=scenario.inquiry_error_rate,
                         hang_s=scenario.hang_s, slow_s=scenario.slow_s, outages=(OutageWindow(outage_psp, *window),))
        sandbox = Sandbox.from_world(world, frame, plan, scenario.latency_scale).start()
    with _timed(timings, "service_start"):
        service, note = _start_service(scenario, workdir)
    parts = build_dispatcher(
        world.catalog, sandbox.endpoints, workdir / "dispatch", service_url=service.url if service else None,
        api_key=service.api_key if service else None, psp_timeout_s=scenario.psp_timeout_s,
        sink=None if service else MemorySink(), senders=scenario.senders,
        breakers=CircuitBreakers(scenario.breaker_threshold, scenario.breaker_cooldown_s),
        limits=ReattemptLimits(caps=scenario.caps), policy=DispatchPolicy(max_attempts=3, time_budget_s=10.0))
    try:
        results = _dispatch_in_phases(scenario, parts, transactions, service, timings)
        with _timed(timings, "resolve_pending"):
            time.sleep(scenario.resolve_pending_after_s)
            resolved = parts.dispatcher.resolve_pending()
        with _timed(timings, "feedback_drain"):
            if not parts.buffer.flush(timeout=300):
                note += "; some outcomes still buffered"
        journal = list(DurableLog.read(parts.journal.path))
        logged = _logged(service, parts.sink)
        counts = (parts.ranking.fallbacks, parts.dispatcher.limits.refused, parts.dispatcher.breakers.opened,
                  parts.codes.unknown_total())
        rejected = parts.buffer.rejected
    finally:
        parts.close()
        if service is not None:
            service.kill()
        sandbox.stop()
    report = _report(scenario, note, outage_psp, window, results, sandbox, journal, logged, counts, resolved,
                     transactions)
    report.timings = {k: round(v, 1) for k, v in timings.items()}
    report.outcomes_rejected = rejected
    return report


def _start_service(scenario: Scenario, workdir: Path) -> tuple[ServiceProcess | None, str]:
    if not scenario.use_service:
        return None, "no scoring service: catalogue static order"
    service = ServiceProcess(workdir / "service", scenario.models_dir, train=scenario.train_model)
    trained_now = scenario.train_model and not service.has_model
    try:
        service.start()
    except (RuntimeError, OSError) as error:
        service.kill()
        return None, f"scoring service unavailable ({error}): catalogue static order"
    if service.has_model:
        model = f"{'default model trained on first start' if trained_now else 'champion model'} from {service.models_dir}"
    else:
        model = "no champion: degraded static ranking"
    return service, f"scoring service at {service.url} ({model})"


def _dispatch_in_phases(scenario: Scenario, parts: Any, transactions: list, service: ServiceProcess | None,
                        timings: dict[str, float]) -> list:
    """All transactions; with ``kill_service``, the service is SIGKILLed after ``kill_at[0]`` of them and
    restarted after ``kill_at[1]`` (its start-up time counted apart)."""
    if service is None or not scenario.kill_service:
        with _timed(timings, "dispatch"):
            return parts.dispatcher.dispatch_many(transactions, workers=scenario.workers)
    n = len(transactions)
    kill, restart = (int(n * f) for f in scenario.kill_at)
    with _timed(timings, "dispatch"):
        results = parts.dispatcher.dispatch_many(transactions[:kill], workers=scenario.workers)
        service.kill()
        results += parts.dispatcher.dispatch_many(transactions[kill:restart], workers=scenario.workers)
    with _timed(timings, "service_start"):
        service.start()
    with _timed(timings, "dispatch"):
        return results + parts.dispatcher.dispatch_many(transactions[restart:], workers=scenario.workers)


def _logged(service: ServiceProcess | None, sink: Any) -> list[tuple[str, int]]:
    """Every (transaction, attempt) in the service's outcome log (or the in-memory sink)."""
    if service is None:
        return list(sink.events_keys()) if hasattr(sink, "events_keys") else [
            (k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1])) for k in sink.events]
    with sqlite3.connect(f"file:{service.outcomes_path}?mode=ro", uri=True) as connection:
        return [(t, int(a)) for t, a in connection.execute("SELECT transaction_id, attempt FROM outcomes")]


def _phase(at: dt.datetime, window: tuple[dt.datetime, dt.datetime]) -> str:
    return "before" if at < window[0] else ("during" if at < window[1] else "after")


def _report(scenario, note, outage_psp, window, results, sandbox, journal, logged, counts, resolved,
            transactions) -> ScenarioReport:
    finals = {r["transaction_id"]: r["status"] for r in journal if r.get("type") == "final"}
    outcomes = [r["outcome"] for r in journal if r.get("type") == "result"]
    phase = {t.id: _phase(t.timestamp, window) for t in transactions}
    first = [(phase[r.transaction_id], r.attempts[0].psp) for r in results if r.attempts]
    shares = pd.crosstab(pd.Series([p for _, p in first], name="psp"),
                         pd.Series([ph for ph, _ in first], name="phase"), normalize="columns")
    shares = shares.reindex(columns=[c for c in PHASES if c in shares.columns]).fillna(0.0)
    approved = pd.Series({t: s == "approved" for t, s in finals.items()})
    by_phase = approved.groupby(pd.Series(phase)).mean().to_dict()
    n = max(len(results), 1)
    fallbacks, refusals, opened, unknown = counts
    return ScenarioReport(
        scenario=scenario, service_note=note, outage_psp=outage_psp, outage_window=window, results=results,
        ledger=sandbox.ledger, faults=sandbox.counter.by_kind(), journal=journal, logged=logged,
        statuses=Counter(finals.values()),
        ranking_sources=Counter(r.ranking_source for r in results if r.ranking_source) + Counter(fallback_count=fallbacks),
        scheme_refusals=refusals, breakers_opened=opened, unknown_codes=unknown, pending_resolved=resolved,
        approval_first=sum(1 for r in results if r.attempts and r.attempts[0].kind == "approved") / n,
        approval_final=float(approved.mean()) if len(approved) else 0.0,
        attempts_per_transaction=len(outcomes) / n,
        cost_eur=sum((Decimal(o["fee_eur"]) + Decimal(o["fx_cost_eur"]) for o in outcomes), Decimal(0)),
        shares=shares, approval_by_phase={k: float(by_phase.get(k, float("nan"))) for k in PHASES},
    )


def format_summary(report: ScenarioReport) -> str:
    f = report.figures
    start, end = report.outage_window
    lines = [
        f"payroute demo — {report.service_note}",
        f"  outage injected: {report.outage_psp} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} (simulated time)",
        f"  transactions {f['transactions']}, attempts {f['attempts']}, faults injected {f['faults_injected']} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(report.faults.items()))})",
        f"  double charges {f['double_charges']}, outcomes lost {f['outcomes_lost']}, "
        f"duplicated {f['outcomes_duplicated']}, pending left {f['pending_left']} (resolved later by inquiry: "
        f"{len(report.pending_resolved)})",
        f"  approval: first attempt {report.approval_first:.1%}, final {report.approval_final:.1%}; "
        f"attempts per transaction {report.attempts_per_transaction:.3f}; cost EUR {report.cost_eur:.2f}",
        "  approval by phase: " + ", ".join(f"{k} {v:.1%}" for k, v in report.approval_by_phase.items()),
        f"  final statuses: {dict(report.statuses)}; ranking: {dict(report.ranking_sources)}",
        f"  circuit breakers opened {report.breakers_opened}, scheme reattempt refusals {report.scheme_refusals}, "
        f"unknown decline codes {report.unknown_codes}, outcomes refused by /feedback {report.outcomes_rejected}",
        "  wall clock (s): " + ", ".join(f"{k} {v}" for k, v in report.timings.items()),
        "  first-attempt traffic share by PSP:",
        "    " + report.shares.map(lambda v: f"{v:6.1%}").to_string().replace("\n", "\n    "),
    ]
    return "\n".join(lines)
