"""A lean HTTP/1.1 load generator: keep-alive connections over asyncio streams (uvloop), pre-encoded requests.

The measuring client shares the machine's 2 cores with the server. httpx costs ≈ 0.6 ms per request in
the client on this machine (a no-op BentoML endpoint: p50 1.5 ms through ``httpx.Client``, 0.86 ms
through a raw socket), which inflates every latency and hides part of the server's own cost; this
client sends bytes prepared once and reads ``Content-Length`` bytes back, so what it measures is the
server (plus the loopback). Closed loop: N connections back to back. Open loop: requests started at a
fixed rate whatever the answers (no coordinated omission), on a pool of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

with contextlib.suppress(ImportError):
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def encode_post(path: str, body: object, headers: Mapping[str, str] | None = None) -> bytes:
    """One POST request with a JSON body, ready to write on a keep-alive connection."""
    data = json.dumps(body).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class Connection:
    """One keep-alive connection; :meth:`send` writes a request and returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        return status, await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class LoadResult:
    """Requests answered per second, latencies (s) and non-200 answers of one run."""

    rate: float
    latencies: np.ndarray
    failures: int
    statuses: dict[int, int] = field(default_factory=dict)
    schedule_lag: np.ndarray | None = None  # open loop: how late the client started each request (s)

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if len(self.latencies) else float("nan")


async def closed_loop(host: str, port: int, request: bytes, concurrency: int, seconds: float) -> LoadResult:
    """``concurrency`` connections sending back to back for ``seconds``."""
    connections = [await Connection.open(host, port) for _ in range(concurrency)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def client(connection: Connection) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status, _ = await connection.send(request)
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - began
    for connection in connections:
        await connection.close()
    failures = sum(n for status, n in statuses.items() if status != 200)
    return LoadResult(len(latencies) / elapsed, np.array(latencies), failures, statuses)


async def open_loop(host: str, port: int, request: bytes, rate: float, seconds: float, pool: int = 32) -> LoadResult:
    """``rate`` requests per second for ``seconds`` on up to ``pool`` keep-alive connections. A request
    starts on schedule whatever earlier answers do, and is timed from when its task runs, before it
    takes a connection: a wait for a free connection counts; the client's own timer lateness (asyncio
    wakes up to ~1 ms late, measured on the no-op) does not, and is reported as ``schedule_lag``."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(await Connection.open(host, port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    lags: list[float] = []

    async def one(scheduled: float) -> None:
        start = time.perf_counter()
        lags.append(start - scheduled)
        connection = await idle.get()
        status, _ = await connection.send(request)
        latencies.append(time.perf_counter() - start)
        statuses[status] = statuses.get(status, 0) + 1
        idle.put_nowait(connection)

    tasks = []
    began = time.perf_counter()
    for i in range(int(rate * seconds)):
        scheduled = began + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    while not idle.empty():
        await idle.get_nowait().close()
    failures = sum(n for status, n in statuses.items() if status != 200)
    return LoadResult(len(latencies) / elapsed, np.array(latencies), failures, statuses, np.array(lags))
