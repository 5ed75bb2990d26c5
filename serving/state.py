"""The service's learning state: router (bandit), online features and model slot, with its durable logs.

Ranking is fail-open: with no model, no router, or any error in the learned path, the answer is the
catalogue's static order, marked degraded. Learning happens only from outcomes whose decision id this
service issued for the same transaction. State is snapshotted (router JSON + feature store + the log
sequence it covers) and rebuilt at start-up from the newest snapshot plus the outcome log's tail, in
log order: the same path as live learning, so a crash between acknowledgement and snapshot loses nothing.
Each logged outcome carries the bandit baseline its decision recorded, so the replayed bandit state is
exactly the live one.

Learning order is log order: the outcome log hands each group commit's rows, in sequence order, to
:meth:`ScoringCore.queue_learning`; :meth:`ScoringCore.learn_committed` (on the state thread) learns
everything queued, in order, and each log row is learned at most once.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from payroute.catalog import Catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.serving.eventlog import AppendResult, DecisionLog, DecisionRecord, OutcomeLog, OutcomeRecord
from payroute.serving.metrics import ServiceMetrics
from payroute.serving.predictor import BundlePredictor, ModelSlot
from payroute.serving.routing.decision import build
from payroute.serving.static_order import static_decision

try:
    from payroute.features.online import write_snapshot as write_features_snapshot
except ImportError:  # no feature store: nothing of it to write
    write_features_snapshot = None

logger = logging.getLogger("bentoml.payroute")

SNAPSHOTS_DIR = "snapshots"
SNAPSHOTS_KEPT = 3
LEARN_RESULTS_KEPT = 10_000  # results of learned rows waiting for their /feedback call to read them


def new_decision_id() -> str:
    """Unique across restarts and workers (random, not a counter)."""
    return "dec_" + uuid.uuid4().hex


def public_decision_id(boot_id: str, router_decision_id: str, sequence: int | None = None) -> str:
    """Prefix the router's id (a seeded stream, which a restore rewinds) with this process's boot id and,
    when given, the decision's issue number in this process: ``<boot>.<sequence: 10 hex>.<router id>``.

    The sequence makes ids ascending within a process, so the decision log's primary-key index grows at
    its right edge instead of at random pages (a 256-decision insert: 6.0 -> 2.4 ms measured at 50k
    rows). The router's UUID goes in its 32-hex form: in the dashed form, all-digit groups joined by
    dashes (8-4-4 = 16 digits) can pass the PAN screen's Luhn check and have ``/feedback`` refuse our
    own id; the 10-character sequence is too short to look like a card number."""
    router_id = router_decision_id.replace("-", "")
    return f"{boot_id}.{router_id}" if sequence is None else f"{boot_id}.{sequence:010x}.{router_id}"


def router_decision_id(decision_id: str | None) -> str | None:
    """The router's own id inside a public decision id (None for ids the router did not issue)."""
    if not decision_id or "." not in decision_id:
        return None
    router_id = decision_id.rsplit(".", 1)[1]
    if len(router_id) == 32 and "-" not in router_id:
        try:
            return str(uuid.UUID(hex=router_id))
        except ValueError:
            return router_id
    return router_id  # ids issued before the 32-hex form


def _with_decision_id(decision: Any, decision_id: str) -> Any:
    """``dataclasses.replace(decision, decision_id=...)`` for the router's frozen ``Decision`` (no
    ``__post_init__``): a shallow copy of its fields, 1 µs instead of 5."""
    copy = object.__new__(type(decision))
    copy.__dict__.update(decision.__dict__)
    copy.__dict__["decision_id"] = decision_id
    return copy


def degraded_cause(decision: Any) -> str:
    """A short metric label for why a decision was degraded."""
    value = next((r.value for r in getattr(decision, "reasons", ()) if getattr(r, "code", None) == "degraded"), None)
    text = str(value or "unknown")
    return "no_model" if "NoModelError" in text else text.split(":", 1)[0]


def make_feature_store(catalog: Catalog) -> Any | None:
    try:
        from payroute.features import OnlineFeatureStore
    except ImportError as error:  # fail-open, but loudly: ranking degrades to the static order
        logger.error("online feature store unavailable (%s): ranking will be degraded", error)
        return None
    return OnlineFeatureStore(catalog)


def make_router(catalog: Catalog, predictor: Any, seed: int) -> Any | None:
    try:
        from payroute.serving.routing import Router
    except ImportError as error:
        logger.error("routing engine unavailable (%s): ranking will be degraded", error)
        return None
    return Router(catalog, predictor, seed=seed)


@dataclasses.dataclass(frozen=True)
class StateCapture:
    """Router and feature state as of one log sequence, copied: written off the state thread."""

    sequence: int
    router: dict[str, Any] | None
    features: dict[str, Any] | None


