"""Scoring service, tier 2: the BentoML service in-process through its ASGI app (no network).

Contract of /rank and /rank_batch, typed 422s naming the field, PANs refused and never echoed or
logged, API keys, media types and size bounds, feedback idempotency, fail-open without or with a
corrupt model, and a champion reload under traffic with no failed request.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="prom-"))

import contextlib  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
from starlette.testclient import TestClient  # noqa: E402

from payroute.catalog import load_catalog  # noqa: E402
from payroute.contracts import Transaction  # noqa: E402
from payroute.serving.schemas import EXAMPLE_TRANSACTION, MAX_BATCH, MAX_BODY_BYTES  # noqa: E402
from payroute.serving.service import CompanyGate, PayrouteService  # noqa: E402
from payroute.serving.testing import write_demo_bundle  # noqa: E402

CATALOG = load_catalog()
TRANSACTION = Transaction.model_validate(EXAMPLE_TRANSACTION)
KEY = "test-key-asgi"
PAN = "4111111111111111"
ELIGIBLE = set(CATALOG.eligibility(TRANSACTION).eligible)


@contextlib.contextmanager
def service(tmp: Path, **env: str):
    """The service's ASGI app under ``env`` (the service reads its settings at start-up)."""
    values = {"PAYROUTE_STATE_DIR": str(tmp / "state"), "PAYROUTE_API_KEYS": KEY, "PAYROUTE_MODEL_POLL_S": "0.1",
              "PAYROUTE_SNAPSHOT_S": "3600", **env}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    _forget_bentoml_metrics()
    try:
        with TestClient(PayrouteService.to_asgi()) as client:
            yield client
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _forget_bentoml_metrics() -> None:
    """BentoML registers its HTTP metrics in the global registry once per app; a server builds one app per
    process, these tests build several, so the previous app's collectors are dropped first."""
    from prometheus_client import REGISTRY

    for collector, names in list(REGISTRY._collector_to_names.items()):
        if any(name.startswith("bentoml_") for name in names):
            REGISTRY.unregister(collector)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_demo_bundle(root / "champion", CATALOG, TRANSACTION, seed=1, version="demo-1")
    return root


@pytest.fixture(scope="module")
def client(models, tmp_path_factory):
    with service(tmp_path_factory.mktemp("svc"), PAYROUTE_MODELS_DIR=str(models)) as client:
        yield client


def rank(client, transaction=EXAMPLE_TRANSACTION, **headers):
    return client.post("/rank", json={"transaction": transaction}, headers=headers)


def feedback_body(decision: dict, status="approved", attempt=1, **extra) -> dict:
    body = {"transaction_id": EXAMPLE_TRANSACTION["id"], "attempt": attempt, "psp": decision["ranking"][0]["psp"],
            "timestamp": "2026-11-02T10:15:03Z", "status": status, "latency_ms": 420.0,
            "decision_id": decision["decision_id"], **extra}
    if status != "approved":
        body.setdefault("decline_reason", "do_not_honor")
    return body


# ------------------------------------------------------------------ ranking contract


def test_rank_answers_the_public_contract(client):
    response = rank(client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"decision_id", "ranking", "excluded", "model_version", "propensity", "degraded"}
    assert {r["psp"] for r in body["ranking"]} == ELIGIBLE
    assert {e["psp"] for e in body["excluded"]} == set(CATALOG.psp_names) - ELIGIBLE
    assert set(body["ranking"][0]) == {"psp", "p_approve", "expected_cost", "score", "reasons"}
    assert body["degraded"] is False and body["model_version"] == "demo-1"
    assert 0 < body["propensity"] <= 1


def test_rank_batch_answers_in_order_and_is_bounded(client):
    transactions = [{**EXAMPLE_TRANSACTION, "id": f"batch-{i}", "amount": str(10 + i)} for i in range(5)]
    response = client.post("/rank_batch", json={"transactions": transactions})
    assert response.status_code == 200
    decisions = response.json()["decisions"]
    assert len(decisions) == 5 and len({d["decision_id"] for d in decisions}) == 5
    too_many = client.post("/rank_batch", json={"transactions": [EXAMPLE_TRANSACTION] * (MAX_BATCH + 1)})
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "transactions"


