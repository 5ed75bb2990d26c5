"""Wiring: a ready dispatcher from endpoints, a state folder and (optionally) the scoring service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payroute.catalog import Catalog
from payroute.serving.dispatch.breaker import CircuitBreakers
from payroute.serving.dispatch.connectors import HttpConnector
from payroute.serving.dispatch.decline_codes import DeclineCodeMap
from payroute.serving.dispatch.dispatcher import Dispatcher, DispatchPolicy
from payroute.serving.dispatch.journal import Journal
from payroute.serving.dispatch.limits import ReattemptLimits
from payroute.serving.dispatch.outcomes import ClientSink, MemorySink, OutcomeBuffer, OutcomeSink
from payroute.serving.dispatch.ranking import FallbackRanking, ServiceRanking, StaticRanking


@dataclass
class DispatcherParts:
    dispatcher: Dispatcher
    buffer: OutcomeBuffer
    journal: Journal
    ranking: FallbackRanking
    codes: DeclineCodeMap
    connectors: dict[str, HttpConnector]
    clients: list[Any]
    sink: OutcomeSink

    def close(self) -> None:
        self.buffer.close()
        self.journal.close()
        for connector in self.connectors.values():
            connector.close()
        for client in self.clients:
            client.close()


def build_dispatcher(catalog: Catalog, endpoints: dict[str, str], state_dir: str | Path, *,
                     service_url: str | None = None, api_key: str | None = None, rank_timeout_s: float = 0.3,
                     feedback_timeout_s: float = 2.0, psp_timeout_s: float = 2.0, max_attempts: int = 3,
                     time_budget_s: float = 20.0, decline_codes: str | Path | None = None,
                     sink: OutcomeSink | None = None, breakers: CircuitBreakers | None = None,
                     limits: ReattemptLimits | None = None, policy: DispatchPolicy | None = None,
                     senders: int = 8) -> DispatcherParts:
    """Connectors for ``endpoints``, ranking from ``service_url`` (static fallback), journal and buffer
    in ``state_dir``, outcomes to the service's /feedback (or ``sink``; an in-memory sink without either)."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    clients: list[Any] = []
    primary = None
    if service_url:
        from payroute.serving.client import ScoringClient

        rank_client = ScoringClient(service_url, api_key, timeout=rank_timeout_s)
        feedback_client = ScoringClient(service_url, api_key, timeout=feedback_timeout_s)
        clients += [rank_client, feedback_client]
        primary = ServiceRanking(rank_client)
        sink = sink or ClientSink(feedback_client)
    sink = sink or MemorySink()
    connectors = {psp: HttpConnector(psp, url, timeout_s=psp_timeout_s) for psp, url in endpoints.items()}
    ranking = FallbackRanking(primary, StaticRanking(catalog), known=set(connectors))
    codes = DeclineCodeMap.load(decline_codes)
    journal = Journal(state / "journal.jsonl")
    buffer = OutcomeBuffer(state / "outcomes", sink, workers=senders)
    policy = policy or DispatchPolicy(max_attempts=max_attempts, time_budget_s=time_budget_s)
    dispatcher = Dispatcher(catalog, connectors, ranking, buffer, journal, codes, breakers=breakers,
                            limits=limits, policy=policy)
    return DispatcherParts(dispatcher, buffer, journal, ranking, codes, connectors, clients, sink)
