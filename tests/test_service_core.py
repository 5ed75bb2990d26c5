"""Scoring service, tier 1: the pure parts and the state core, without HTTP.

Guard helpers, the outcome/decision logs (idempotency, append-only, durability order), the static
order, the predictor's fast encoding (parity with the bundle's own path), snapshot + replay, and the
export of the log to the history contract that ``payroute train`` reads.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import tempfile
import threading
import time

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="prom-"))

import dataclasses  # noqa: E402
import datetime as dt  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import pytest  # noqa: E402

from payroute.catalog import load_catalog  # noqa: E402
from payroute.contracts import AttemptOutcome, Transaction  # noqa: E402
from payroute.serving.eventlog import DecisionLog, DecisionRecord, OutcomeLog, OutcomeRecord  # noqa: E402
from payroute.serving.guard import api_key_error, json_media_type, redact_field  # noqa: E402
from payroute.serving.metrics import ServiceMetrics  # noqa: E402
from payroute.serving.predictor import ModelSource  # noqa: E402
from payroute.serving.schemas import EXAMPLE_TRANSACTION  # noqa: E402
from payroute.serving.state import ScoringCore, public_decision_id, router_decision_id  # noqa: E402
from payroute.serving.static_order import static_decision  # noqa: E402
from payroute.serving.testing import write_demo_bundle  # noqa: E402

CATALOG = load_catalog()
TRANSACTION = Transaction.model_validate(EXAMPLE_TRANSACTION)
PAN = "4111111111111111"


def outcome(status="approved", psp="euroacq", attempt=1, latency=250.0, txn=TRANSACTION.id, **extra) -> AttemptOutcome:
    fields = dict(transaction_id=txn, attempt=attempt, psp=psp, timestamp="2026-11-02T10:15:02Z",
                  status=status, latency_ms=latency, **extra)
    if status != "approved":
        fields.setdefault("decline_reason", "do_not_honor")
    return AttemptOutcome.model_validate(fields)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_demo_bundle(root / "champion", CATALOG, TRANSACTION, seed=3)
    return root


# ------------------------------------------------------------------ guard helpers


@pytest.mark.parametrize(
    ("presented", "keys", "status"),
    [(None, ("k",), 401), ("", ("k",), 401), ("wrong", ("k",), 403), ("k", ("k",), None),
     ("k2", ("k1", "k2"), None), ("k", (), 403)],
)
def test_api_key_check(presented, keys, status):
    failure = api_key_error(presented, keys)
    assert (failure[0] if failure else None) == status


@pytest.mark.parametrize(
    ("field", "expected"),
    [("transaction.amount", "transaction.amount"), (f"transaction.{PAN}", "transaction.<redacted>"),
     ("transactions.3.card_bin", "transactions.3.card_bin")],
)
def test_field_names_holding_a_pan_are_redacted(field, expected):
    assert redact_field(field) == expected


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [("application/json", True), ("application/json; charset=utf-8", True), ("application/vnd.bentoml+pickle", False),
     ("multipart/form-data; boundary=x", False), (None, False), ("text/plain", False)],
)
def test_only_json_is_accepted(content_type, accepted):
    assert json_media_type(content_type) is accepted


# ------------------------------------------------------------------ logs


def record(o: AttemptOutcome, decision_id="d1", known=True) -> OutcomeRecord:
    return OutcomeRecord(o, decision_id, known, TRANSACTION.model_dump_json() if known else None, 0.9, 1.0)


def test_outcome_log_is_idempotent_and_refuses_conflicts(tmp_path):
    log = OutcomeLog(tmp_path / "outcomes.sqlite")
    first = log.append(record(outcome()))
    cases = [
        (record(outcome()), "duplicate"),  # identical repeat
        (record(outcome(latency=250.000)), "duplicate"),  # same values, other spelling
        (record(outcome(status="declined")), "conflict"),  # a second terminal outcome for the attempt
        (record(outcome(), decision_id="d2"), "conflict"),  # same key, other decision
        (record(outcome(attempt=2)), "recorded"),
    ]
    results = [log.append(r) for r, _ in cases]
    assert first.status == "recorded"
    assert [r.status for r in results] == [expected for _, expected in cases]
    assert [seq for seq, _ in log.since(0)] == [1, 2]  # nothing counted twice
    assert results[0].sequence == first.sequence


def test_outcome_log_is_append_only_and_fully_synchronous(tmp_path):
    log = OutcomeLog(tmp_path / "outcomes.sqlite")
    log.append(record(outcome()))
    raw = sqlite3.connect(tmp_path / "outcomes.sqlite")
    for statement in ("UPDATE outcomes SET attempt = 9", "DELETE FROM outcomes"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(statement)
    assert log._connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert log._connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_decision_log_writes_before_returning_and_serves_from_disk_after_a_restart(tmp_path):
    row = DecisionRecord("d1", TRANSACTION.id, TRANSACTION.model_dump_json(), "euroacq", 0.8, "v1", False, 1.0,
                         {"euroacq": 0.81, "budgetpay": 0.7})
    log = DecisionLog(tmp_path / "decisions.sqlite")
    log.record([row])
    # Committed when record() returns (what survives kill -9): another connection already sees it.
    raw = sqlite3.connect(tmp_path / "decisions.sqlite")
    assert raw.execute("SELECT decision_id FROM decisions").fetchall() == [("d1",)]
    raw.close()
    log.close()
    reopened = DecisionLog(tmp_path / "decisions.sqlite")
    assert reopened.lookup("d1") == row and reopened.lookup("d1").baselines == row.baselines
    assert reopened.lookup("never-issued") is None
    reopened.close()



@pytest.mark.parametrize("count", [2, 256, 300])  # one multi-row statement up to 256; BEGIN/executemany/COMMIT above
def test_decision_log_writes_a_group_in_one_transaction_and_reads_every_row_back(tmp_path, count):
    rows = [DecisionRecord(f"d{i}", f"t{i}", TRANSACTION.model_dump_json(), "euroacq" if i % 2 else None,
                           None if i % 3 else 0.25, "v1", bool(i % 2), 1.0 + i, {"euroacq": i / 1000} if i % 2 else {})
            for i in range(count)]
    log = DecisionLog(tmp_path / "decisions.sqlite")
    log.record(rows)
    log.record(rows[:1])  # an issued id again: ignored, not an error
    log.close()
    reopened = DecisionLog(tmp_path / "decisions.sqlite")  # from disk, not from the cache
    assert reopened._connection.execute("SELECT count(*) FROM decisions").fetchone()[0] == count
    assert [reopened.lookup(row.decision_id) for row in rows] == rows
    reopened.close()

def test_decision_log_checkpoints_on_its_own_thread_not_in_a_writers_commit(tmp_path):
    """The writer's connection never checkpoints (SQLite's automatic checkpoint is off): committed pages
    reach the database file through the checkpoint thread, so no /rank waits for a checkpoint's copy and
    fsync; every decision stays readable, and closing checkpoints the rest."""
    path = tmp_path / "decisions.sqlite"
    log = DecisionLog(path, checkpoint_every_s=0.05)
    assert log._connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    before = path.stat().st_size
    rows = [DecisionRecord(f"d{i}", f"t{i}", TRANSACTION.model_dump_json(), "euroacq", 0.5, "v1", False, 1.0, {})
            for i in range(300)]
    for row in rows:
        log.record([row])
    deadline = time.time() + 10
    while path.stat().st_size <= before and time.time() < deadline:  # pages copied into the file by the thread
        time.sleep(0.02)
    assert path.stat().st_size > before
    assert log.checkpoint()[0] == 0  # nothing blocks a passive checkpoint while the writer is idle
    thread = log._checkpointer
    log.close()
    assert not thread.is_alive()  # close() stops the checkpoint thread
    reopened = DecisionLog(path, checkpoint_every_s=None)
    assert reopened._connection.execute("SELECT count(*) FROM decisions").fetchone()[0] == len(rows)
    assert reopened._connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # SQLite's own
    assert reopened.checkpoint()[0] == 0  # a manual checkpoint on the writer's connection, under its lock
    reopened.close()


def test_decision_log_wal_restarts_while_decisions_keep_coming(tmp_path):
    """A PASSIVE checkpoint never copies the frames written while it runs, and SQLite starts the WAL over
    only when a write finds every frame copied: with a steady writer that never happens, so the WAL grew
    without end (220 MB after 20 000 decisions). Past ``restart_frames`` the checkpoint thread copies the
    rest with the writer held, and the next write starts the WAL from its beginning."""
    path = tmp_path / "decisions.sqlite"
    log = DecisionLog(path, checkpoint_every_s=0.01, restart_frames=64)
    wal = tmp_path / "decisions.sqlite-wal"
    payload = TRANSACTION.model_dump_json()
    largest = 0
    written = 0
    deadline = time.time() + 1.0
    while time.time() < deadline:  # a steady writer, as /rank under traffic
        log.record([DecisionRecord(f"d{written}", f"t{written}", payload, "euroacq", 0.5, "v1", False, 1.0, {})])
        written += 1
        largest = max(largest, wal.stat().st_size)
        time.sleep(0.0002)
    assert written > 1000
    page = log._connection.execute("PRAGMA page_size").fetchone()[0]
    assert largest < written * page / 4  # a fraction of the pages written (two or more per decision): restarted
    log.close()
    reopened = DecisionLog(path, checkpoint_every_s=None)
    assert reopened._connection.execute("SELECT count(*) FROM decisions").fetchone()[0] == written
    reopened.close()


def _decision(name: str, issued_at: float) -> DecisionRecord:
    return DecisionRecord(name, f"t-{name}", TRANSACTION.model_dump_json(), "euroacq", 0.5, "v1", False, issued_at, {})


def test_decision_log_forgets_decisions_past_retention_oldest_first_in_chunks(tmp_path):
    """prune() deletes exactly the decisions issued before the cut, a chunk per transaction, and stops at
    the first chunk holding a recent one; lookup() forgets them too, from memory as from disk."""
    now = time.time()
    day = 86_400.0
    log = DecisionLog(tmp_path / "decisions.sqlite", checkpoint_every_s=None, retention_s=7 * day)
    old = [_decision(f"old{i}", now - 10 * day + i) for i in range(25)]
    recent = [_decision(f"new{i}", now - day + i) for i in range(5)]
    log.record(old)
    log.record(recent)
    assert log.lookup("old0") is None  # past retention: not answered from the cache either
    assert log.prune(now - 7 * day, chunk=4, max_chunks=2) == 8  # a pass of at most two chunks
    assert log.prune(now - 7 * day, chunk=4) == 17  # five more chunks, the last one stops at a recent row
    count = lambda connection: connection.execute("SELECT count(*) FROM decisions").fetchone()[0]  # noqa: E731
    assert count(log._connection) == 5
    assert log.prune(now - 7 * day, chunk=4) == 0
    assert [log.lookup(r.decision_id) for r in recent] == recent
    log.close()
    reopened = DecisionLog(tmp_path / "decisions.sqlite", checkpoint_every_s=None)  # no retention: from disk
    assert reopened.lookup("old3") is None and reopened.lookup("new4") == recent[4]
    assert reopened.prune(now, chunk=1000) == 5 and count(reopened._connection) == 0
    reopened.close()


def test_a_long_prune_lets_the_writer_in_between_its_chunks(tmp_path):
    """A backlog pruned chunk after chunk pauses between chunks: new decisions are written while it runs
    (a lock is not fair; without the pause the pruning thread could take it back every time)."""
    now = time.time()
    log = DecisionLog(tmp_path / "decisions.sqlite", checkpoint_every_s=None)
    log.record([_decision(f"old{i}", now - 7200 + i / 100) for i in range(20_000)])
    pruner = threading.Thread(target=log.prune, args=(now - 3600,), kwargs={"chunk": 100})
    pruner.start()
    time.sleep(0.02)
    for i in range(20):
        log.record([_decision(f"new{i}", now)])
    assert pruner.is_alive()  # twenty writes went through while at most a few of 200 chunks were done
    pruner.join()
    assert log._connection.execute("SELECT count(*) FROM decisions").fetchone()[0] == 20
    log.close()


def test_decision_log_prunes_on_its_checkpoint_thread(tmp_path):
    now = time.time()
    log = DecisionLog(tmp_path / "decisions.sqlite", checkpoint_every_s=0.01, retention_s=3600, prune_every_s=0.01)
    log.record([_decision(f"old{i}", now - 7200 + i) for i in range(50)] + [_decision("new", now)])
    deadline = time.time() + 10
    remaining = lambda: log._connection.execute("SELECT decision_id FROM decisions").fetchall()  # noqa: E731
    while len(remaining()) > 1 and time.time() < deadline:
        time.sleep(0.02)
    assert remaining() == [("new",)]
    log.close()


def test_an_outcome_for_a_forgotten_decision_is_stored_not_learned(tmp_path):
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics(), decision_retention_s=0.05)
    decision = core.rank(TRANSACTION)
    time.sleep(0.1)
    outcome = AttemptOutcome(transaction_id=TRANSACTION.id, attempt=1, psp=decision.ranking[0].psp, status="approved",
                             timestamp=TRANSACTION.timestamp, latency_ms=100.0)
    result, record = core.record_outcome(outcome, decision.decision_id)
    assert result.status == "recorded" and not record.decision_known and not result.decision_known
    core.close()


def test_decision_retention_setting_and_flag():
    from argparse import ArgumentParser

    from payroute.serving.cli import add_arguments, service_environment
    from payroute.serving.settings import ServiceSettings, retention_seconds

    assert retention_seconds(None) == retention_seconds("") == 30 * 86_400.0
    assert retention_seconds("7") == 7 * 86_400.0 and retention_seconds("0") is None
    assert ServiceSettings.from_env({"PAYROUTE_DECISION_RETENTION_DAYS": "2"}).decision_retention_s == 172_800.0
    assert ServiceSettings.from_env({}).decision_retention_s == 30 * 86_400.0
    parser = ArgumentParser()
    add_arguments(parser)
    env = service_environment(parser.parse_args(["--decision-retention-days", "0.5"]), {})
    assert ServiceSettings.from_env(env).decision_retention_s == 43_200.0
    assert "PAYROUTE_DECISION_RETENTION_DAYS" not in service_environment(parser.parse_args([]), {})


def test_api_routes_are_left_out_of_tracing_unless_asked():
    """The exclusion BentoML's OpenTelemetry middleware applies (its own matcher): the API routes exactly,
    not /status or a longer path; the setting and the flag turn spans back on."""
    from argparse import ArgumentParser

    from opentelemetry.util.http import ExcludeList

    from payroute.serving.cli import add_arguments, service_environment
    from payroute.serving.service import API_ROUTES
    from payroute.serving.settings import tracing_config

    excluded = ExcludeList(tracing_config(API_ROUTES, {})["excluded_urls"])
    for route in API_ROUTES:
        assert excluded.url_disabled(f"http://127.0.0.1:3000{route}")
    for path in ("/status", "/metrics", "/ranking", "/rank/x", "/feedbacks"):
        assert not excluded.url_disabled(f"http://127.0.0.1:3000{path}")
    assert tracing_config(API_ROUTES, {"PAYROUTE_TRACE_REQUESTS": "1"}) == {}
    parser = ArgumentParser()
    add_arguments(parser)
    assert service_environment(parser.parse_args(["--trace-requests"]), {})["PAYROUTE_TRACE_REQUESTS"] == "1"
    assert "PAYROUTE_TRACE_REQUESTS" not in service_environment(parser.parse_args([]), {})


def test_concurrent_appends_share_commits_and_keep_idempotency(tmp_path):
    """Group commit: 8 threads × 25 outcomes, fewer fsyncs than outcomes; every result as if alone."""
    committed: list[int] = []
    log = OutcomeLog(tmp_path / "outcomes.sqlite", on_commit=lambda rows: committed.extend(s for s, _ in rows))
    results: dict[tuple[int, int], str] = {}

    def worker(thread: int) -> None:
        for i in range(25):
            o = outcome(txn=f"t{thread}-{i}")
            results[(thread, i)] = log.append(record(o)).status
            if i % 5 == 0:  # an identical repeat and a conflicting one, while others commit
                assert log.append(record(o)).status == "duplicate"
                assert log.append(record(outcome(status="declined", txn=f"t{thread}-{i}"))).status == "conflict"

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = [seq for seq, _ in log.since(0)]
    assert set(results.values()) == {"recorded"} and len(rows) == 200
    assert committed == rows  # the commit hook saw every recorded row once, in log order
    assert log.commits < 200 + 2 * 40  # appends (incl. repeats) shared transactions
    log.close()


def test_a_log_written_before_baselines_opens_and_replays(tmp_path):
    path = tmp_path / "outcomes.sqlite"
    raw = sqlite3.connect(path)
    raw.executescript(
        "CREATE TABLE outcomes (sequence INTEGER PRIMARY KEY AUTOINCREMENT, transaction_id TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, decision_id TEXT, decision_known INTEGER NOT NULL, outcome_json TEXT NOT NULL,"
        " transaction_json TEXT, propensity REAL, received_at REAL NOT NULL, UNIQUE (transaction_id, attempt));"
    )
    raw.execute("INSERT INTO outcomes (transaction_id, attempt, decision_known, outcome_json, received_at)"
                " VALUES (?, 1, 0, ?, 1.0)", (TRANSACTION.id, outcome().model_dump_json()))
    raw.commit()
    raw.close()
    log = OutcomeLog(path)
    log.append(record(outcome(attempt=2)))
    assert [(seq, r.baseline) for seq, r in log.since(0)] == [(1, None), (2, None)]
    log.close()


# ------------------------------------------------------------------ ranking


def test_static_order_ranks_eligible_psps_by_priority():
    decision = static_decision(CATALOG, TRANSACTION, "d1", cause="no_model")
    eligible = set(CATALOG.eligibility(TRANSACTION).eligible)
    assert [r.psp for r in decision.ranking] == [p for p in CATALOG.static_order if p in eligible]
    assert {e.psp for e in decision.excluded} == set(CATALOG.psp_names) - eligible
    assert decision.degraded and decision.propensity == 1.0


def test_fast_encoding_matches_the_bundles_own_prediction(bundle_dir):
    """The predictor skips pandas; it must give exactly the bundle's ``predict_approval(features)``."""
    core = ScoringCore(CATALOG, Path(tempfile.mkdtemp()), ServiceMetrics())
    bundle = ModelSource(bundle_dir).load()
    core.slot.swap(bundle, "x")
    rng = np.random.default_rng(0)
    for i in range(20):  # some history so that rate features vary
        core.features.update(outcome(status=rng.choice(["approved", "declined"]), psp=str(rng.choice(CATALOG.psp_names)),
                                     txn=f"t{i}"), TRANSACTION)
    later = TRANSACTION.model_copy(update={"timestamp": TRANSACTION.timestamp + dt.timedelta(hours=2)})
    psps = list(CATALOG.psp_names)
    fast = core.predictor.predict(later, psps)
    slow = bundle.predict_approval(core.features.features(later, psps))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    core.close()


