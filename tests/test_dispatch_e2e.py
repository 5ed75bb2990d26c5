"""End to end, figures printed (run with ``-s``):

1. ≥ 10,000 simulated payments through the dispatcher and sandbox PSPs with injected timeouts, 5xx,
   resets, slow answers and an outage (static order; outcomes to an in-memory sink with the service's
   idempotency rule);
2. the same loop at full size (10,100 payments) against the real scoring service, SIGKILLed at 30 %
   and restarted at 50 % of the run: every outcome in the service's event log exactly once, static
   order meanwhile. About 80 s on a busy 2-core machine (marked ``slow``; still runs in CI);
   ``PAYROUTE_E2E_SERVICE_TXNS`` sets another size;
3. a dispatcher process killed mid-run and restarted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from payroute.serving.dispatch.journal import DurableLog
from payroute.serving.dispatch.limits import ReattemptCap, worst_window
from payroute.serving.dispatch.scenario import Scenario, format_summary, run_scenario

# Tight caps so that they bind in a two-day run (the published defaults would never be reached here).
TIGHT_CAPS = {"visa": (ReattemptCap(dt.timedelta(days=30), 2),),
              "mastercard": (ReattemptCap(dt.timedelta(hours=24), 1), ReattemptCap(dt.timedelta(days=30), 2))}
FAULTS = {"error_before": 0.01, "error_after": 0.005, "timeout": 0.005, "reset": 0.005, "late": 0.002, "slow": 0.02}


def by_transaction(journal: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for record in journal:
        grouped[record["transaction_id"]].append(record)
    return grouped


def unknown_without_inquiry_first(journal: list[dict]) -> list[str]:
    """Attempts whose PSP call gave an unknown outcome but where something other than an inquiry about
    that key came next for that payment."""
    bad = []
    for txn, records in by_transaction(journal).items():
        for k, record in enumerate(records):
            if record["type"] == "result" and record["first_kind"] == "unknown":
                intent = max(i for i in range(k) if records[i]["type"] == "intent" and records[i]["key"] == record["key"])
                between = records[intent + 1:k]
                if not between or between[0]["type"] != "inquiry" or any(r.get("key") != record["key"] for r in between):
                    bad.append(record["key"])
    return bad


def retried_after_no_retry_decline(journal: list[dict]) -> list[str]:
    bad = []
    for txn, records in by_transaction(journal).items():
        stopped = False
        for record in records:
            if record["type"] == "intent" and stopped:
                bad.append(txn)
            if record["type"] == "result" and record["kind"] == "declined" and record["decline_class"] != "soft":
                stopped = True
    return bad


def reattempt_times(journal: list[dict]) -> dict[tuple[str, str], list[dt.datetime]]:
    """Per (card fingerprint, network): timestamps of attempts sent after the transaction was declined."""
    out: dict[tuple[str, str], list[dt.datetime]] = defaultdict(list)
    for txn, records in by_transaction(journal).items():
        declined = False
        for record in records:
            if record["type"] == "intent" and declined and record["operation"] == "payments":
                t = record["transaction"]
                if t.get("card_fingerprint"):
                    out[(t["card_fingerprint"], t["card_network"])].append(dt.datetime.fromisoformat(t["timestamp"]))
            if record["type"] == "result" and record["kind"] == "declined":
                declined = True
    return out


def run_and_print(scenario: Scenario, workdir) -> object:
    started = time.monotonic()
    result = run_scenario(scenario, workdir)
    print("\n" + format_summary(result))
    print(f"  FIGURES {json.dumps(result.figures)} in {time.monotonic() - started:.0f}s")
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    scenario = Scenario(n_transactions=10_100, days=2.0, seed=11, workers=32, use_service=False,
                        fault_rates=FAULTS, caps=TIGHT_CAPS, hang_s=0.6, psp_timeout_s=0.25)
    return run_and_print(scenario, tmp_path_factory.mktemp("dispatch-e2e"))


@pytest.fixture(scope="module")
def service_report(tmp_path_factory):
    n = int(os.environ.get("PAYROUTE_E2E_SERVICE_TXNS", "10100"))
    scenario = Scenario(n_transactions=n, days=2.0, seed=12, workers=16, use_service=True, kill_service=True,
                        fault_rates=FAULTS, hang_s=0.6, psp_timeout_s=0.25)
    return run_and_print(scenario, tmp_path_factory.mktemp("dispatch-service-e2e"))


def test_figures(report):
    figures = report.figures
    assert figures["transactions"] >= 10_000
    assert figures["double_charges"] == 0 and report.ledger.double_charges() == {}
    assert figures["outcomes_lost"] == 0 and figures["outcomes_duplicated"] == 0 and figures["outcomes_rejected"] == 0
    for kind in ("error_before", "error_after", "timeout", "reset", "slow", "outage", "late"):
        assert report.faults.get(kind, 0) > 0, kind


def test_every_attempt_outcome_in_the_sink_exactly_once(report):
    assert sorted(report.logged) == sorted(report.attempt_keys)


def test_at_most_one_approval_per_payment(report):
    approved = defaultdict(int)
    for record in report.journal:
        if record["type"] == "result" and record["kind"] == "approved":
            approved[record["transaction_id"]] += 1
    assert max(approved.values()) == 1
    money_moved = report.ledger.charged() | {e.transaction_id for e in report.ledger.entries if e.kind == "payout"}
    finals = {r["transaction_id"]: r["status"] for r in report.journal if r["type"] == "final"}
    assert money_moved == {t for t, s in finals.items() if s == "approved"}


def test_hard_and_customer_declines_never_retried(report):
    assert retried_after_no_retry_decline(report.journal) == []
    assert any(r["type"] == "result" and r["decline_class"] in ("hard", "customer") for r in report.journal)


def test_unknown_outcomes_inquired_before_anything_else(report):
    unknown = [r for r in report.journal if r["type"] == "result" and r["first_kind"] == "unknown"]
    assert len(unknown) > 50
    assert unknown_without_inquiry_first(report.journal) == []
    pending = [t for t, s in ((r["transaction_id"], r["status"]) for r in report.journal if r["type"] == "final")]
    assert report.statuses.get("pending", 0) == 0 or pending  # whatever stays pending was inquired (above)


def test_scheme_caps_hold(report):
    assert report.scheme_refusals > 0
    for (card, network), times in reattempt_times(report.journal).items():
        for cap in TIGHT_CAPS.get(network, ()):
            assert worst_window(times, cap.window) <= cap.max_reattempts, (card, network)


def test_outage_traffic_moves_away_and_approval_recovers(report):
    share = report.shares.loc[report.outage_psp]
    assert share["during"] < 0.5 * share["before"]
    assert share["after"] > 0.6 * share["before"]
    approval = report.approval_by_phase
    assert approval["after"] >= approval["before"] - 0.03


@pytest.mark.slow
def test_service_killed_costs_no_outcome_and_no_transaction(service_report):
    report = service_report
    assert "scoring service at" in report.service_note, report.service_note
    assert len(report.results) == report.scenario.n_transactions  # 10,100 unless the variable says otherwise
    assert report.outcomes_rejected == 0 and report.outcomes_lost == 0 and report.outcomes_duplicated == 0
    assert report.ranking_sources["static"] > 0 and report.ranking_sources["service"] > 0
    assert sum(report.statuses.values()) == len(report.results)  # every payment reached a final state
    assert sorted(report.logged) == sorted(report.attempt_keys)  # the service's event log, exactly once
    assert report.double_charges == 0


# --------------------------------------------------------------------------------------------------
# The dispatcher process killed mid-run and restarted
# --------------------------------------------------------------------------------------------------


def test_dispatcher_killed_and_restarted(tmp_path):
    from payroute.sandbox.faults import FaultPlan
    from payroute.sandbox.world import Sandbox
    from payroute.simulator.config import SimulationConfig
    from payroute.simulator.world import World
    from payroute.serving.dispatch.cli import transactions_from_frame

    world = World(seed=5, config=SimulationConfig(incidents=(), days=1.0))
    frame = world.sample_transactions(2000, days=1.0)
    ids = {t.id for t in transactions_from_frame(frame)}  # every simulated row passes the contract
    frame.to_parquet(tmp_path / "txns.parquet")
    plan = FaultPlan(seed=5, rates={"slow": 0.3, "timeout": 0.02, "reset": 0.02, "error_after": 0.02}, slow_s=0.03,
                     hang_s=0.4)
    state = tmp_path / "state"
    command = [sys.executable, "-m", "payroute.cli", "dispatch", "--transactions", str(tmp_path / "txns.parquet"),
               "--psp-endpoints", str(tmp_path / "endpoints.json"), "--state-dir", str(state),
               "--psp-timeout", "0.25", "--workers", "16", "--resolve-pending-after", "0.5"]
    with Sandbox.from_world(world, frame, plan) as sandbox:
        (tmp_path / "endpoints.json").write_text(json.dumps(sandbox.endpoints))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        journal = state / "journal.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not journal.exists() or journal.stat().st_size < 600_000):
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        before = list(DurableLog.read(journal))
        in_flight = {r["key"] for r in before if r["type"] == "intent"} - {r["key"] for r in before if r["type"] == "result"}
        finals_before = sum(1 for r in before if r["type"] == "final")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        records = list(DurableLog.read(journal))
        charged_twice = sandbox.ledger.double_charges()
    finals = {r["transaction_id"]: r["status"] for r in records if r["type"] == "final"}
    results = {r["key"] for r in records if r["type"] == "result"}
    intents = {r["key"] for r in records if r["type"] == "intent"}
    inquired = {r["key"] for r in records[len(before):] if r["type"] == "inquiry"}
    outbox = [f"{o['transaction_id']}:{o['attempt']}" for o in DurableLog.read(state / "outcomes" / "outbox.jsonl")]
    print(f"\n  RESTART transactions {len(ids)}, finished before kill {finals_before}, in flight at kill "
          f"{len(in_flight)}, double charges {len(charged_twice)}, outcomes lost {len(intents - set(outbox))}")
    assert 0 < finals_before < len(ids)
    assert in_flight, "the kill should catch attempts in flight"
    assert charged_twice == {}
    assert set(finals) == ids  # every payment settled
    assert intents == results  # no attempt left without a result
    assert in_flight <= inquired  # each in-flight attempt was inquired about after the restart
    assert unknown_without_inquiry_first(records) == []
    assert sorted(outbox) == sorted(intents)  # every attempt's outcome buffered exactly once
    pending = [t for t, s in finals.items() if s == "pending"]
    assert all(any(r["type"] == "inquiry" and r["transaction_id"] == t for r in records) for t in pending)


# --------------------------------------------------------------------------------------------------
# payroute demo: the summary, and no process left behind
# --------------------------------------------------------------------------------------------------


def service_processes(state_dir) -> list[int]:
    """Processes (the BentoML server and its workers) serving from ``state_dir``."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "PayrouteService" in " ".join(process.info["cmdline"] or ()) and \
                    process.environ().get("PAYROUTE_STATE_DIR", "").startswith(str(Path(state_dir).resolve())):
                found.append(process.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_demo_prints_the_summary_and_leaves_no_process(tmp_path):
    workdir = tmp_path / "demo"
    command = [sys.executable, "-m", "payroute.cli", "demo", "--txns", "400", "--workers", "8", "--no-train",
               "--models-dir", str(tmp_path / "no-models"), "--workdir", str(workdir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    seen: list[int] = []
    while process.poll() is None and time.monotonic() < deadline and not seen:
        seen = service_processes(workdir)  # the service is really started...
        time.sleep(0.2)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert seen, "the demo should have started the scoring service"
    assert service_processes(workdir) == []  # ...and nothing of it is left
    for line in ("approval: first attempt", "attempts per transaction", "cost EUR", "first-attempt traffic share",
                 "before", "during", "after", "double charges 0, outcomes lost 0"):
        assert line in output, (line, output)
