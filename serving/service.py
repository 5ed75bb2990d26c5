"""The BentoML scoring service: ``POST /rank``, ``POST /rank_batch``, ``POST /feedback``, ``GET /status``.

A thin HTTP shell around :class:`~payroute.serving.state.ScoringCore`. One worker process owns the
learning state (so every outcome reaches the bandit that made the decision); overload is shed by
BentoML's concurrency limit with a fast 429 instead of queueing. The :class:`RequestGuard` middleware
checks size, media type, API key and the request model before BentoML parses anything.

Run it with ``payroute serve`` (or ``bentoml serve payroute.serving.service:PayrouteService``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from typing import Any

import anyio
import bentoml
import orjson
from _bentoml_sdk.io_models import IOMixin
from pydantic import BaseModel, create_model
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payroute.catalog import load_catalog
from payroute.contracts import Transaction
from payroute.serving.guard import GuardValidatedInput, RequestGuard, RouteRule
from payroute.serving.metrics import ServiceMetrics
from payroute.serving.predictor import ModelSource
from payroute.serving.schemas import (
    FeedbackAck,
    FeedbackRequest,
    RankBatchRequest,
    RankBatchResponse,
    RankRequest,
    RankResponse,
    error_body,
)
from payroute.serving.settings import ServiceSettings, max_concurrency, tracing_config
from payroute.serving.state import ScoringCore

logger = logging.getLogger("bentoml.payroute")

REQUEST_TIMEOUT_S = 10
API_ROUTES = ("/rank", "/rank_batch", "/feedback")
BATCH_FROM = 3
"""Coalesced /rank groups of at least this many go through ``ScoringCore.rank_many`` (the same decisions
as one by one). Pairs stay one at a time: since small batches draw row by row a pair costs less batched
in-process (405-419 µs per decision against 552-588 alone, one run), but served, batching pairs measured
× 0.99 and × 0.97 throughput at concurrency 4 and 8 (docs/serving.md)."""


class CompanyGate:
    """Whether a /rank leader yields one turn of the loop for company before ranking.

    The turn cost ≈ 3–5 % of a lone /rank's CPU (interleaved A/B at concurrency 1 and 4, spans on) and pays off
    only when it gathers a group of :data:`BATCH_FROM` or more (smaller groups are ranked one at a time
    anyway). After ``patience`` turns in a row that gathered no such group, leaders rank at once and only
    every ``probe_every``-th leader still yields, to notice when load returns; the first group of
    :data:`BATCH_FROM` or more (from a probe, or queued behind a batch or learning) restores the turn.
    Which requests are grouped never changes a decision (``Router.rank_many ≡ rank``)."""

    def __init__(self, useful: int = BATCH_FROM, patience: int = 8, probe_every: int = 8) -> None:
        self.useful, self.patience, self.probe_every = useful, patience, probe_every
        self._fruitless = 0  # yields in a row that gathered no useful group (at most patience)
        self._skipped = 0  # leaders that ranked at once since the last probe

    def should_wait(self) -> bool:
        if self._fruitless < self.patience:
            return True
        self._skipped += 1
        if self._skipped < self.probe_every:
            return False
        self._skipped = 0
        return True

    def observe(self, size: int, waited: bool) -> None:
        """A group of ``size`` was ranked, after a turn of the loop or not."""
        if size >= self.useful:
            self._fruitless = 0
        elif waited and self._fruitless < self.patience:
            self._fruitless += 1


def guarded_spec(model: type[BaseModel]) -> type[BaseModel]:
    """BentoML's input spec for ``model`` (same schema, same name), reusing the model the guard validated."""
    return create_model(f"{model.__name__}IODescriptor", __base__=(GuardValidatedInput, IOMixin, model))


def decision_body(decision: Any) -> dict[str, Any]:
    """The public JSON shape (:class:`RankResponse`) of a router or static decision, as plain data."""
    return {
        "decision_id": decision.decision_id,
        "ranking": [
            {
                "psp": item.psp,
                "p_approve": item.p_approve,
                "expected_cost": item.expected_cost,
                "score": item.score,
                "reasons": item.reasons,  # Reasons are {"code", "value"} dicts already (static ones too)
            }
            for item in decision.ranking
        ],
        "excluded": [{"psp": item.psp, "reason": item.reason} for item in decision.excluded],
        "model_version": decision.model_version,
        "propensity": decision.propensity,
        "degraded": bool(decision.degraded),
        "objective": getattr(decision, "objective", None),
    }