def test_encoder_in_the_stores_column_order_equals_the_column_gather(bundle_dir):
    """When the bundle lists its features in the store's order the encoder copies the matrix instead of
    gathering columns: the same input matrix, and the store's matrix is left as it was."""
    from payroute.serving.predictor import ColumnEncoder

    core = ScoringCore(CATALOG, Path(tempfile.mkdtemp()), ServiceMetrics())
    bundle = ModelSource(bundle_dir).load()
    store = core.features
    matrix, names = store.features_array(TRANSACTION, list(CATALOG.psp_names))
    encoder = ColumnEncoder(names, store.spec.categories(CATALOG.psp_names), bundle)
    assert encoder._same_order
    original = matrix.copy()
    copied = encoder.encode(matrix)
    encoder._same_order = False
    gathered = encoder.encode(matrix)
    assert copied.tobytes() == gathered.tobytes() and matrix.tobytes() == original.tobytes()
    core.close()


def test_native_scorer_is_booster_predict_bit_for_bit(bundle_dir):
    """Both direct C paths (the matrix call, and row by row through a FastConfig for small matrices)
    give exactly ``Booster.predict(matrix, num_threads=1)``, missing values and out-of-range codes
    included, for one row, the small-path limit and a batch; a wrong width is refused."""
    from payroute.serving.predictor import SMALL_ROWS, NativeScorer

    booster = ModelSource(bundle_dir).load().approval_booster
    scorer = NativeScorer(booster)
    assert scorer._call is not None and scorer._call_small is not None  # the fast paths are the ones under test
    rng = np.random.default_rng(3)
    for rows in (1, 4, SMALL_ROWS, SMALL_ROWS + 1, 700):
        matrix = rng.normal(0, 3, (rows, booster.num_feature()))
        matrix[rng.random(matrix.shape) < 0.2] = np.nan
        expected = booster.predict(matrix, num_threads=1)
        assert np.array_equal(scorer(matrix), expected)
        assert np.array_equal(scorer(np.asfortranarray(matrix)), expected)  # any memory layout
        assert np.array_equal(scorer._call(matrix), expected) and np.array_equal(scorer._call_small(matrix), expected)
    for call in (scorer._call, scorer._call_small):
        with pytest.raises(ValueError):
            call(np.zeros((2, booster.num_feature() + 1)))
    del scorer  # frees its FastConfig; the booster stays usable
    gc.collect()
    assert np.array_equal(NativeScorer(booster)(matrix[:3]), booster.predict(matrix[:3], num_threads=1))


