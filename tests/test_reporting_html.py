"""`payroute report`: a self-contained page (no external URL) naming every PSP, and the tables beside it."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from payroute.catalog import load_catalog
from payroute.cli import main
from payroute.reporting.example import write_example_history

EXTERNAL = re.compile(r"https?://|//cdn|<script[^>]+src=|<link[^>]+href=|@import", re.IGNORECASE)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    history = write_example_history(root / "history", copies=10, catalog=load_catalog())
    out = root / "out" / "ops.html"
    assert main(["report", "--history", str(history), "--out", str(out)]) == 0
    return out, history


def test_page_has_no_external_reference(page):
    text = page[0].read_text()
    assert EXTERNAL.search(text) is None
    images = re.findall(r"src='data:image/png;base64,([^']+)'", text)
    assert len(images) == 4  # approval by day, cost, chargebacks, traffic share
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert all(b"http" not in base64.b64decode(image) for image in images)


def test_page_names_every_psp_in_the_history(page):
    text = page[0].read_text()
    psps = set(pq.read_table(page[1] / "attempts.parquet", columns=["psp"]).column("psp").to_pylist())
    assert psps == {"euroacq", "budgetpay", "britpay", "riskshield"}
    for psp in psps:
        assert f"<td>{psp}</td>" in text


def test_tables_written_beside_the_page(page):
    tables = page[0].parent / "ops_tables"
    names = {p.stem for p in tables.glob("*.csv")}
    assert {"overall", "approval_by_psp", "approval_by_country", "approval_by_payment_method", "approval_by_vertical",
            "approval_by_day", "cost_by_psp", "saving_vs_cheapest_eligible", "chargebacks_by_psp",
            "chargebacks_by_merchant", "payouts", "incidents", "traffic_share_hourly"} <= names
    overall = pd.read_csv(tables / "overall.csv")
    assert overall["deposit_conversion"].iloc[0] == pytest.approx(0.6)
    cost = pd.read_csv(tables / "cost_by_psp.csv").set_index("psp")
    assert cost.loc["all", "cost_bps"] == pytest.approx(260.6875)


def test_breaches_are_highlighted(page):
    # Every PSP with a chargeback in the example is far above the acquirer thresholds.
    assert "<td class='breach'>breach</td>" in page[0].read_text()


def test_empty_window_is_an_error_not_an_empty_page(page, tmp_path, capsys):
    out = tmp_path / "empty.html"
    code = main(["report", "--history", str(page[1]), "--from", "2030-01-01", "--out", str(out)])
    assert code == 1 and not out.exists()
    assert "no transactions in the window" in capsys.readouterr().err
