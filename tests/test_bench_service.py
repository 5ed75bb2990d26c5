"""The service benchmark: its verdict per target, and one short run end to end against real servers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # bench_service imports its sibling http_load
    try:
        spec = importlib.util.spec_from_file_location("bench_service_under_test", BENCHMARKS / "bench_service.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_verdicts_all_met(bench):
    lines = bench.verdicts({1: 0.71, 4: 0.9, 64: 1.2}, capacity=1.0, p50_ms=2.9, p99_ms=14.9, batch_rate=5000.0)
    assert len(lines) == 5
    assert all(line.endswith("met") and "NOT" not in line for line in lines), lines


def test_verdicts_strict_throughput_reading_names_the_levels_below(bench):
    """Below 70 % at concurrency 1 and 4 only: the strict reading is not met and says where; capacity is."""
    lines = bench.verdicts({1: 0.55, 4: 0.69, 16: 0.8, 64: 1.2}, capacity=0.95, p50_ms=2.0, p99_ms=4.0,
                           batch_rate=6000.0)
    strict = next(line for line in lines if "every concurrency level" in line)
    assert strict.endswith("NOT met (below at 1, 4)")
    assert "1: 0.55, 4: 0.69, 16: 0.80, 64: 1.20" in strict
    capacity = next(line for line in lines if "capacity" in line)
    assert capacity.endswith("0.95, met")


def test_verdicts_latency_and_batch_misses(bench):
    lines = bench.verdicts({1: 0.8}, capacity=0.69, p50_ms=3.0, p99_ms=15.0, batch_rate=4999.0)
    assert [line.endswith("NOT met") for line in lines] == [True, True, False, True, True]
    assert lines[0].startswith("p99 < 15 ms at 100 req/s:")


def test_verdicts_say_when_the_latencies_were_taken_at_another_rate(bench):
    lines = bench.verdicts({1: 0.8}, capacity=0.8, p50_ms=1.0, p99_ms=2.0, batch_rate=6000.0, rate=40)
    assert lines[1] == "p50 < 3 ms at 40 req/s, not the target's 100: 1.00 ms, met"


def test_short_run_end_to_end(tmp_path):
    """The whole benchmark, briefly, on the demo bundle: both servers start, every phase answers without
    failures, and the run ends with one verdict line per target."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["TMPDIR"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_service.py"), "--seconds", "0.5", "--concurrency", "1,4",
         "--feedback-concurrency", "1,4", "--feedback-count", "30", "--rate", "40"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "failures" not in out.split("client:")[0], out  # the feedback phase: every outcome learned
    closed = out.split("client:")[1].split("capacity (each server's best over these levels)")
    assert len(closed) == 2 and "failures" not in closed[0], out  # /rank and the no-op: every request answered
    assert "/rank at 40 req/s" in out and "failures 0/20" in out.split("/rank at 40 req/s")[1].splitlines()[0]
    assert "/rank_batch (256 per request, 2 clients)" in out and "failures 0;" in out.split("/rank_batch (256")[1]
    verdicts = out.split("targets, this run:")[1].strip().splitlines()
    assert len(verdicts) == 5 and all(line.rstrip().endswith(("met", ")")) for line in verdicts), verdicts