def test_ranking_fails_open_when_the_model_breaks(bundle_dir):
    core = ScoringCore(CATALOG, Path(tempfile.mkdtemp()), ServiceMetrics())
    assert core.rank(TRANSACTION).degraded  # no model yet
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    assert not core.rank(TRANSACTION).degraded
    core.features = core.predictor.feature_store = None  # the learned path breaks mid-flight
    decision = core.rank(TRANSACTION)
    assert decision.degraded and decision.ranking
    core.close()


def test_batch_ranking_equals_one_by_one_and_logs_every_decision(bundle_dir, tmp_path):
    """ScoringCore.rank_many (one model call for the batch) = rank per transaction with the same seed."""
    cores = [ScoringCore(CATALOG, tmp_path / name, ServiceMetrics(), seed=7) for name in ("batch", "single")]
    for core in cores:
        core.slot.swap(ModelSource(bundle_dir).load(), "x")
    transactions = [TRANSACTION.model_copy(update={"id": f"batch-{i}", "timestamp": TRANSACTION.timestamp
                                                   + dt.timedelta(minutes=i)}) for i in range(12)]
    batched = cores[0].rank_many(transactions)
    single = [cores[1].rank(t) for t in transactions]
    strip = lambda d: {**d.to_json(), "decision_id": router_decision_id(d.decision_id)}  # noqa: E731 (boot ids differ)
    assert [strip(d) for d in batched] == [strip(d) for d in single]
    assert not any(d.degraded for d in batched)
    for decision, transaction in zip(batched, transactions):
        logged = cores[0].decisions.lookup(decision.decision_id)
        assert logged.transaction_id == transaction.id and logged.baselines == decision.baselines
        # built without the frozen __init__: every declared field, equal to the constructor's record
        assert set(logged.__dict__) == {f.name for f in dataclasses.fields(DecisionRecord)}
        assert DecisionRecord(**logged.__dict__) == logged
    for core in cores:
        core.close()