class ScoringCore:
    """Everything that ranks and learns; the BentoML class is a thin HTTP shell around it."""

    def __init__(self, catalog: Catalog, state_dir: Path, metrics: ServiceMetrics, *, seed: int = 0,
                 decision_retention_s: float | None = None) -> None:
        self.catalog = catalog
        self.state_dir = Path(state_dir)
        self.metrics = metrics
        self.seed = seed
        self.slot = ModelSlot()
        self.features = make_feature_store(catalog)
        self.predictor = BundlePredictor(self.slot, self.features)
        self.router = make_router(catalog, self.predictor, seed) if self.features is not None else None
        self.outcomes = OutcomeLog(self.state_dir / "outcomes.sqlite", on_commit=self.queue_learning)
        self.decisions = DecisionLog(self.state_dir / "decisions.sqlite", retention_s=decision_retention_s)
        self.last_sequence = 0
        self._to_learn: deque[tuple[int, OutcomeRecord]] = deque()
        self._to_learn_lock = threading.Lock()
        self._learned: OrderedDict[int, bool] = OrderedDict()
        self._snapshot_lock = threading.Lock()
        self.boot_id = "b" + uuid.uuid4().hex[:10]
        self._issue_numbers = itertools.count()  # ascending public ids within this process
        self._decision_counters: dict[str, Any] = {}  # payroute_decisions_total's child per first PSP

    # ------------------------------------------------------------------ ranking

    def rank(self, transaction: Transaction) -> Any:
        """A decision from the router (itself degraded without a usable model), or the static order if it fails."""
        decision = self._decide(transaction)
        self._issued([transaction], [decision])
        return decision

    def rank_many(self, transactions: Sequence[Transaction]) -> list[Any]:
        """Decisions in request order: one vectorised router call for the batch, one log transaction.
        If the batch path fails, each transaction is ranked alone (fail-open, one by one)."""
        decisions = None
        if self.router is not None and transactions:
            try:
                decisions = [self._routed(d) for d in self.router.rank_many(transactions)]
            except Exception:
                logger.exception("batch ranking failed; ranking one by one")
        if decisions is None:
            decisions = [self._decide(transaction) for transaction in transactions]
        self._issued(transactions, decisions)
        return decisions

    def _decide(self, transaction: Transaction) -> Any:
        if self.router is not None:
            try:
                return self._routed(self.router.rank(transaction))
            except Exception:  # fail-open: whatever broke, the payment still gets a ranking
                logger.exception("router failed; answering from the static order")
                cause = "router_error"
        else:
            cause = "no_router"
        self.metrics.degraded.labels(cause).inc()
        return static_decision(self.catalog, transaction, new_decision_id(), cause=cause)

    def _routed(self, decision: Any) -> Any:
        """The router's decision under its public id, counted if degraded."""
        if decision.degraded:
            self.metrics.degraded.labels(degraded_cause(decision)).inc()
        public = public_decision_id(self.boot_id, decision.decision_id, next(self._issue_numbers))
        return _with_decision_id(decision, public)

    def _issued(self, transactions: Sequence[Transaction], decisions: Sequence[Any]) -> None:
        """Count and log the decisions (one transaction, written before the answer)."""
        now = time.time()
        records = []
        firsts: dict[str, int] = {}
        for transaction, decision in zip(transactions, decisions):
            first_psp = decision.ranking[0].psp if decision.ranking else None
            key = first_psp or "none"
            firsts[key] = firsts.get(key, 0) + 1
            records.append(build(DecisionRecord, {  # every field, without the frozen __init__ (see build)
                "decision_id": decision.decision_id,
                "transaction_id": transaction.id,
                "transaction_json": transaction.model_dump_json(),
                "first_psp": first_psp,
                "propensity": decision.propensity,
                "model_version": decision.model_version,
                "degraded": bool(decision.degraded),
                "issued_at": now,
                "baselines": getattr(decision, "baselines", {}),
            }))
        self.decisions.record(records)
        counters = self._decision_counters
        for psp, count in firsts.items():
            counter = counters.get(psp)
            if counter is None:  # the labelled child once per PSP (labels() takes a lock and builds a key)
                counter = counters[psp] = self.metrics.decisions.labels(psp)
            counter.inc(count)

    # ------------------------------------------------------------------ learning

    def outcome_record(self, outcome: AttemptOutcome, decision_id: str | None) -> OutcomeRecord:
        """What the log stores for this outcome; ``decision_known`` only for our decision on this transaction."""
        decision = self.decisions.lookup(decision_id) if decision_id else None
        known = decision is not None and decision.transaction_id == outcome.transaction_id
        return OutcomeRecord(
            outcome=outcome,
            decision_id=decision_id,
            decision_known=known,
            transaction_json=decision.transaction_json if known else None,
            propensity=decision.propensity if known and decision.first_psp == outcome.psp else None,
            received_at=time.time(),
            baseline=decision.baselines.get(outcome.psp) if known else None,
        )

    def record_outcome(self, outcome: AttemptOutcome, decision_id: str | None) -> tuple[AppendResult, OutcomeRecord]:
        """Write one outcome durably (group commit); a recorded row is queued for learning before this returns."""
        record = self.outcome_record(outcome, decision_id)
        return self.outcomes.append(record), record

    def queue_learning(self, committed: list[tuple[int, OutcomeRecord]]) -> None:
        """The outcome log's commit hook: rows to learn from, in log order."""
        with self._to_learn_lock:
            self._to_learn.extend(committed)

    def learn_committed(self, sequence: int | None = None) -> bool:
        """Learn every queued row in log order (state thread); True if row ``sequence`` was learned from."""
        while True:
            with self._to_learn_lock:
                if not self._to_learn:
                    break
                queued_sequence, record = self._to_learn.popleft()
            self._learned[queued_sequence] = self.learn(queued_sequence, record)
            while len(self._learned) > LEARN_RESULTS_KEPT:
                self._learned.popitem(last=False)
        return bool(self._learned.pop(sequence, False)) if sequence is not None else False

    def learn(self, sequence: int, record: OutcomeRecord) -> bool:
        """Apply one logged outcome to features and bandit; True when it was learned from.
        A row at or before ``last_sequence`` was already learned (or is in the snapshot): never twice."""
        if sequence <= self.last_sequence:
            return False
        self.last_sequence = sequence
        if not record.decision_known or record.transaction_json is None:
            return False
        transaction = Transaction.model_validate_json(record.transaction_json)
        try:
            # Bandit first: without a logged baseline (rows from before baselines were logged, or a PSP the
            # decision did not rank) it is predicted from the features as they were before this outcome.
            if self.router is not None:
                self.router.observe(
                    record.outcome, transaction, decision_id=router_decision_id(record.decision_id),
                    baseline=record.baseline,
                )
            if self.features is not None:
                self.features.update(record.outcome, transaction)
        except Exception:
            logger.exception("learning from outcome %s failed", sequence)
            self.metrics.learn_errors.inc()
            return False
        return True

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> Path:
        """Write router + feature state as of ``last_sequence``; the directory appears complete or not at all."""
        return self.write_snapshot(self.capture_snapshot())

    def capture_snapshot(self) -> StateCapture:
        """The state as of ``last_sequence``, as copies (on the state thread: learns what is queued first)."""
        self.learn_committed()
        return StateCapture(
            sequence=self.last_sequence,
            router=self.router.snapshot() if self.router is not None else None,
            features=self.features.snapshot_arrays() if self.features is not None else None,
        )

    def write_snapshot(self, capture: StateCapture) -> Path:
        """Write a capture to ``snapshots/<sequence>/`` (complete or absent); needs no state, so it runs
        off the state thread while ranking goes on. One write at a time."""
        with self._snapshot_lock:
            root = self.state_dir / SNAPSHOTS_DIR
            final = root / f"{capture.sequence:012d}"
            if (final / "meta.json").exists():
                return final
            staging = root / f".staging-{capture.sequence:012d}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            if capture.router is not None:
                (staging / "router.json").write_text(json.dumps(capture.router))
            features_file = None
            if capture.features is not None:
                features_file = write_features_snapshot(staging / "features.npz", capture.features).name
            meta = {"sequence": capture.sequence, "created_at": time.time(), "features_file": features_file}
            (staging / "meta.json").write_text(json.dumps(meta))
            _fsync_tree(staging)
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            for old in sorted(p for p in root.iterdir() if p.name[0].isdigit())[:-SNAPSHOTS_KEPT]:
                shutil.rmtree(old, ignore_errors=True)
        self.metrics.snapshots.inc()
        return final

    def restore(self) -> int:
        """Load the newest complete snapshot, then replay the outcome log after it. Returns outcomes replayed."""
        snapshot = latest_snapshot(self.state_dir)
        if snapshot is not None:
            meta = json.loads((snapshot / "meta.json").read_text())
            if self.router is not None and (snapshot / "router.json").exists():
                self.router.load_state(json.loads((snapshot / "router.json").read_text()))
            if self.features is not None and meta.get("features_file"):
                self.features = type(self.features).restore(snapshot / meta["features_file"], self.catalog)
                self.predictor.feature_store = self.features
            self.last_sequence = int(meta["sequence"])
        replayed = 0
        for sequence, record in self.outcomes.since(self.last_sequence):
            replayed += self.learn(sequence, record)
        self.metrics.replayed.set(replayed)
        return replayed

    def close(self) -> None:
        self.decisions.close()
        self.outcomes.close()


def latest_snapshot(state_dir: Path) -> Path | None:
    root = Path(state_dir) / SNAPSHOTS_DIR
    if not root.exists():
        return None
    complete = sorted(p for p in root.iterdir() if p.name[0].isdigit() and (p / "meta.json").exists())
    return complete[-1] if complete else None


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())