# ------------------------------------------------------------------ validation, PAN, media types


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"amount": None}, "transaction.amount", "missing"),
        ({"amount": "ten"}, "transaction.amount", "decimal_parsing"),
        ({"amount": "-5"}, "transaction.amount", "greater_than"),
        ({"currency": "XXY"}, "transaction.currency", "currency"),
        ({"country": "ZZ"}, "transaction.country", "country"),
        ({"timestamp": "2026-11-02T10:15:00"}, "transaction.timestamp", "timezone"),
        ({"type": "refund"}, "transaction.type", "enum"),
        ({"card_bin": None}, "transaction.card_bin", "card_fields"),
        ({"surprise": 1}, "transaction.surprise", "extra_forbidden"),
    ],
)
def test_validation_errors_are_422_naming_the_field(client, change, field, code):
    transaction = {k: v for k, v in {**EXAMPLE_TRANSACTION, **change}.items() if v is not None}
    response = rank(client, transaction)
    assert response.status_code == 422
    assert {"field": field, "code": code} == {k: response.json()["errors"][0][k] for k in ("field", "code")}


def test_malformed_json_is_422(client):
    response = client.post("/rank", content=b'{"transaction": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["errors"][0]["code"] == "json_invalid"


@pytest.mark.parametrize(
    "transaction",
    [
        {**EXAMPLE_TRANSACTION, "card_bin": PAN},
        {**EXAMPLE_TRANSACTION, "merchant_id": f"m-{PAN}"},
        {**EXAMPLE_TRANSACTION, "customer_id": "4111-1111-1111-1111"},
        {**EXAMPLE_TRANSACTION, PAN: "x"},  # even as a field name
    ],
    ids=["card_bin", "merchant_id", "customer_id_grouped", "field_name"],
)
def test_a_pan_is_refused_and_never_echoed_or_logged(client, caplog, transaction):
    with caplog.at_level(logging.DEBUG):
        response = rank(client, transaction)
    assert response.status_code == 422
    digits = PAN.replace("-", "")
    assert digits not in response.text and "4111-1111" not in response.text
    assert digits not in caplog.text and "4111-1111" not in caplog.text


@pytest.mark.parametrize("route", ["/rank", "/rank_batch", "/feedback"])
@pytest.mark.parametrize(
    "content_type", ["application/vnd.bentoml+pickle", "multipart/form-data; boundary=x", "text/plain"]
)
def test_non_json_payloads_are_refused_415(client, route, content_type):
    response = client.post(route, content=b"\x80\x04\x95 pickled", headers={"content-type": content_type,
                                                                              "x-api-key": KEY})
    assert response.status_code == 415


def test_oversized_body_is_refused_413(client):
    response = client.post("/rank", content=b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


# ------------------------------------------------------------------ API keys


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"x-api-key": "nope"}, 403), ({"x-api-key": KEY}, 200)])
def test_feedback_requires_the_api_key(client, headers, status):
    decision = rank(client, {**EXAMPLE_TRANSACTION, "id": f"key-{status}"}).json()
    body = {**feedback_body(decision), "transaction_id": f"key-{status}"}
    assert client.post("/feedback", json=body, headers=headers).status_code == status


def test_rank_can_require_the_api_key(tmp_path):
    with service(tmp_path, PAYROUTE_RANK_REQUIRES_KEY="1") as client:
        assert rank(client).status_code == 401
        assert rank(client, **{"x-api-key": KEY}).status_code == 200


# ------------------------------------------------------------------ feedback semantics


def test_feedback_is_idempotent_conflicts_409_and_counts_once(client):
    transaction = {**EXAMPLE_TRANSACTION, "id": "idem-1"}
    decision = rank(client, transaction).json()
    body = {**feedback_body(decision), "transaction_id": "idem-1"}
    post = lambda b: client.post("/feedback", json=b, headers={"x-api-key": KEY})  # noqa: E731
    first, again = post(body), post(body)
    conflict = post({**body, "status": "declined", "decline_reason": "do_not_honor"})
    assert first.status_code == 200 and first.json()["status"] == "recorded" and first.json()["learned"] is True
    assert again.status_code == 200 and again.json()["status"] == "duplicate" and again.json()["learned"] is False
    assert again.json()["sequence"] == first.json()["sequence"]
    assert conflict.status_code == 409 and conflict.json()["errors"][0]["code"] == "conflicting_outcome"


@pytest.mark.parametrize(
    "decision_id", ["never-issued-by-us", None, "other-transaction"], ids=["forged", "absent", "mismatched"]
)
def test_outcomes_without_our_decision_are_stored_not_learned(client, decision_id):
    other = rank(client, {**EXAMPLE_TRANSACTION, "id": "someone-else"}).json()
    decision = rank(client, {**EXAMPLE_TRANSACTION, "id": f"stray-{decision_id}"}).json()
    body = {**feedback_body(decision), "transaction_id": f"stray-{decision_id}",
            "decision_id": other["decision_id"] if decision_id == "other-transaction" else decision_id}
    if body["decision_id"] is None:
        body.pop("decision_id")
    before = metric(client, "payroute_feedback_unknown_decision_total")
    ack = client.post("/feedback", json=body, headers={"x-api-key": KEY}).json()
    assert ack["status"] == "recorded" and ack["decision_known"] is False and ack["learned"] is False
    assert metric(client, "payroute_feedback_unknown_decision_total") == before + 1