def test_plain_decision_body_is_the_response_contract(bundle_dir, tmp_path):
    """/rank_batch encodes decisions without the response models: the body must be what they would give."""
    from payroute.serving.schemas import RankResponse
    from payroute.serving.service import decision_body, json_response

    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    static = core.rank(TRANSACTION)  # no model: degraded router answer
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    routed = core.rank(TRANSACTION)
    for decision in (static, routed, static_decision(CATALOG, TRANSACTION, "d1", cause="router_error")):
        body = decision_body(decision)
        sent = orjson.loads(json_response(body).body)  # what goes on the wire (reasons are Reason dicts in a tuple)
        assert RankResponse.model_validate(body).model_dump(mode="json") == sent
    assert len(decision_body(routed)["ranking"][0]["reasons"]) > 5
    core.close()


def test_batch_ranking_fails_open_per_transaction(bundle_dir, tmp_path):
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    assert all(d.degraded and d.ranking for d in core.rank_many([TRANSACTION, TRANSACTION]))  # no model yet
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    core.router = None  # no routing engine at all: the static order, still one answer per transaction
    decisions = core.rank_many([TRANSACTION.model_copy(update={"id": f"s-{i}"}) for i in range(3)])
    assert [d.degraded for d in decisions] == [True] * 3 and len({d.decision_id for d in decisions}) == 3
    core.close()


