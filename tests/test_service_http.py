"""Scoring service, tier 3: a real ``payroute serve`` process over HTTP on a free loopback port.

Happy path through :class:`ScoringClient`; a PAN refused and absent from the server's logs; overload
shed with a fast 429; kill -9 after acknowledged feedback and before any snapshot loses nothing;
schemathesis fuzzing of every endpoint of the service's own OpenAPI document finds no 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from payroute.catalog import load_catalog
from payroute.contracts import Transaction
from payroute.serving.client import AsyncScoringClient, OutcomeConflict, ScoringClient, ServiceUnavailable
from payroute.serving.schemas import EXAMPLE_TRANSACTION, MAX_BATCH
from payroute.serving.testing import write_demo_bundle

KEY = "test-key-http"
PAN = "5555555555554444"
MAX_CONCURRENCY = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``payroute serve`` in its own process group (kill -9 reaches the BentoML worker too)."""

    def __init__(self, root: Path, models: Path) -> None:
        self.root, self.models, self.port = root, models, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Server":
        env = {**os.environ, "PAYROUTE_API_KEYS": KEY, "PAYROUTE_SNAPSHOT_S": "3600", "PAYROUTE_MODEL_POLL_S": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("PAYROUTE_TRACE_REQUESTS", None)  # the default: no spans on the API routes
        command = [sys.executable, "-m", "payroute.cli", "serve", "--port", str(self.port), "--no-train",
                   "--models-dir", str(self.models), "--state-dir", str(self.root / "state"),
                   "--max-concurrency", str(MAX_CONCURRENCY)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=self.root)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/status", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server and its BentoML workers (which run in sessions of their own)."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        workers = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, sig)
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.send_signal(sig)
        self.process.wait(timeout=30)
        psutil.wait_procs(workers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    transaction = Transaction.model_validate(EXAMPLE_TRANSACTION)
    write_demo_bundle(root / "models" / "champion", load_catalog(), transaction, seed=4, version="http-1")
    running = Server(root, root / "models").start()
    yield running
    running.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def client(server):
    with ScoringClient(server.url, KEY, timeout=5.0) as client:
        yield client


def outcome_for(decision, transaction_id: str, status: str = "approved") -> dict:
    body = {"transaction_id": transaction_id, "attempt": 1, "psp": decision.ranking[0].psp,
            "timestamp": "2026-11-02T10:15:04Z", "status": status, "latency_ms": 300.0}
    if status != "approved":
        body["decline_reason"] = "do_not_honor"
    return body


def test_rank_and_feedback_round_trip(client):
    decision = client.rank(EXAMPLE_TRANSACTION)
    assert decision.ranking and not decision.degraded and decision.model_version == "http-1"
    ack = client.feedback(outcome_for(decision, EXAMPLE_TRANSACTION["id"]), decision.decision_id)
    assert ack.status == "recorded" and ack.learned
    assert client.feedback(outcome_for(decision, EXAMPLE_TRANSACTION["id"]), decision.decision_id).status == "duplicate"
    with pytest.raises(OutcomeConflict):
        client.feedback(outcome_for(decision, EXAMPLE_TRANSACTION["id"], "declined"), decision.decision_id)
    batch = client.rank_batch([{**EXAMPLE_TRANSACTION, "id": f"http-b{i}"} for i in range(10)])
    assert len(batch) == 10


def test_pan_refused_and_absent_from_server_logs(server):
    response = httpx.post(f"{server.url}/rank", json={"transaction": {**EXAMPLE_TRANSACTION, "card_bin": PAN}})
    assert response.status_code == 422 and PAN not in response.text
    assert response.json()["errors"][0]["field"] == "transaction.card_bin"
    time.sleep(0.3)  # let the access log flush
    log = server.log.read_text()
    assert "/rank" in log and PAN not in log  # the log is being written, and holds no card number


def test_api_routes_carry_no_spans_other_routes_do(server):
    """The served config leaves /rank out of OpenTelemetry (its access-log line has no trace id) while
    /status keeps its span: the exclusion reaches BentoML's middleware, route by route."""
    assert httpx.post(f"{server.url}/rank", json={"transaction": EXAMPLE_TRANSACTION}).status_code == 200
    assert httpx.get(f"{server.url}/status").status_code == 200
    time.sleep(0.3)  # let the access log flush
    lines = server.log.read_text().splitlines()
    rank_lines = [line for line in lines if "path=/rank," in line]
    status_lines = [line for line in lines if "path=/status," in line]
    assert rank_lines and status_lines
    assert all("trace=" not in line for line in rank_lines)
    assert "trace=" in status_lines[-1]
    assert "OpenTelemetry spans on /rank, /rank_batch, /feedback off" in server.log.read_text()  # said at start


def test_overload_is_shed_fast_with_429(server):
    """More concurrent full batches than the concurrency limit: the excess hears 429 at once."""
    batch = {"transactions": [{**EXAMPLE_TRANSACTION, "id": f"load-{i}"} for i in range(MAX_BATCH)]}

    async def burst():
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
            async def one():
                start = time.perf_counter()
                response = await http.post(f"{server.url}/rank_batch", json=batch)
                return response.status_code, time.perf_counter() - start
            return await asyncio.gather(*(one() for _ in range(24)))

    results = asyncio.run(burst())
    statuses = [status for status, _ in results]
    shed = sorted(seconds for status, seconds in results if status == 429)
    assert set(statuses) <= {200, 429} and 200 in statuses and shed
    assert shed[len(shed) // 2] < 0.5  # the median refusal is fast, not queued behind the work


def test_client_reports_overload_and_timeouts_as_unavailable(server):
    with ScoringClient("http://127.0.0.1:9", timeout=0.2) as dead:  # nothing listens on the discard port
        with pytest.raises(ServiceUnavailable):
            dead.rank(EXAMPLE_TRANSACTION)

    async def async_round_trip():
        async with AsyncScoringClient(server.url, KEY, timeout=5) as client:
            return await client.rank(EXAMPLE_TRANSACTION)

    assert asyncio.run(async_round_trip()).ranking


def test_kill_9_after_acknowledged_feedback_loses_nothing(server, client):
    """Acknowledged outcomes survive kill -9 before any snapshot; decisions answered just before it still map."""
    acked, pending = [], []
    for i in range(8):
        transaction_id = f"crash-{i}"
        decision = client.rank({**EXAMPLE_TRANSACTION, "id": transaction_id})
        if i < 6:
            ack = client.feedback(outcome_for(decision, transaction_id), decision.decision_id)
            assert ack.learned
            acked.append((decision, transaction_id, ack.sequence))
        else:
            pending.append((decision, transaction_id))
    before = client.status()["last_sequence"]
    server.kill(signal.SIGKILL)  # at once: a decision is written before its answer, not batched later
    server.start()
    with ScoringClient(server.url, KEY, timeout=5.0) as restarted:
        status = restarted.status()
        assert status["last_sequence"] == before and status["replayed_at_start"] >= len(acked)
        for decision, transaction_id, sequence in acked:  # still there: a repeat is a duplicate
            ack = restarted.feedback(outcome_for(decision, transaction_id), decision.decision_id)
            assert ack.status == "duplicate" and ack.sequence == sequence
        for decision, transaction_id in pending:  # decided before the crash, reported after it
            ack = restarted.feedback(outcome_for(decision, transaction_id), decision.decision_id)
            assert ack.status == "recorded" and ack.decision_known and ack.learned


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_every_endpoint_finds_no_server_error(server, mode):
    """Cases generated from the service's own OpenAPI document (valid and invalid bodies), bounded per endpoint.

    Driven through schemathesis' strategies directly: its pytest plugin does not run under pytest 9. BentoML
    labels its document OpenAPI 3.0.2 but fills it with pydantic's JSON Schema 2020-12 (numeric
    ``exclusiveMinimum``, ``type: null``), which is OpenAPI 3.1: the document is read as what it is.
    """
    from hypothesis import given
    from schemathesis import GenerationMode

    document = httpx.get(f"{server.url}/docs.json", timeout=10).json()
    document["openapi"] = "3.1.0"
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    posts = [operation for operation in operations if operation.method.upper() == "POST"]
    assert {operation.path for operation in posts} == {"/rank", "/rank_batch", "/feedback"}
    statuses: dict[str, set[int]] = {}
    for operation in posts:

        @given(operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def no_server_error(case):
            response = case.call(base_url=server.url, headers={"X-API-Key": KEY}, timeout=10)
            statuses.setdefault(operation.path, set()).add(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.path} -> {response.status_code}"

        no_server_error()
    assert set(statuses) == {"/rank", "/rank_batch", "/feedback"}  # every endpoint was exercised
