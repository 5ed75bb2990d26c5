"""Reconciliation: every injected discrepancy found with its amount, none on a clean settlement, bad lines named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from payroute.catalog import load_catalog
from payroute.cli import main
from payroute.history import read_history
from payroute.reporting.example import example_history, write_example_history
from payroute.reporting.reconcile import DISCREPANCY_KINDS, Tolerance, reconcile
from payroute.reporting.settlement import (
    SETTLEMENT_COLUMNS, DiscrepancyConfig, read_settlement_file, read_settlements, write_settlements,
)

EVERY_KIND = DiscrepancyConfig(
    unrecorded_settlement=3, unsettled_approval=3, duplicate=3, fee_above_contract=3, fx_above_contract=3,
    unknown_chargeback=3,
)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def history(catalog):
    return example_history(copies=10, catalog=catalog)


def _found(result) -> set[tuple[str, str, str, Decimal]]:
    lines = result.discrepancies
    return set(zip(lines["kind"], lines["psp"], lines["transaction_id"], lines["amount_at_stake"]))


def test_clean_settlement_has_no_discrepancy(history, catalog, tmp_path):
    manifest = write_settlements(history, catalog, tmp_path, seed=1)
    rows, errors, files = read_settlements(tmp_path)
    result = reconcile(rows, history, catalog, settled_psps=files)
    assert manifest == [] and errors == []
    assert result.clean, result.discrepancies.to_string()
    assert len(rows) == 4 * 10 + 2 * 10  # one line per approved attempt and per chargeback


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_injected_discrepancy_is_found_with_its_amount(history, catalog, tmp_path, seed):
    manifest = write_settlements(history, catalog, tmp_path, discrepancies=EVERY_KIND, seed=seed)
    rows, errors, files = read_settlements(tmp_path)
    result = reconcile(rows, history, catalog, settled_psps=files)
    injected = {(d.kind, d.psp, d.transaction_id, d.amount_at_stake) for d in manifest}
    assert len(injected) == 18
    assert _found(result) == injected  # every one found, nothing else reported


def test_amounts_at_stake_by_kind(history, catalog, tmp_path):
    config = DiscrepancyConfig(fee_above_contract=1, overcharge_bps=Decimal(100), min_overcharge_eur=Decimal("0.10"))
    manifest = write_settlements(history, catalog, tmp_path, discrepancies=config, seed=4)
    rows, _, files = read_settlements(tmp_path)
    line = reconcile(rows, history, catalog, settled_psps=files).discrepancies.iloc[0]
    amount = {"T1": 100, "T2": 200, "T5": 300, "T6": 1000}[manifest[0].transaction_id.split("-")[0]]
    # 100 bps of the amount, at least 0.10 EUR (all payments in EUR)
    assert line["amount_at_stake"] == max(Decimal(amount) / 100, Decimal("0.10"))
    assert isinstance(line["amount_at_stake"], Decimal) and line["currency"] == "EUR"


def test_summary_sums_in_decimal(history, catalog, tmp_path):
    write_settlements(history, catalog, tmp_path, discrepancies=EVERY_KIND, seed=5)
    rows, _, files = read_settlements(tmp_path)
    result = reconcile(rows, history, catalog, settled_psps=files)
    total = result.summary.set_index(["psp", "kind"]).loc[("all", "all")]
    assert total["lines"] == 18
    assert total["amount_at_stake_eur"] == sum(result.discrepancies["amount_at_stake_eur"], Decimal(0))
    assert isinstance(total["amount_at_stake_eur"], Decimal)
    kinds = set(result.summary.loc[result.summary["psp"] == "all", "kind"])
    assert kinds == set(DISCREPANCY_KINDS) - {"amount_mismatch"} | {"all"}


TOLERANCES = [
    # fee excess over the contract's 1.55 EUR, tolerance, flagged
    (Decimal("0.0100"), Tolerance(), False),                                  # at the tolerance: not above it
    (Decimal("0.0101"), Tolerance(), True),
    (Decimal("0.0500"), Tolerance(absolute_eur=Decimal("0.05")), False),
    (Decimal("0.0700"), Tolerance(relative=Decimal("0.05")), False),           # 5 % of 1.55 = 0.0775
    (Decimal("0.0800"), Tolerance(relative=Decimal("0.05")), True),
]


@pytest.mark.parametrize("excess, tolerance, flagged", TOLERANCES)
def test_fee_tolerance(catalog, excess, tolerance, flagged):
    history = example_history(catalog=catalog)
    rows = pd.DataFrame([{
        "transaction_id": "T1", "psp": "euroacq", "type": "charge", "amount": Decimal("100.0000"), "currency": "EUR",
        "fee": Decimal("1.5500") + excess, "fx_cost": Decimal("0.0000"), "settled_at": None, "file": "f", "line": 2,
    }])
    result = reconcile(rows, history, catalog, settled_psps=("x",), tolerance=tolerance)
    assert (not result.discrepancies.empty) == flagged
    if flagged:
        assert result.discrepancies.iloc[0]["amount_at_stake"] == excess


def test_fee_deviations_per_psp_and_currency(history, catalog, tmp_path):
    config = DiscrepancyConfig(fee_above_contract=2, overcharge_bps=Decimal(10), min_overcharge_eur=Decimal("0.50"))
    manifest = write_settlements(history, catalog, tmp_path / "s", discrepancies=config, seed=6)
    rows, _, files = read_settlements(tmp_path / "s")
    deviations = reconcile(rows, history, catalog, settled_psps=files).fee_deviations.set_index(["psp", "currency"])
    for psp in {d.psp for d in manifest}:
        expected = sum((d.amount_at_stake for d in manifest if d.psp == psp), Decimal(0))
        assert deviations.loc[(psp, "EUR"), "fee_deviation_total"] == expected
    assert deviations["fx_deviation_total"].sum() == 0
    assert deviations["settled_payments"].sum() == 40


# ------------------------------------------------------------------------------------- malformed lines

GOOD = "T1-0000,euroacq,charge,100.0000,EUR,1.5500,0.0000,2026-10-02T10:00:00+00:00"
MALFORMED = [
    # line text, field named, message fragment
    ("T1-0001,euroacq,charge,abc,EUR,1.5500,0.0000,2026-10-02T10:00:00+00:00", "amount", "not a decimal"),
    ("T1-0001,euroacq,charge,-5,EUR,1.5500,0.0000,2026-10-02T10:00:00+00:00", "amount", "greater than 0"),
    ("T1-0001,euroacq,charge,100.00001,EUR,1.5500,0.0000,2026-10-02T10:00:00+00:00", "amount", "4 decimal"),
    ("T1-0001,euroacq,capture,100,EUR,1.5500,0.0000,2026-10-02T10:00:00+00:00", "type", "not one of"),
    ("T1-0001,euroacq,charge,100,EUX,1.5500,0.0000,2026-10-02T10:00:00+00:00", "currency", "ISO 4217"),
    ("T1-0001,euroacq,charge,100,EUR,-1,0.0000,2026-10-02T10:00:00+00:00", "fee", "negative"),
    ("T1-0001,euroacq,charge,100,EUR,1.55,x,2026-10-02T10:00:00+00:00", "fx_cost", "not a decimal"),
    ("T1-0001,euroacq,charge,100,EUR,1.55,0,2026-10-02T10:00:00", "settled_at", "UTC offset"),
    ("T1-0001,euroacq,charge,100,EUR,1.55,0,yesterday", "settled_at", "ISO 8601"),
    (",euroacq,charge,100,EUR,1.55,0,2026-10-02T10:00:00+00:00", "transaction_id", "missing"),
    ("T1 0001,euroacq,charge,100,EUR,1.55,0,2026-10-02T10:00:00+00:00", "transaction_id", "not a valid"),
    ("T1-0001,Euro Acq,charge,100,EUR,1.55,0,2026-10-02T10:00:00+00:00", "psp", "not a valid"),
    ("T1-0001,euroacq,charge,100,EUR,1.55", "fx_cost", "missing"),
    ("T1-0001,euroacq,charge,100,EUR,1.55,0,2026-10-02T10:00:00+00:00,extra", "<row>", "more values"),
]


@pytest.mark.parametrize("text, field, fragment", MALFORMED)
def test_malformed_line_is_named_and_the_rest_is_read(tmp_path, text, field, fragment):
    path = tmp_path / "euroacq.csv"
    path.write_text("\n".join([",".join(SETTLEMENT_COLUMNS), GOOD, text, GOOD.replace("T1-0000", "T1-0002")]) + "\n")
    rows, errors = read_settlement_file(path)
    assert [r["transaction_id"] for r in rows] == ["T1-0000", "T1-0002"]
    assert len(errors) == 1
    error = errors[0]
    assert (error.file, error.line, error.field) == ("euroacq.csv", 3, field)
    assert fragment in error.message
    assert str(error).startswith(f"euroacq.csv:3: field '{field}'")


def test_missing_header_column_skips_only_that_file(tmp_path):
    (tmp_path / "a.csv").write_text("transaction_id,psp,type,amount,currency,fee,settled_at\n")
    (tmp_path / "b.csv").write_text(",".join(SETTLEMENT_COLUMNS) + "\n" + GOOD + "\n")
    rows, errors, files = read_settlements(tmp_path)
    assert len(rows) == 1 and files == ("a", "b")
    assert [(e.file, e.line, e.field) for e in errors] == [("a.csv", 1, "fx_cost")]


# ------------------------------------------------------------------------------------- CLI and simulator


def test_reconcile_cli_reports_lines_errors_and_writes_deviations(tmp_path, catalog, capsys):
    history_dir = write_example_history(tmp_path / "history", copies=10, catalog=catalog)
    history = read_history(history_dir, money="decimal")
    manifest = write_settlements(history, catalog, tmp_path / "settlement", discrepancies=EVERY_KIND, seed=7)
    with (tmp_path / "settlement" / "euroacq.csv").open("a") as handle:
        handle.write("T9,euroacq,charge,12,EUR,oops,0,2026-10-02T10:00:00+00:00\n")
    out = tmp_path / "out" / "reconciliation.csv"
    code = main(["reconcile", "--settlement", str(tmp_path / "settlement"), "--history", str(history_dir),
                 "--out", str(out), "--fail-on-discrepancy"])
    captured = capsys.readouterr()
    assert code == 1
    assert "euroacq.csv:" in captured.err and "field 'fee'" in captured.err
    lines = pd.read_csv(out, dtype=str)
    assert set(zip(lines["kind"], lines["transaction_id"], lines["amount_at_stake"].map(Decimal))) == {
        (d.kind, d.transaction_id, d.amount_at_stake) for d in manifest
    }
    deviations = pq.read_table(history_dir / "fee_deviations.parquet").to_pandas()
    assert {"psp", "currency", "fee_deviation_eur_mean", "fee_deviation_bps"} <= set(deviations.columns)
    assert pd.read_csv(out.with_name("reconciliation_errors.csv"))["field"].tolist() == ["fee"]


def test_simulated_history_reconciles(tmp_path, catalog):
    simulator = pytest.importorskip("payroute.simulator.history")
    from payroute.simulator.config import SimulationConfig

    simulated = simulator.simulate_history(SimulationConfig(n_transactions=3000, days=3), catalog, seed=11)
    simulator.write_history(simulated, tmp_path / "h", catalog)
    history = read_history(tmp_path / "h", money="decimal")
    clean = write_settlements(history, catalog, tmp_path / "clean", seed=11)
    rows, _, files = read_settlements(tmp_path / "clean")
    assert clean == [] and reconcile(rows, history, catalog, settled_psps=files).clean
    manifest = write_settlements(history, catalog, tmp_path / "dirty", discrepancies=EVERY_KIND, seed=11)
    rows, _, files = read_settlements(tmp_path / "dirty")
    found = _found(reconcile(rows, history, catalog, settled_psps=files))
    assert found == {(d.kind, d.psp, d.transaction_id, d.amount_at_stake) for d in manifest}