def metric(client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_expose_decisions_degraded_feedback_and_lag(client):
    text = client.get("/metrics").text
    for name in ("payroute_decisions_total", "payroute_feedback_received_total", "payroute_feedback_lag_seconds",
                 "bentoml_service_request_total"):
        assert name in text
    assert text.count("# TYPE payroute_decisions_total") <= 1  # no duplicated families


# ------------------------------------------------------------------ fail-open and reload


def test_no_model_answers_degraded_static_order(tmp_path):
    with service(tmp_path, PAYROUTE_MODELS_DIR=str(tmp_path / "empty")) as client:
        response = rank(client)
        assert response.status_code == 200 and response.json()["degraded"] is True
        assert [r["psp"] for r in response.json()["ranking"]] == [p for p in CATALOG.static_order if p in ELIGIBLE]
        assert client.get("/readyz").status_code == 200


def test_corrupt_model_answers_degraded_and_keeps_serving(tmp_path):
    models = tmp_path / "models"
    write_demo_bundle(models / "champion", CATALOG, TRANSACTION, seed=2)
    (models / "champion" / "approval_model.txt").write_text("tree\ngarbage")
    with service(tmp_path, PAYROUTE_MODELS_DIR=str(models)) as client:
        response = rank(client)
        assert response.status_code == 200 and response.json()["degraded"] is True
        assert metric(client, 'payroute_model_reloads_total{result="failed"}') >= 1


def test_new_champion_is_loaded_under_traffic_without_a_failed_request(tmp_path):
    models = tmp_path / "models"
    write_demo_bundle(models / "champion", CATALOG, TRANSACTION, seed=1, version="v1")
    statuses, versions, stop = [], [], threading.Event()
    with service(tmp_path, PAYROUTE_MODELS_DIR=str(models)) as client:

        def traffic():
            while not stop.is_set():
                response = rank(client)
                statuses.append(response.status_code)
                versions.append(response.json().get("model_version") if response.status_code == 200 else None)

        worker = threading.Thread(target=traffic)
        worker.start()
        time.sleep(0.3)
        staging = write_demo_bundle(tmp_path / "staging", CATALOG, TRANSACTION, seed=5, version="v2")
        shutil.rmtree(models / "champion")  # as export_bundle does: replace the folder
        staging.rename(models / "champion")
        deadline = time.time() + 10
        while time.time() < deadline and (not versions or versions[-1] != "v2"):
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        worker.join()
    assert statuses and set(statuses) == {200}
    assert versions[0] == "v1" and versions[-1] == "v2"
    switch = versions.index("v2")
    assert set(versions[switch:]) == {"v2"}  # no flapping back once swapped


def test_api_reuses_the_model_the_guard_validated():
    """One parse per request: the input spec hands over the guard's model; without it, it parses the body."""
    import asyncio

    from starlette.requests import Request

    from payroute.serving.guard import VALIDATED_SCOPE_KEY
    from payroute.serving.schemas import RankRequest
    from payroute.serving.service import guarded_spec
    from _bentoml_impl.serde import JSONSerde

    spec = guarded_spec(RankRequest)
    body = RankRequest.model_validate({"transaction": EXAMPLE_TRANSACTION}).model_dump_json().encode()

    def request(scope_extra: dict) -> Request:
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        return Request({"type": "http", "method": "POST", "headers": [], **scope_extra}, receive)

    validated = RankRequest.model_validate({"transaction": EXAMPLE_TRANSACTION})
    assert asyncio.run(spec.from_http_request(request({VALIDATED_SCOPE_KEY: validated}), JSONSerde())) is validated
    parsed = asyncio.run(spec.from_http_request(request({}), JSONSerde()))
    assert parsed is not validated and parsed.transaction == validated.transaction


def _coalescer():
    """The service's /rank coalescing methods bound to a stand-in state: rankings are recorded, decisions
    are ``decision-<transaction>`` strings, and the test holds the state token itself."""
    import types

    import anyio

    inner = PayrouteService.inner
    calls = {"many": [], "alone": []}

    def rank_many(transactions):
        if any(t == "boom" for t in transactions):
            raise RuntimeError("decision log unavailable")
        calls["many"].append(list(transactions))
        return [f"decision-{t}" for t in transactions]

    def rank(transaction):
        if transaction == "boom":
            raise RuntimeError("decision log unavailable")
        calls["alone"].append(transaction)
        return f"decision-{transaction}"

    limiter = anyio.CapacityLimiter(1)
    fake = types.SimpleNamespace(
        core=types.SimpleNamespace(rank=rank, rank_many=rank_many),
        metrics=types.SimpleNamespace(rank_groups=types.SimpleNamespace(observe=lambda size: None)),
        _limiter=lambda: limiter, _rank_queue=[], _rank_leader=False, _rank_helpers=set(), _company=CompanyGate(),
    )
    for name in ("_rank_coalesced", "_lead_rank_group", "_rank_queued", "_rank_group"):
        setattr(fake, name, types.MethodType(getattr(inner, name), fake))
    return fake, limiter, calls


def test_ranks_queued_behind_the_state_wait_for_one_leader():
    """While the state is busy, the first queued /rank waits for the token and the others only for their
    decisions (one waiter on the token, not one per request); the leader ranks the whole queue at once."""
    import asyncio

    async def scenario():
        fake, limiter, calls = _coalescer()
        async with limiter:  # a batch or a snapshot holds the state
            tasks = [asyncio.create_task(fake._rank_coalesced(f"t{i}")) for i in range(5)]
            await asyncio.sleep(0.01)
            assert fake._rank_leader and len(fake._rank_queue) == 5
            assert limiter.statistics().tasks_waiting == 1
        answers = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert answers == [f"decision-t{i}" for i in range(5)]
        assert calls == {"many": [[f"t{i}" for i in range(5)]], "alone": []}
        assert not fake._rank_leader and not fake._rank_queue
        assert await fake._rank_coalesced("solo") == "decision-solo" and calls["alone"] == ["solo"]  # alone: no batch

    asyncio.run(scenario())


def test_with_the_state_free_a_group_is_ranked_after_one_turn_of_the_loop_without_the_token():
    """No batch, learning or snapshot running: the leader yields once (requests parsed meanwhile join) and
    ranks the group at once without taking the state token (nothing else runs on the loop meanwhile)."""
    import asyncio

    async def scenario():
        fake, limiter, calls = _coalescer()
        tokens_while_ranking = []
        rank_many = fake.core.rank_many

        def watched(transactions):
            tokens_while_ranking.append(limiter.borrowed_tokens)
            return rank_many(transactions)

        fake.core.rank_many = watched
        tasks = [asyncio.create_task(fake._rank_coalesced(f"t{i}")) for i in range(4)]  # parsed in one turn
        assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [f"decision-t{i}" for i in range(4)]
        assert calls["many"] == [["t0", "t1", "t2", "t3"]] and tokens_while_ranking == [0]
        assert not fake._rank_leader and not fake._rank_queue and limiter.borrowed_tokens == 0

    asyncio.run(scenario())


def test_company_gate_stops_waiting_after_fruitless_turns_and_probes():
    """Turns that gather no group of BATCH_FROM stop after ``patience``; then every ``probe_every``-th
    leader still waits, and one useful group (from a probe or behind the state) restores waiting."""
    gate = CompanyGate(useful=3, patience=2, probe_every=3)
    for _ in range(2):
        assert gate.should_wait()
        gate.observe(1, waited=True)
    pattern = []
    for _ in range(6):
        waited = gate.should_wait()
        pattern.append(waited)
        gate.observe(2 if waited else 1, waited)  # a pair is not worth a turn
    assert pattern == [False, False, True, False, False, True]
    gate.observe(5, waited=False)  # queued behind a batch: load is back
    assert [gate.should_wait() for _ in range(2)] == [True, True]
    gate.observe(4, waited=True)
    gate.observe(1, waited=True)
    assert gate.should_wait()  # one fruitless turn after a useful one: still within patience


def test_a_lone_leader_ranks_at_once_once_turns_stop_paying_and_a_probe_finds_company():
    """Once waiting has stopped gathering groups, a leader ranks without yielding (a request parsed in the
    same turn is ranked after it, alone); the next probe yields, gathers the rest and batching resumes."""
    import asyncio

    async def scenario():
        fake, limiter, calls = _coalescer()
        fake._company = CompanyGate(useful=3, patience=1, probe_every=2)
        assert await fake._rank_coalesced("t0") == "decision-t0"  # waited a turn, alone: fruitless
        tasks = [asyncio.create_task(fake._rank_coalesced(f"t{i}")) for i in range(1, 5)]  # parsed in one turn
        assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [f"decision-t{i}" for i in range(1, 5)]
        # t1 ranked at once; t2 probed (every 2nd leader), t3 and t4 joined it during its turn
        assert calls == {"many": [["t2", "t3", "t4"]], "alone": ["t0", "t1"]}
        assert fake._company.should_wait()  # a useful group: leaders wait again

    asyncio.run(scenario())


def test_a_cancelled_leader_leaves_the_queue_to_another_and_is_not_ranked():
    """A leader whose client goes away while it waits for the state is not ranked (no decision issued for
    it); the requests queued behind it still get theirs, from a stand-in leader."""
    import asyncio

    async def scenario():
        fake, limiter, calls = _coalescer()
        async with limiter:
            tasks = [asyncio.create_task(fake._rank_coalesced(f"t{i}")) for i in range(3)]
            await asyncio.sleep(0.01)
            tasks[0].cancel()
            await asyncio.sleep(0.01)
            assert fake._rank_leader  # the stand-in waits for the state
        assert await asyncio.wait_for(asyncio.gather(*tasks[1:]), 5) == ["decision-t1", "decision-t2"]
        assert tasks[0].cancelled()
        assert calls == {"many": [], "alone": ["t1", "t2"]}  # two left: one at a time, t0 never ranked
        await asyncio.sleep(0)
        assert not fake._rank_helpers

    asyncio.run(scenario())


def test_a_ranking_error_reaches_every_queued_request():
    import asyncio

    async def scenario():
        fake, limiter, _ = _coalescer()
        async with limiter:
            tasks = [asyncio.create_task(fake._rank_coalesced(t)) for t in ("t0", "boom", "t2")]
            await asyncio.sleep(0.01)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert await fake._rank_coalesced("after") == "decision-after"  # the next request is served

    asyncio.run(scenario())


def test_concurrent_ranks_waiting_for_the_state_are_ranked_together(models, tmp_path):
    """/rank requests that queue while the state is busy are ranked together (``rank_many`` from
    ``BATCH_FROM`` of them, one at a time below), each exactly once, each gets the decision for its own
    transaction, and the group size reaches the metrics."""
    from payroute.serving.service import BATCH_FROM, _status_app

    countries = [("DE", "EUR"), ("GB", "GBP"), ("PL", "PLN"), ("FR", "EUR"), ("ES", "EUR"), ("IT", "EUR")]
    bodies = [{**EXAMPLE_TRANSACTION, "id": f"co-{i}", "country": c, "issuer_country": c, "currency": cur}
              for i, (c, cur) in enumerate(countries)]
    with service(tmp_path, PAYROUTE_MODELS_DIR=str(models)) as client:
        core = _status_app.state.service.core
        calls, entered, plain = [], threading.Event(), core.rank_many

        def slow_first_batch(transactions):  # the /rank_batch below holds the state while /ranks queue
            calls.append([t.id for t in transactions])
            if len(calls) == 1:
                entered.set()
                time.sleep(0.5)
            return plain(transactions)

        core.rank_many = slow_first_batch
        alone, plain_rank = [], core.rank
        core.rank = lambda transaction: (alone.append(transaction.id), plain_rank(transaction))[1]
        answers: dict[str, dict] = {}
        batch = threading.Thread(target=lambda: client.post("/rank_batch", json={"transactions": [EXAMPLE_TRANSACTION]}))
        batch.start()
        assert entered.wait(10)
        workers = [threading.Thread(target=lambda b=b: answers.__setitem__(b["id"], rank(client, b).json())) for b in bodies]
        for worker in workers:
            worker.start()
        for worker in [batch, *workers]:
            worker.join(30)
        core.rank_many, core.rank = plain, plain_rank
        assert len(calls) >= 2 and sorted([*(i for c in calls[1:] for i in c), *alone]) == sorted(b["id"] for b in bodies)
        assert max(len(c) for c in calls[1:]) >= BATCH_FROM  # at least one group was ranked together
        for body in bodies:
            answer = answers[body["id"]]
            expected = CATALOG.eligibility(Transaction.model_validate(body))
            assert {r["psp"] for r in answer["ranking"]} == set(expected.eligible)
            assert {e["psp"]: e["reason"] for e in answer["excluded"]} == expected.excluded
        assert len({a["decision_id"] for a in answers.values()}) == len(bodies)
        metrics = client.get("/metrics").text
        assert "payroute_rank_group_size" in metrics