# ------------------------------------------------------------------ snapshot, replay, export


def learn_some(core: ScoringCore, n: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + n):
        txn = TRANSACTION.model_copy(update={"id": f"tx-{i}"})
        decision = core.rank(txn)
        status = ("approved", "declined", "error")[i % 3]
        o = outcome(status=status, psp=decision.ranking[0].psp, txn=txn.id,
                    **({"decline_reason": "issuer_unavailable"} if status == "declined" else {}))
        result, _ = core.record_outcome(o, decision.decision_id)
        assert core.learn_committed(result.sequence)
        ids.append(decision.decision_id)
    return ids


def test_restart_rebuilds_state_from_snapshot_plus_log_tail(bundle_dir, tmp_path):
    """Snapshot + log tail give exactly the live bandit (counts, residuals, clocks) and health."""
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    learn_some(core, 6)
    core.snapshot()
    learn_some(core, 10, start=6)  # after the snapshot: only in the log
    expected = core.router.snapshot()
    core.close()

    restarted = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    restarted.slot.swap(ModelSource(bundle_dir).load(), "x")
    replayed = restarted.restore()
    assert replayed == 10 and restarted.last_sequence == 16
    rebuilt = restarted.router.snapshot()
    assert rebuilt["posterior"] and rebuilt["posterior"] == expected["posterior"]  # exact, not approximately
    assert rebuilt["health"] == expected["health"]
    restarted.close()