def json_response(body: dict[str, Any]) -> Response:
    """Plain JSON: building and re-validating the response models costs more than the encoding
    (``test_plain_decision_body_is_the_response_contract`` ties :func:`decision_body` to :class:`RankResponse`).
    orjson encodes a 256-decision batch ~6x faster than the standard library; NaN/inf never occur
    (the router answers None for an unknown model probability) and would be encoded as null."""
    return Response(orjson.dumps(body), media_type="application/json")


def batch_response(decisions: list[Any]) -> Response:
    """``{"decisions": [...]}`` for /rank_batch (for 256 decisions, half the cost of the response models)."""
    return json_response({"decisions": [decision_body(d) for d in decisions]})


_status_app = Starlette()


@bentoml.asgi_app(_status_app, path="/", name="payroute-status")
@bentoml.service(
    name="payroute",
    workers=1,
    traffic={"timeout": REQUEST_TIMEOUT_S, "max_concurrency": max_concurrency()},
    tracing=tracing_config(API_ROUTES),  # no spans on the API routes unless PAYROUTE_TRACE_REQUESTS
)
class PayrouteService:
    """Ranks PSPs for a transaction and learns from attempt outcomes."""

    def __init__(self) -> None:
        self.settings = ServiceSettings.from_env()
        self.catalog = load_catalog(self.settings.catalog_path)
        self.metrics = ServiceMetrics()
        self.core = ScoringCore(self.catalog, self.settings.state_dir, self.metrics, seed=self.settings.seed,
                                decision_retention_s=self.settings.decision_retention_s)
        self.source = ModelSource(self.settings.models_dir, self.settings.tracking_uri)
        # One thread owns the learning state (router, features): ranking and learning never interleave,
        # and the event loop stays free, so waiting requests count against max_concurrency (fast 429).
        self._state_limiter: anyio.CapacityLimiter | None = None
        self._rank_queue: list[tuple[Transaction, asyncio.Future]] = []  # /rank requests waiting for the state
        self._rank_leader = False  # a queued /rank is waiting for the state token to rank the queue
        self._company = CompanyGate()  # whether a leader yields a turn of the loop for others to join
        self._rank_helpers: set[asyncio.Future] = set()  # leaders standing in for a cancelled one
        self._tasks: list[asyncio.Task] = []
        self._reload_failed: str | None = None
        self.reload_model()  # before replay: the bandit's baselines come from the model
        self.replayed = self.core.restore()
        self.started_at = time.time()
        freeze_heap()
        logger.info(
            "payroute service ready: model %s, %d outcomes replayed, state in %s; OpenTelemetry spans on %s %s",
            self.core.predictor.version, self.replayed, self.settings.state_dir, ", ".join(API_ROUTES),
            "recorded" if not tracing_config(API_ROUTES) else "off (--trace-requests or PAYROUTE_TRACE_REQUESTS=1 for them)",
        )

    # ------------------------------------------------------------------ API

    @bentoml.api(route="/rank", input_spec=guarded_spec(RankRequest), output_spec=RankResponse)
    async def rank(self, transaction: Transaction) -> RankResponse:  # type: ignore[return]
        """Rank the eligible PSPs for one transaction (fail-open: degraded static order without a model)."""
        decision = await self._rank_coalesced(transaction)
        return json_response(decision_body(decision))  # type: ignore[return-value]

    @bentoml.api(route="/rank_batch", input_spec=guarded_spec(RankBatchRequest), output_spec=RankBatchResponse)
    async def rank_batch(self, transactions: list[Transaction]) -> RankBatchResponse:  # type: ignore[return]
        """Rank many transactions at once; decisions in request order."""
        decisions = await self._in_state(self.core.rank_many, transactions)
        return await anyio.to_thread.run_sync(batch_response, decisions)  # encoded off the state thread

    @bentoml.api(route="/feedback", input_spec=guarded_spec(FeedbackRequest), output_spec=FeedbackAck)
    async def feedback(self, **fields: Any) -> FeedbackAck:
        """Record one attempt outcome durably, then learn from it if this service issued its decision."""
        request = FeedbackRequest.model_construct(**fields)
        outcome = request.outcome()
        # Durable first (group commit: concurrent outcomes share one fsync), then learned on the state
        # thread in log order, as replay does; the answer comes after both.
        result, record = await anyio.to_thread.run_sync(self.core.record_outcome, outcome, request.decision_id)
        learned = result.status == "recorded" and await self._in_state(self.core.learn_committed, result.sequence)
        self.metrics.feedback.labels(result.status).inc()
        if result.status == "conflict":
            return JSONResponse(  # type: ignore[return-value]
                error_body(
                    "transaction_id,attempt",
                    "conflicting_outcome",
                    "a different outcome was already recorded for this transaction and attempt",
                ),
                status_code=409,
            )
        if result.status == "recorded":
            self.metrics.feedback_lag.observe(max(0.0, record.received_at - outcome.timestamp.timestamp()))
            if not record.decision_known:
                self.metrics.unknown_decision.inc()
        return FeedbackAck(
            status=result.status,
            transaction_id=outcome.transaction_id,
            attempt=outcome.attempt,
            decision_known=result.decision_known,
            learned=learned,
            sequence=result.sequence,
        )

    # ------------------------------------------------------------------ lifecycle, health, metrics

    @bentoml.on_startup
    async def _start_background(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.settings.model_poll_s, self._poll_model)),
            asyncio.create_task(self._every(self.settings.snapshot_s, self._snapshot)),
        ]
        _status_app.state.service = self

    @bentoml.on_shutdown
    async def _stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._snapshot()
        self.core.close()

    def __is_ready__(self) -> bool:
        return True

    def __metrics__(self, content: str) -> str:
        return self.metrics.merge(content)

    def status(self) -> dict[str, Any]:
        bundle = self.core.slot.bundle
        return {
            "model_version": None if bundle is None else bundle.version,
            "model_loaded": bundle is not None,
            "router": self.core.router is not None,
            "last_sequence": self.core.last_sequence,
            "replayed_at_start": self.replayed,
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    # ------------------------------------------------------------------ model reload and snapshots

    def reload_model(self) -> bool:
        """Load the champion if its fingerprint changed; keep the current model on any failure."""
        if not self.source.configured:
            self.metrics.model_loaded.set(0)
            return False
        fingerprint = self.source.fingerprint()
        if fingerprint is None or fingerprint == self.core.slot.fingerprint or fingerprint == self._reload_failed:
            return False
        try:
            bundle = self.source.load()
        except Exception as error:  # a corrupt or half-written champion: keep serving the old one
            if fingerprint != self._reload_failed:
                logger.warning("champion %s not loaded: %s", fingerprint, error)
            self._reload_failed = fingerprint
            self.metrics.reloads.labels("failed").inc()
            return False
        return self._install(bundle, fingerprint)

    def _install(self, bundle: Any, fingerprint: str) -> bool:
        self.core.slot.swap(bundle, fingerprint)  # one reference assignment: atomic for requests
        self._reload_failed = None
        self.metrics.reloads.labels("loaded").inc()
        self.metrics.model_loaded.set(1)
        logger.info("champion model %s loaded", bundle.version)
        freeze_heap()
        return True

    async def _poll_model(self) -> None:
        # Loading (file reads, hashing, LightGBM parsing) runs in a thread; the swap runs on the loop.
        fingerprint = await anyio.to_thread.run_sync(self.source.fingerprint)
        if fingerprint is None or fingerprint in (self.core.slot.fingerprint, self._reload_failed):
            return
        try:
            bundle = await anyio.to_thread.run_sync(self.source.load)
        except Exception as error:
            logger.warning("champion %s not loaded: %s", fingerprint, error)
            self._reload_failed = fingerprint
            self.metrics.reloads.labels("failed").inc()
            return
        self._install(bundle, fingerprint)

    async def _snapshot(self) -> None:
        try:
            # Copied on the state thread (learns what is queued first: covers a prefix of the log), written
            # and fsync'd off it, so ranking does not wait for the disk.
            capture = await self._in_state(self.core.capture_snapshot)
            await anyio.to_thread.run_sync(self.core.write_snapshot, capture)
        except Exception:
            logger.exception("state snapshot failed")
        # What survived since the last snapshot (mostly the decision caches) leaves the collector's reach
        # too, so a full collection never walks them (129 ms for 235k objects, measured); they hold no
        # cycles, so reference counting still frees them when evicted. No collection here: no pause.
        gc.freeze()

    def _limiter(self) -> anyio.CapacityLimiter:
        if self._state_limiter is None:
            self._state_limiter = anyio.CapacityLimiter(1)
        return self._state_limiter

    async def _in_state(self, function, *args):
        """Run state work on a worker thread, one at a time (batches, learning, snapshots)."""
        return await anyio.to_thread.run_sync(function, *args, limiter=self._limiter())

    async def _rank_coalesced(self, transaction: Transaction) -> Any:
        """One /rank, ranked together with every /rank that queued while the state was busy.

        Each request joins the queue. If no queued request is already waiting for the state, this one
        becomes the group's leader: it yields one turn of the loop (requests parsed meanwhile join; not
        when recent turns gathered no group worth batching, see :class:`CompanyGate`), then,
        if no batch, learning or snapshot holds the state token, takes the whole queue and ranks it at
        once (no token taken: nothing else runs on the loop until it is done; the token's acquire and
        release cost ≈ 5 % of a /rank's CPU), else waits for the token first. It ranks the queue (from
        :data:`BATCH_FROM` requests in one ``ScoringCore.rank_many`` call, the same decisions as one by
        one in arrival order: ``Router.rank_many ≡ rank``) and hands each waiter its decision. The others
        just wait for theirs: no token passing. Alone (or in two), requests are ranked one at a time
        (``ScoringCore.rank``): per decision 395 µs alone, 320 µs in threes, 200 µs in eights (in-process).
        A leader cancelled before it took the queue (its client gone) leaves the queue to a new one."""
        waiting: asyncio.Future = asyncio.get_running_loop().create_future()
        self._rank_queue.append((transaction, waiting))
        if not self._rank_leader:
            try:
                await self._lead_rank_group()
            except asyncio.CancelledError:
                waiting.cancel()  # its client is gone: not ranked, whoever takes the queue skips it
                raise
        return await waiting

    async def _lead_rank_group(self) -> None:
        """One turn of the loop, then the whole queue ranked (after the state token if state work holds it;
        see :meth:`_rank_coalesced`)."""
        self._rank_leader = True
        taken = False
        try:
            waited = self._company.should_wait()
            if waited:
                await asyncio.sleep(0)  # one turn of the loop: requests parsed meanwhile join the group
            limiter = self._limiter()
            if limiter.borrowed_tokens:  # a batch, learning or a snapshot holds the state: wait for the token
                async with limiter:
                    taken = True
                    self._rank_queued(waited)
            else:  # the state is free: rank now (nothing else runs on the loop before we are done)
                taken = True
                self._rank_queued(waited)
        finally:
            if not taken:  # cancelled while waiting for the state: someone must still rank the queue
                self._rank_leader = False
                if self._rank_queue:
                    helper = asyncio.ensure_future(self._lead_rank_group())
                    self._rank_helpers.add(helper)  # a reference until it is done
                    helper.add_done_callback(self._rank_helpers.discard)

    def _rank_queued(self, waited: bool) -> None:
        """Take the whole queue (the next request to queue leads a new group) and rank it."""
        group, self._rank_queue = self._rank_queue, []
        self._rank_leader = False
        self._company.observe(len(group), waited)
        self._rank_group(group)

    def _rank_group(self, group: list[tuple[Transaction, asyncio.Future]]) -> None:
        """Rank a taken queue and hand each waiter its decision (or the error, to every waiter). Requests
        cancelled while queued (their clients gone) are not ranked: no decision is issued for them."""
        group = [(queued, future) for queued, future in group if not future.done()]
        if not group:
            return
        transactions = [queued for queued, _ in group]
        try:
            if len(group) >= BATCH_FROM:
                decisions = self.core.rank_many(transactions)
            else:  # one or two: one at a time is cheaper than the batch path's fixed cost
                decisions = [self.core.rank(queued) for queued in transactions]
        except BaseException as error:  # e.g. the decision log cannot be written: every waiter hears it
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), decision in zip(group, decisions):
            future.set_result(decision)  # ranking is synchronous: no waiter was cancelled meanwhile
        self.metrics.rank_groups.observe(len(group))

    async def _every(self, seconds: float, job) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                logger.exception("background job %s failed", getattr(job, "__name__", job))


