"""Sandbox PSP: idempotency, inquiry, void, faults and the ledger, over real loopback HTTP."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from payroute.sandbox.behaviour import PspAnswer, ScriptedBehaviour
from payroute.sandbox.faults import FaultPlan, OutageWindow
from payroute.sandbox.ledger import Ledger
from payroute.sandbox.server import SandboxPsp

T0 = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)


def body(txn_id: str = "t1", amount: str = "10.00", at: dt.datetime = T0) -> dict:
    return {"transaction": {"id": txn_id, "timestamp": at.isoformat()}, "attempt": 1, "amount": amount,
            "currency": "EUR"}


@pytest.fixture()
def psp():
    ledger = Ledger()
    server = SandboxPsp("acme", ScriptedBehaviour(by_transaction={("acme", "dec"): PspAnswer("declined", "05")}),
                        ledger).start()
    with httpx.Client(base_url=server.url, timeout=2) as client:
        yield server, client
    server.stop()


def post(client, key, payload, route="payments"):
    return client.post(f"/v1/{route}", json=payload, headers={"Idempotency-Key": key} if key else {})


def test_repeat_returns_first_answer_and_charges_once(psp):
    server, client = psp
    first = post(client, "k1", body())
    second = post(client, "k1", body())
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and first.json()["status"] == "approved"
    assert len(server.ledger.entries) == 1


@pytest.mark.parametrize(
    ("key", "payload", "status", "code"),
    [
        ("k2", body(amount="11.00"), 422, "idempotency_key_reused"),  # same key, other amount
        ("k2", body(txn_id="other"), 422, "idempotency_key_reused"),
        (None, body(), 400, "missing_idempotency_key"),
    ],
)
def test_refused_requests(psp, key, payload, status, code):
    server, client = psp
    post(client, "k2", body())
    answer = post(client, key, payload)
    assert answer.status_code == status and answer.json()["code"] == code
    assert "4111" not in answer.text and "11.00" not in answer.text  # errors never echo the request


def test_inquiry_and_void(psp):
    server, client = psp
    assert client.get("/v1/payments/nope").json()["status"] == "not_found"
    post(client, "k3", body())
    assert client.get("/v1/payments/k3").json()["status"] == "approved"
    assert client.post("/v1/payments/k3/void").json()["status"] == "voided"
    assert client.post("/v1/payments/k3/void").json()["status"] == "voided"  # idempotent
    assert server.ledger.net_count() == {"t1": 0}
    # A key cancelled before it arrives can never charge.
    assert client.post("/v1/payments/k4/void").json()["status"] == "cancelled"
    late = post(client, "k4", body("t4"))
    assert late.status_code == 409 and late.json()["processed"] is False
    assert "t4" not in server.ledger.charged()
    post(client, "k5", body("dec"))
    assert client.post("/v1/payments/k5/void").json()["status"] == "nothing_to_void"


def test_payout_recorded_as_money_out(psp):
    server, client = psp
    assert post(client, "p1", body("w1"), route="payouts").json()["status"] == "approved"
    assert [e.kind for e in server.ledger.entries] == ["payout"]


@pytest.mark.parametrize(
    ("fault", "charged", "answered"),
    [
        ("error_before", False, 503),
        ("error_after", True, 500),
        ("timeout", True, None),  # answered after the client's timeout
        ("reset", True, None),
        ("slow", True, 200),
    ],
)
def test_faults_charge_or_not(fault, charged, answered):
    ledger = Ledger()
    server = SandboxPsp("acme", ScriptedBehaviour(), ledger,
                        FaultPlan(rates={fault: 1.0}, hang_s=0.5, slow_s=0.05)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=0.3) as client:
            try:
                status = post(client, "k", body()).status_code
            except httpx.HTTPError:
                status = None
            assert status == answered
            assert ("t1" in ledger.charged()) is charged
            inquiry = client.get("/v1/payments/k").json()["status"]
            assert inquiry == ("approved" if charged else "not_found")
        assert server.counter.by_kind() == {fault: 1}
    finally:
        server.stop()


def test_late_answer_is_processing_until_decided():
    ledger = Ledger()
    server = SandboxPsp("acme", ScriptedBehaviour(), ledger, FaultPlan(rates={"late": 1.0}, hang_s=0.4)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=0.15) as client:
            with pytest.raises(httpx.ReadTimeout):
                post(client, "k", body())
            assert client.get("/v1/payments/k").json()["status"] == "processing"
            assert client.post("/v1/payments/k/void").status_code == 409  # cannot cancel mid-flight
            import time
            time.sleep(0.4)
            assert client.get("/v1/payments/k").json()["status"] == "approved"
    finally:
        server.stop()


def test_outage_window_in_simulated_time():
    window = OutageWindow("acme", T0, T0 + dt.timedelta(hours=1))
    server = SandboxPsp("acme", ScriptedBehaviour(), Ledger(), FaultPlan(outages=(window,))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=1) as client:
            inside = post(client, "a", body("a", at=T0 + dt.timedelta(minutes=5)))
            after = post(client, "b", body("b", at=T0 + dt.timedelta(hours=2)))
        assert inside.status_code == 503 and inside.json()["processed"] is False
        assert after.status_code == 200
    finally:
        server.stop()


def test_ledger_counts_double_charges():
    ledger = Ledger()
    for psp, key in (("a", "t:1"), ("b", "t:2"), ("a", "u:1")):
        ledger.record(psp, key, key.split(":")[0], "charge", 5, "EUR", "r")
    ledger.record("b", "t:2", "t", "void", 5, "EUR", "r")
    assert ledger.double_charges() == {}
    ledger.record("c", "t:3", "t", "charge", 5, "EUR", "r")
    assert ledger.double_charges() == {"t": 2}


def test_fault_plan_is_reproducible_and_validated():
    plan = FaultPlan(seed=3, rates={"timeout": 0.3, "slow": 0.2})
    draws = [plan.fault_for("x", f"k{i}", None) for i in range(2000)]
    assert draws == [plan.fault_for("x", f"k{i}", None) for i in range(2000)]
    assert abs(draws.count("timeout") / 2000 - 0.3) < 0.04  # binomial sd ~0.01, seed fixed
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultPlan(rates={"meteor": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultPlan(rates={"timeout": 0.7, "slow": 0.5})