def test_replay_uses_the_logged_baseline_not_a_new_prediction(bundle_dir, tmp_path):
    """A different model at restart must not change the replayed residuals: they use the decision's baselines."""
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    learn_some(core, 8)
    expected = core.router.snapshot()["posterior"]
    assert all(r.baseline is not None for _, r in core.outcomes.since(0))
    core.close()

    other = tmp_path / "other-model"
    write_demo_bundle(other / "champion", CATALOG, TRANSACTION, seed=11)
    restarted = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    restarted.slot.swap(ModelSource(other).load(), "y")
    assert restarted.restore() == 8
    assert restarted.router.snapshot()["posterior"] == expected
    restarted.close()


def test_each_log_row_is_learned_once(bundle_dir, tmp_path):
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    learn_some(core, 3)
    before = core.router.snapshot()["posterior"]
    for sequence, row in core.outcomes.since(0):
        assert not core.learn(sequence, row)  # already learned: a second pass changes nothing
    assert core.router.snapshot()["posterior"] == before
    core.close()


def test_router_ids_are_prefixed_per_boot():
    core = ScoringCore(CATALOG, Path(tempfile.mkdtemp()), ServiceMetrics())
    decision = core.rank(TRANSACTION)
    assert decision.decision_id.startswith(core.boot_id + ".")
    assert router_decision_id(decision.decision_id) in core.router._decisions  # maps back to the router's id
    assert router_decision_id("dec_static") is None
    core.close()


