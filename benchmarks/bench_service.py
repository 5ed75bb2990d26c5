"""Load test of the scoring service against a no-op BentoML endpoint, in the same run on the same machine.

Starts ``payroute serve`` (with a champion: ``--models-dir``, else a small demo bundle) and a no-op
BentoML service taking the same body, then with an httpx async client:

1. closed loop at several concurrency levels: throughput and p50/p99 latency of /rank vs the no-op, and
   each server's CPU per answered request (at concurrency 1 a server's one worker is busy all the
   time, so the throughput ratio is the ratio of the two CPU costs);
2. open loop at a fixed rate (default 100 req/s): p50/p99 of /rank;
3. /rank_batch (256 transactions per request): decisions per second;
4. /feedback (one outcome per call, each for a decision the service issued) at several concurrency
   levels: outcomes per second and p50/p99 (every outcome is fsync'd to the log before its answer);
5. ``--only log``: the outcome log alone, in-process, appended from 1/8/32 threads: outcomes per second
   and outcomes per commit (one fsync each), which is what group commit buys.

A full run ends with one line per target of the issue (:func:`verdicts`): met or not in this run, with
the throughput target read at every concurrency level and, on its own line, as capacity.

    python benchmarks/bench_service.py [--models-dir models] [--seconds 5] [--quick] [--only feedback]

The load generator shares the machine's cores with the server; figures are recorded in docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bentoml
import httpx
import numpy as np

import http_load
from payroute.serving.schemas import EXAMPLE_TRANSACTION, MAX_BATCH
from payroute.serving.settings import tracing_config

API_KEY = "bench-key"

# The targets, in one place: the verdict lines below read them.
RATIO_TARGET = 0.70  # /rank throughput against the no-op's, in the same run
P50_TARGET_MS, P99_TARGET_MS, TARGET_RATE = 3.0, 15.0, 100.0  # /rank latency at 100 req/s
BATCH_TARGET = 5000.0  # decisions per second through /rank_batch


def verdicts(ratios: dict[int, float], capacity: float, p50_ms: float, p99_ms: float, batch_rate: float,
             rate: float = TARGET_RATE) -> list[str]:
    """One line per target for this run: the figure and whether it is met. The throughput target is read
    strictly (at every concurrency level measured) and, on its own line, as capacity (each server's best
    throughput over the levels); the two readings differ at low concurrency (docs/serving.md)."""
    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    short = {c: r for c, r in ratios.items() if r < RATIO_TARGET}
    levels = ", ".join(f"{c}: {r:.2f}" for c, r in sorted(ratios.items()))
    missed = f" (below at {', '.join(str(c) for c in sorted(short))})" if short else ""
    at = f"at {rate:g} req/s" + ("" if rate == TARGET_RATE else f", not the target's {TARGET_RATE:g}")
    return [
        f"p99 < {P99_TARGET_MS:g} ms {at}: {p99_ms:.2f} ms, {mark(p99_ms < P99_TARGET_MS)}",
        f"p50 < {P50_TARGET_MS:g} ms {at}: {p50_ms:.2f} ms, {mark(p50_ms < P50_TARGET_MS)}",
        f"/rank throughput >= {RATIO_TARGET:.0%} of the no-op's at every concurrency level ({levels}): "
        f"{mark(not short)}{missed}",
        f"  read as capacity (each server's best over the levels): {capacity:.2f}, {mark(capacity >= RATIO_TARGET)}",
        f"/rank_batch >= {BATCH_TARGET:,.0f} decisions/s: {batch_rate:,.0f}, {mark(batch_rate >= BATCH_TARGET)}",
    ]


@bentoml.service(name="noop", workers=1, traffic={"timeout": 10, "max_concurrency": 1000},
                 tracing=tracing_config(["/noop"]))
class NoopService:
    """The framework's floor: same JSON body, no work, and the service's settings (one worker, the same
    traffic limits, spans only if ``PAYROUTE_TRACE_REQUESTS`` as for the API routes)."""

    @bentoml.api(route="/noop")
    async def noop(self, transaction: dict) -> dict:
        return {"ok": True}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{command} did not start; see {log}")


def server_cpu(process: subprocess.Popen) -> float:
    """User + system CPU seconds used so far by a served process and its workers (the server's own cost,
    apart from the load generator's on the same cores)."""
    import psutil

    root = psutil.Process(process.pid)
    total = 0.0
    for member in (root, *root.children(recursive=True)):
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def stop(process: subprocess.Popen) -> None:
    import psutil

    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.terminate()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    psutil.wait_procs(workers, timeout=30)


async def closed_loop(url: str, body: dict, concurrency: int, seconds: float) -> tuple[float, np.ndarray, int]:
    """``concurrency`` clients sending back to back for ``seconds``: (requests/s, latencies s, failures)."""
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def client() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await http.post(url, json=body)
                latencies.append(time.perf_counter() - start)
                failures += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, np.array(latencies), failures


async def open_loop(url: str, body: dict, rate: float, seconds: float) -> tuple[np.ndarray, int]:
    """Requests at a fixed rate regardless of answers (no coordinated omission): latencies, failures."""
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as http:

        async def one() -> None:
            nonlocal failures
            start = time.perf_counter()
            response = await http.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

        tasks = []
        began = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return np.array(latencies), failures


async def feedback_loop(url: str, concurrency: int, count: int) -> tuple[float, np.ndarray, int]:
    """``count`` outcomes for fresh decisions, sent by ``concurrency`` clients: (outcomes/s, latencies s, failures)."""
    headers = {"X-API-Key": API_KEY}
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=concurrency)) as http:
        decisions = []
        run = f"fb{concurrency}r{int(time.time()) % 100_000}"  # short digit runs: never mistaken for a PAN
        for start in range(0, count, MAX_BATCH):
            ids = [f"{run}-{i}" for i in range(start, min(count, start + MAX_BATCH))]
            batch = {"transactions": [{**EXAMPLE_TRANSACTION, "id": i} for i in ids]}
            response = await http.post(f"{url}/rank_batch", json=batch)
            assert response.status_code == 200, response.text[:500]
            answer = response.json()["decisions"]
            decisions += [(i, d["decision_id"], d["ranking"][0]["psp"]) for i, d in zip(ids, answer)]
        queue = list(reversed(decisions))
        latencies: list[float] = []
        failures = 0

        async def client() -> None:
            nonlocal failures
            while queue:
                transaction_id, decision_id, psp = queue.pop()
                body = {"transaction_id": transaction_id, "attempt": 1, "psp": psp, "status": "approved",
                        "timestamp": EXAMPLE_TRANSACTION["timestamp"], "latency_ms": 250.0, "decision_id": decision_id}
                start = time.perf_counter()
                response = await http.post(f"{url}/feedback", json=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or not response.json().get("learned"):
                    failures += 1
                    print(f"  feedback not learned: HTTP {response.status_code} {response.text[:300]}")

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, np.array(latencies), failures


def report_log(concurrency_levels: list[int], count: int) -> int:
    """OutcomeLog.append from several threads (in-process): outcomes/s and outcomes per fsync'd commit."""
    import threading

    from payroute.contracts import AttemptOutcome
    from payroute.serving.eventlog import OutcomeLog, OutcomeRecord

    print(f"{'threads':>7} | {'outcomes/s':>10} {'per commit':>10} | load average {os.getloadavg()[0]:.1f}")
    for threads in concurrency_levels:
        log = OutcomeLog(Path(tempfile.mkdtemp(prefix="bench-log-")) / "outcomes.sqlite")
        per_thread = max(1, count // threads)

        def append(worker: int) -> None:
            for i in range(per_thread):
                outcome = AttemptOutcome(transaction_id=f"w{worker}x{i}", attempt=1, psp="euroacq", status="approved",
                                         timestamp=EXAMPLE_TRANSACTION["timestamp"], latency_ms=200.0)
                log.append(OutcomeRecord(outcome, "d", True, None, None, time.time(), 0.8))

        workers = [threading.Thread(target=append, args=(w,)) for w in range(threads)]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        print(f"{threads:>7} | {threads * per_thread / elapsed:>10.0f} {threads * per_thread / log.commits:>10.1f}")
        log.close()
    return 0


def run_closed(client: str, url: str, body: dict, concurrency: int, seconds: float) -> tuple[float, np.ndarray, int]:
    """Closed loop through the chosen client: (requests/s, latencies s, failures)."""
    if client == "httpx":
        return asyncio.run(closed_loop(url, body, concurrency, seconds))
    parsed = httpx.URL(url)
    result = asyncio.run(http_load.closed_loop(parsed.host, parsed.port, http_load.encode_post(parsed.path, body),
                                               concurrency, seconds))
    return result.rate, result.latencies, result.failures


def measured_closed(client: str, url: str, body: dict, concurrency: int, seconds: float,
                    server: subprocess.Popen) -> tuple[tuple[float, np.ndarray, int], float]:
    """:func:`run_closed` and the server's CPU per answered request in µs over the run."""
    before = server_cpu(server)
    result = run_closed(client, url, body, concurrency, seconds)
    answered = len(result[1])
    return result, (server_cpu(server) - before) / max(answered, 1) * 1e6


def run_open(client: str, url: str, body: dict, rate: float, seconds: float) -> tuple[np.ndarray, int]:
    """Open loop at ``rate`` through the chosen client: (latencies s, failures)."""
    if client == "httpx":
        return asyncio.run(open_loop(url, body, rate, seconds))
    parsed = httpx.URL(url)
    result = asyncio.run(http_load.open_loop(parsed.host, parsed.port, http_load.encode_post(parsed.path, body),
                                             rate, seconds))
    print(f"  (client schedule lag p50 {ms(result.schedule_lag, 50):.2f} ms, p99 {ms(result.schedule_lag, 99):.2f} ms: "
          "not counted in the latencies)")
    return result.latencies, result.failures


def report_batch(service_url: str, seconds: float, client: str = "raw") -> float:
    """/rank_batch with full batches from 2 clients: prints and returns decisions per second."""
    batch = {"transactions": [{**EXAMPLE_TRANSACTION, "id": f"bench-{i}"} for i in range(MAX_BATCH)]}
    rate, latencies, failures = run_closed(client, f"{service_url}/rank_batch", batch, 2, seconds)
    print(f"/rank_batch ({MAX_BATCH} per request, 2 clients): {rate * MAX_BATCH:.0f} decisions/s, "
          f"p50 {ms(latencies, 50):.0f} ms per batch, failures {failures}; load average {os.getloadavg()[0]:.1f}")
    return rate * MAX_BATCH


def ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop requests per second")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--feedback-concurrency", default="1,8,32")
    parser.add_argument("--feedback-count", type=int, default=1000, help="outcomes per feedback level")
    parser.add_argument("--only", choices=("rank", "open", "feedback", "batch", "log"), default=None,
                        help="run one part only (open: the open-loop /rank and no-op at --rate, interleaved --repeat times)")
    parser.add_argument("--repeat", type=int, default=3, help="with --only open: runs of each, interleaved")
    parser.add_argument("--quick", action="store_true", help="2 s per measurement")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator for /rank, the no-op and /rank_batch: the lean keep-alive client of "
                             "http_load.py (default) or httpx (≈ 0.6 ms more per request, spent in the client)")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.quick else args.seconds
    if args.only == "log":
        return report_log([int(c) for c in args.feedback_concurrency.split(",")], args.feedback_count)
    work = Path(tempfile.mkdtemp(prefix="bench-service-"))
    models = args.models_dir
    if models is None:
        from payroute.catalog import load_catalog
        from payroute.contracts import Transaction
        from payroute.serving.testing import write_demo_bundle

        models = work / "models"
        write_demo_bundle(models / "champion", load_catalog(), Transaction.model_validate(EXAMPLE_TRANSACTION))
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PAYROUTE_MAX_CONCURRENCY"] = "1000"  # measure latency, not shedding
    env["PAYROUTE_API_KEYS"] = API_KEY
    service_port, noop_port = free_port(), free_port()
    service_url, noop_url = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{noop_port}"
    service = start([sys.executable, "-m", "payroute.cli", "serve", "--port", str(service_port), "--no-train",
                     "--models-dir", str(models), "--state-dir", str(work / "state")], env, service_url, work / "service.log")
    noop = start([sys.executable, "-m", "bentoml", "serve", "bench_service:NoopService", "--port", str(noop_port),
                  "--working-dir", str(Path(__file__).parent)], env, noop_url, work / "noop.log")
    body = {"transaction": EXAMPLE_TRANSACTION}
    try:
        status = httpx.get(f"{service_url}/status").json()
        print(f"model {status['model_version']} loaded={status['model_loaded']}; {os.cpu_count()} CPUs shared with the load "
              f"generator; load average {os.getloadavg()[0]:.1f}; OpenTelemetry spans on /rank and the no-op: "
              f"{'yes' if not tracing_config(['/noop']) else 'no (PAYROUTE_TRACE_REQUESTS=1 for both)'}")
        if args.only in (None, "feedback"):
            print(f"{'concurrency':>11} | {'/feedback outcomes/s':>20} {'p50 ms':>7} {'p99 ms':>7}")
            for concurrency in (int(c) for c in args.feedback_concurrency.split(",")):
                rate, latencies, failures = asyncio.run(feedback_loop(service_url, concurrency, args.feedback_count))
                print(f"{concurrency:>11} | {rate:>20.0f} {ms(latencies, 50):>7.2f} {ms(latencies, 99):>7.2f}"
                      f"{'' if failures == 0 else f'  failures {failures}'}")
            if args.only == "feedback":
                return 0
        if args.only == "batch":
            report_batch(service_url, seconds, args.client)
            return 0
        client = args.client
        print(f"client: {client}")
        if args.only == "open":
            run_open(client, f"{service_url}/rank", body, args.rate, 1.0)  # warm-up
            for run in range(args.repeat):
                for name, url in (("/rank", f"{service_url}/rank"), ("no-op", f"{noop_url}/noop")):
                    latencies, failures = run_open(client, url, body, args.rate, seconds)
                    print(f"run {run + 1}: {name} at {args.rate:.0f} req/s: p50 {ms(latencies, 50):.2f} ms, "
                          f"p99 {ms(latencies, 99):.2f} ms, failures {failures}/{len(latencies)}; "
                          f"load average {os.getloadavg()[0]:.1f}")
            return 0
        run_closed(client, f"{service_url}/rank", body, 4, 1.0)  # warm-up
        run_closed(client, f"{noop_url}/noop", body, 4, 1.0)
        print("server CPU: user + system CPU of the serving process per answered request (µs)")
        print(f"{'concurrency':>11} | {'/rank req/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} | "
              f"{'no-op req/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7} | ratio")
        best: dict[str, tuple[float, int]] = {}  # each server's highest throughput over the levels
        ratios: dict[int, float] = {}
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rank, rank_cpu = measured_closed(client, f"{service_url}/rank", body, concurrency, seconds, service)
            floor, floor_cpu = measured_closed(client, f"{noop_url}/noop", body, concurrency, seconds, noop)
            for name, rate in (("/rank", rank[0]), ("no-op", floor[0])):
                best[name] = max(best.get(name, (0.0, 0)), (rate, concurrency))
            ratios[concurrency] = rank[0] / floor[0]
            print(f"{concurrency:>11} | {rank[0]:>11.0f} {ms(rank[1], 50):>7.2f} {ms(rank[1], 99):>7.2f} {rank_cpu:>7.0f} | "
                  f"{floor[0]:>11.0f} {ms(floor[1], 50):>7.2f} {ms(floor[1], 99):>7.2f} {floor_cpu:>7.0f} | "
                  f"{rank[0] / floor[0]:.2f}{'' if rank[2] + floor[2] == 0 else f'  failures {rank[2]}/{floor[2]}'}")
        capacity = best["/rank"][0] / best["no-op"][0]
        print(f"capacity (each server's best over these levels): /rank {best['/rank'][0]:.0f} req/s at "
              f"{best['/rank'][1]}, no-op {best['no-op'][0]:.0f} at {best['no-op'][1]} | ratio {capacity:.2f}")
        rank_open, failures = run_open(client, f"{service_url}/rank", body, args.rate, seconds)
        print(f"/rank at {args.rate:.0f} req/s: p50 {ms(rank_open, 50):.2f} ms, p99 {ms(rank_open, 99):.2f} ms, "
              f"failures {failures}/{len(rank_open)}; load average {os.getloadavg()[0]:.1f}")
        latencies, failures = run_open(client, f"{noop_url}/noop", body, args.rate, seconds)
        print(f"no-op at {args.rate:.0f} req/s: p50 {ms(latencies, 50):.2f} ms, p99 {ms(latencies, 99):.2f} ms, "
              f"failures {failures}/{len(latencies)} (the framework's floor at this rate)")
        batch_rate = report_batch(service_url, seconds, client)
        print("targets, this run:")
        for line in verdicts(ratios, capacity, ms(rank_open, 50), ms(rank_open, 99), batch_rate, args.rate):
            print(f"  {line}")
    finally:
        stop(service)
        stop(noop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
