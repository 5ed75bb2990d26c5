"""Sandbox PSPs driven by the simulator's world: approval, latency and decline codes from the truth.

The world answers vectorised, so the behaviour precomputes the answers of every known transaction at a
PSP for an attempt number on first use (a fraction of a second for 10,000 transactions) and then looks
them up; a transaction the world never sampled is answered one row at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.contracts import TRANSACTIONS_SCHEMA
from payroute.sandbox.behaviour import PspAnswer
from payroute.sandbox.faults import FaultCounter, FaultPlan
from payroute.sandbox.ledger import Ledger
from payroute.sandbox.server import SandboxPsp

_CONTRACT_COLUMNS = tuple(TRANSACTIONS_SCHEMA.names)


class WorldBehaviour:
    """A :class:`~payroute.sandbox.behaviour.PspBehaviour` backed by ``payroute.simulator.World``."""

    def __init__(self, world: Any, transactions: pd.DataFrame | None = None) -> None:
        self.world = world
        self._frame = transactions
        self._encoded = world.encode(transactions) if transactions is not None else None
        self._row = {tid: k for k, tid in enumerate(transactions["id"])} if transactions is not None else {}
        self._tables: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def _table(self, psp: str, attempt: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (psp, attempt)
        with self._lock:
            if key not in self._tables:
                out = self.world.attempt(self._encoded, psp, at=self._frame["timestamp"], attempt=attempt)
                self._tables[key] = (out["status"].to_numpy(object), out["decline_code"].to_numpy(object),
                                     out["latency_ms"].to_numpy(float))
            return self._tables[key]

    def answer(self, psp: str, transaction: Mapping[str, Any], attempt: int) -> PspAnswer:
        row = self._row.get(str(transaction.get("id")))
        if row is not None:
            status, code, latency = (column[row] for column in self._table(psp, attempt))
        else:
            out = self.world.attempt(_frame_of(transaction), psp, attempt=attempt).iloc[0]
            status, code, latency = out["status"], out["decline_code"], out["latency_ms"]
        code = code if isinstance(code, str) else None
        return PspAnswer(str(status), code, float(latency))


def _frame_of(transaction: Mapping[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame([{name: transaction.get(name) for name in _CONTRACT_COLUMNS}])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["amount"] = frame["amount"].astype(float)
    return frame


class Sandbox:
    """Every catalogue PSP as a sandbox server sharing one ledger and one fault counter."""

    def __init__(self, behaviour: Any, psps: Sequence[str], faults: FaultPlan | None = None,
                 latency_scale: float = 0.001, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()
        self.counter = FaultCounter()
        self.servers = {
            name: SandboxPsp(name, behaviour, self.ledger, faults, self.counter, latency_scale) for name in psps
        }

    @classmethod
    def from_world(cls, world: Any, transactions: pd.DataFrame | None, faults: FaultPlan | None = None,
                   latency_scale: float = 0.001) -> "Sandbox":
        return cls(WorldBehaviour(world, transactions), world.psps, faults, latency_scale)

    def start(self) -> "Sandbox":
        for server in self.servers.values():
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items()}


def decline_code_config(world: Any, catalog: Catalog | None = None) -> dict[str, Any]:
    """The dispatcher's decline-code mapping (``decline_codes.yaml``) as the world's vocabulary has it."""
    names = catalog.psp_names if catalog is not None else world.psps
    return {
        "version": 1,
        "psps": {psp: {code: reason.value for code, reason in sorted(world.decline_codes[psp].items())}
                 for psp in names},
    }