def test_public_decision_ids_never_look_like_a_card_number():
    """A router UUID whose all-digit groups 8-4-4 form a Luhn-valid 16-digit run: neither the dashed form
    (not a printed card grouping) nor the public 32-hex form is refused, and the public id maps back."""
    from payroute.pan import contains_pan, luhn_valid

    stem = "512345678901412"
    digits = stem + next(d for d in "0123456789" if luhn_valid(stem + d))
    router_id = f"{digits[:8]}-{digits[8:12]}-{digits[12:]}-8abc-def012345678"
    assert not contains_pan(router_id)
    public = public_decision_id("b0123456789", router_id)
    assert not contains_pan(public) and router_decision_id(public) == router_id
    assert router_decision_id("b0123456789." + router_id) == router_id  # ids logged in the dashed form
    numbered = [public_decision_id("b0123456789", router_id, n) for n in (0, 9, 10, 4095, 10**9)]
    assert numbered == sorted(numbered)  # ascending within a process: the log's index grows at its end
    assert all(not contains_pan(i) and router_decision_id(i) == router_id for i in numbered)


def test_log_exports_to_the_history_contract_that_training_reads(bundle_dir, tmp_path):
    from payroute.history import read_history
    from payroute.serving.export import export_history

    core = ScoringCore(CATALOG, tmp_path / "state", ServiceMetrics())
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    learn_some(core, 12)
    stray = outcome(txn="forged-1")
    core.outcomes.append(core.outcome_record(stray, "not-a-decision"))  # stored, never exported
    core.close()
    history = read_history(export_history(tmp_path / "state", tmp_path / "history", CATALOG))
    assert len(history.transactions) == 12 and len(history.attempts) == 12
    assert "forged-1" not in set(history.attempts["transaction_id"])
    assert history.attempts["propensity"].notna().all()

    from payroute.features import DEFAULT_SPEC
    from payroute.training.workflow import training_table

    table = training_table(history, CATALOG, DEFAULT_SPEC)  # what `payroute train --history` builds first
    assert len(table) == 12