# Young-generation threshold of the cycle collector. A /rank_batch of 256 decisions allocates ~30k
# containers (rankings, reasons, dicts), nearly all freed by reference counting; at CPython's default
# (700) each batch ran ~40 young collections and a few older ones, which walked the decision memory:
# 2.3x the router's time per decision in-process (230 -> 100 us, docs/serving.md). Cycles still get
# collected, every 50k net allocations.
GC_THRESHOLDS = (50_000, 20, 20)


def freeze_heap() -> None:
    """Move everything alive after start-up or a reload (model, catalogue, replayed state) out of the
    collector's reach, so a full collection walks only what requests allocate (fewer, shorter pauses),
    and collect young objects in large generations (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _status(request: Request) -> JSONResponse:
    service = getattr(request.app.state, "service", None)
    if service is None:
        return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse(service.status())


_status_app.router.routes.append(Route("/status", _status, methods=["GET"]))



def guard_config() -> tuple[dict[str, RouteRule], tuple[str, ...]]:
    """Which routes need the API key (always /feedback; /rank on request) and the accepted keys."""
    settings = ServiceSettings.from_env()
    rank_key = settings.rank_requires_key
    rules = {
        "/rank": RouteRule(RankRequest, requires_key=rank_key),
        "/rank_batch": RouteRule(RankBatchRequest, requires_key=rank_key),
        "/feedback": RouteRule(FeedbackRequest, requires_key=True),
    }
    return rules, settings.api_keys


PayrouteService.add_asgi_middleware(RequestGuard, config=guard_config)
