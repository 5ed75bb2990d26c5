"""Sandbox settlement files: the ledger in the one settlement format, reconciled against what the
dispatcher journaled — clean on a clean run, and each planted disagreement found."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payroute.catalog import load_catalog
from payroute.reporting.reconcile import reconcile
from payroute.reporting.settlement import SETTLEMENT_COLUMNS, read_settlements
from payroute.sandbox.ledger import Ledger
from payroute.sandbox.settlement import ledger_history, settled_entries, write_ledger_settlements
from payroute.serving.dispatch.records import journal_history, resolved_finals
from payroute.serving.dispatch.scenario import Scenario, run_scenario

# Faults that leave money moved behind an unknown answer (timeouts, resets, 5xx after processing, late
# decisions settled only by a later inquiry), so the reconciliation has something to get right.
FAULTS = {"error_before": 0.01, "error_after": 0.01, "timeout": 0.01, "reset": 0.01, "late": 0.02, "slow": 0.02}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    scenario = Scenario(n_transactions=1500, days=1.0, seed=21, workers=16, use_service=False, fault_rates=FAULTS,
                        hang_s=0.4, psp_timeout_s=0.2)
    return run_scenario(scenario, tmp_path_factory.mktemp("settlement-run"))


def reconciled(ledger: Ledger, journal: list[dict], catalog, directory):
    files = write_ledger_settlements(ledger, catalog, directory)
    rows, errors, psps = read_settlements(directory)
    assert errors == [] and files
    return rows, reconcile(rows, journal_history(journal, catalog), catalog, settled_psps=psps)


def test_clean_sandbox_run_reconciles_without_discrepancy(run, catalog, tmp_path):
    assert run.double_charges == 0 and run.statuses.get("pending", 0) == 0
    assert run.pending_resolved, "the run should settle some late answers by a later inquiry"
    rows, result = reconciled(run.ledger, run.journal, catalog, tmp_path)
    assert result.clean, result.discrepancies.to_string()
    assert len(rows) == len(settled_entries(run.ledger)) == run.statuses["approved"]
    header = (tmp_path / f"{rows['psp'].iloc[0]}.csv").read_text().splitlines()[0]
    assert header == ",".join(SETTLEMENT_COLUMNS)  # the reporting format, not a second one


def test_an_approval_the_dispatcher_missed_is_an_unrecorded_settlement(run, catalog, tmp_path):
    """Without the inquiry-settled approvals the dispatcher's records miss money the PSPs took."""
    resolved = {t for t, f in resolved_finals(run.journal).items() if f["status"] == "approved"}
    assert resolved
    forgetful = [r for r in run.journal if not (r["type"] == "final" and r.get("stop") == "resolved_by_inquiry")]
    _, result = reconciled(run.ledger, forgetful, catalog, tmp_path)
    assert set(result.discrepancies["kind"]) == {"unrecorded_settlement"}
    assert set(result.discrepancies["transaction_id"]) == resolved


def test_a_second_charge_is_found(run, catalog, tmp_path):
    ledger = Ledger()
    for entry in run.ledger.entries:
        ledger.record(entry.psp, entry.idempotency_key, entry.transaction_id, entry.kind, entry.amount,
                      entry.currency, entry.psp_reference)
    charged = next(e for e in ledger.entries if e.kind == "charge")
    other = next(p for p in ("euroacq", "britpay", "walletgate") if p != charged.psp)
    ledger.record(other, f"{charged.transaction_id}:9", charged.transaction_id, "charge", charged.amount,
                  charged.currency, "extra")
    _, result = reconciled(ledger, run.journal, catalog, tmp_path)
    found = result.discrepancies[["kind", "psp", "transaction_id", "amount_at_stake"]].to_records(index=False).tolist()
    assert found == [("unrecorded_settlement", other, charged.transaction_id, Decimal(charged.amount).quantize(Decimal("0.0001")))]


def test_voided_charges_do_not_settle(catalog):
    ledger = Ledger()
    ledger.record("euroacq", "t1:1", "t1", "charge", Decimal("10"), "EUR", "r1")
    ledger.record("euroacq", "t1:1", "t1", "void", Decimal("10"), "EUR", "r1")
    ledger.record("britpay", "t1:2", "t1", "charge", Decimal("10"), "EUR", "r2")
    history = ledger_history(ledger, catalog)
    assert history.attempts[["psp", "status"]].values.tolist() == [["britpay", "approved"]]