def test_a_capture_written_after_more_learning_is_the_state_it_captured(bundle_dir, tmp_path):
    """The snapshot is copied on the state thread and written later, off it: outcomes learned in between
    must not leak into it (they are in the log tail), or replay would count them twice."""
    core = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    core.slot.swap(ModelSource(bundle_dir).load(), "x")
    learn_some(core, 6)
    capture = core.capture_snapshot()
    captured_router = core.router.snapshot()
    learn_some(core, 10, start=6)  # the live state moves on while the capture waits to be written
    assert core.router.snapshot()["posterior"] != captured_router["posterior"]
    written = core.write_snapshot(capture)
    expected = core.router.snapshot()
    psps = list(CATALOG.psp_names)
    later = TRANSACTION.model_copy(update={"timestamp": TRANSACTION.timestamp + dt.timedelta(days=1)})
    expected_features = core.features.features_array(later, psps)[0]
    core.close()

    assert written.name == f"{6:012d}"
    restarted = ScoringCore(CATALOG, tmp_path, ServiceMetrics())
    restarted.slot.swap(ModelSource(bundle_dir).load(), "x")
    assert restarted.restore() == 10  # the 10 later outcomes come from the log, once
    assert restarted.router.snapshot()["posterior"] == expected["posterior"]
    np.testing.assert_array_equal(restarted.features.features_array(later, psps)[0], expected_features)
    restarted.close()


def test_public_id_copy_equals_dataclasses_replace():
    """``_with_decision_id`` is ``dataclasses.replace(decision, decision_id=...)``: equal, same type, the
    router's decision left untouched."""
    import dataclasses

    from payroute.serving.routing import Router, TablePredictor
    from payroute.serving.state import _with_decision_id

    router = Router(CATALOG, TablePredictor({p.name: 0.8 for p in CATALOG.psps}), seed=3)
    decision = router.rank(TRANSACTION)
    copy = _with_decision_id(decision, "b1.0000000001.x")
    assert type(copy) is type(decision)
    assert copy == dataclasses.replace(decision, decision_id="b1.0000000001.x")
    assert decision.decision_id != "b1.0000000001.x"


def test_a_champion_trained_under_another_feature_spec_is_refused_not_served_degraded(bundle_dir, tmp_path):
    """A bundle whose model reads a feature the serving spec no longer computes (here the last history
    feature renamed, as a half-life change renames it) is refused at load with a message naming the feature
    and what to do — so the service keeps its current champion and `payroute serve` trains a new one —
    instead of loading and answering every request degraded."""
    import dataclasses

    from payroute.model_bundle import BundleError, ModelBundle, write_bundle
    from payroute.serving.cli import unservable_reason

    good = ModelBundle.load(bundle_dir / "champion")
    names = list(good.feature_names)
    names[-1] = names[-1] + "_old"
    write_bundle(
        tmp_path / "old" / "champion", layout=dataclasses.replace(good.layout, feature_names=tuple(names), spec_version="old"),
        approval_model_text=good.approval_booster.model_to_string(), calibrator=good.calibrator, cost_model_texts={},
        metrics={"demo": 1.0}, version="old-1",
    )
    with pytest.raises(BundleError, match=f"{names[-1]}.*retrain"):
        ModelSource(models_dir=tmp_path / "old").load()
    assert "retrain" in unservable_reason(tmp_path / "old")
    assert unservable_reason(bundle_dir) is None
    assert ModelSource(models_dir=bundle_dir).load().version == good.version
