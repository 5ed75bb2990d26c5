"""Report arithmetic against values computed by hand on the worked example (reporting/example.py).

Hand computation (docs/reporting.md, "Worked example"): 6 payments, 9 attempts; deposits T1 T2 T3 T4 T6,
approved T1 T2 T6 → deposit conversion 3/5; first deposits T1 T3, approved T1 → 1/2. Fees (catalogue
rule): euroacq 0.15 + 1.4 %: T1 1.55, T2 2.95, T5 4.35, T3 decline 0.02; britpay T6 0.20 + 1.5 % = 15.20
and FX 1.75 % = 17.50 (britpay settles GBP only), T4 error 0.02; budgetpay declines 0.01 + 0.01;
riskshield decline 0.10 → fees 24.21 + FX 17.50 = 41.71 EUR over 1,600 EUR approved = 260.6875 bps.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from payroute.catalog import load_catalog
from payroute.reporting.chargebacks import (
    DEFAULT_THRESHOLDS, MonitoringProgramme, MonitoringThresholds, chargeback_monitoring, chargeback_rates, flag,
)
from payroute.reporting.costs import cost_by_psp, savings_by_psp
from payroute.reporting.example import example_history
from payroute.reporting.frames import prepare
from payroute.reporting.kpis import approval_kpis, overall_kpis, payout_kpis
from payroute.reporting.routing import incident_windows, service_views, traffic_share


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def data(catalog):
    return prepare(example_history(catalog=catalog), catalog)


@pytest.fixture(scope="module")
def data_x10(catalog):
    return prepare(example_history(copies=10, catalog=catalog), catalog)


OVERALL = [
    ("payments", 6),
    ("first_attempt_approval", 3 / 6),        # T1, T5, T6
    ("final_approval", 4 / 6),                # + T2 after the cascade
    ("deposits", 5),
    ("deposit_conversion", 3 / 5),            # T1, T2, T6 of T1 T2 T3 T4 T6
    ("first_deposits", 2),
    ("first_deposit_conversion", 1 / 2),      # T1 of T1, T3
    ("attempts_per_payment", 9 / 6),
    ("attempt_approval", 4 / 9),
    ("soft_decline_share", 3 / 5),            # do_not_honor, psp_error, psp_timeout of 5 failures
    ("hard_decline_share", 1 / 5),            # stolen_card
    ("customer_decline_share", 1 / 5),        # insufficient_funds
    ("error_rate", 1 / 9),
    ("timeout_rate", 1 / 9),
    ("latency_p50_ms", 500.0),                # median of 300 400 500 200 100 5000 600 700 800
]


@pytest.mark.parametrize("column, expected", OVERALL)
def test_overall_kpis_match_hand_computation(data, column, expected):
    assert overall_kpis(data)[column].iloc[0] == pytest.approx(expected)


@pytest.mark.parametrize("column, expected", [c for c in OVERALL if c[0] not in ("payments", "deposits", "first_deposits")])
def test_rates_are_invariant_to_repeating_the_payments(data_x10, column, expected):
    assert overall_kpis(data_x10)[column].iloc[0] == pytest.approx(expected)


BY_PSP = [
    # psp, column, expected (payment-level figures belong to the first-routed PSP)
    ("euroacq", "payments", 3),                    # T1 T3 T5
    ("euroacq", "first_attempt_approval", 2 / 3),
    ("euroacq", "deposit_conversion", 1 / 2),      # T1 approved, T3 not
    ("budgetpay", "final_approval", 1.0),          # T2, rescued by euroacq
    ("britpay", "attempts_per_payment", 2.0),      # T4 (3 attempts), T6 (1)
    ("britpay", "error_rate", 1 / 2),
    ("budgetpay", "timeout_rate", 1 / 2),
    ("euroacq", "attempt_approval", 3 / 4),
    ("riskshield", "payments", 0),
    ("riskshield", "hard_decline_share", 1.0),
]


@pytest.mark.parametrize("psp, column, expected", BY_PSP)
def test_kpis_by_psp(data, psp, column, expected):
    table = approval_kpis(data, "psp").set_index("psp")
    assert table.loc[psp, column] == pytest.approx(expected)


def test_kpis_by_day_split_the_payments(data):
    table = approval_kpis(data, "day").set_index("day")
    assert table["payments"].to_dict() == {"2026-10-01": 4, "2026-10-02": 2}
    assert table.loc["2026-10-01", "deposit_conversion"] == pytest.approx(1.0)
    assert table.loc["2026-10-02", "deposit_conversion"] == pytest.approx(0.0)


COSTS = [
    ("all", "fees_eur", 24.21),
    ("all", "fx_eur", 17.50),
    ("all", "approved_volume_eur", 1600.0),
    ("all", "cost_bps", 41.71 / 1600 * 1e4),       # 260.6875
    ("euroacq", "cost_bps", 8.87 / 600 * 1e4),     # 1.55 + 2.95 + 4.35 + 0.02
    ("britpay", "cost_bps", 32.72 / 1000 * 1e4),   # 15.20 + 17.50 + 0.02
    ("budgetpay", "total_cost_eur", 0.02),
]


@pytest.mark.parametrize("psp, column, expected", COSTS)
def test_cost_by_psp(data, psp, column, expected):
    assert cost_by_psp(data).set_index("psp").loc[psp, column] == pytest.approx(expected, abs=1e-9)


SAVINGS = [
    # T6 1000 EUR at britpay cost 32.70; cheapest eligible budgetpay 0.05 + 0.9 % = 9.05
    ("britpay", "saving_eur", 23.65),
    # T1 1.55 vs budgetpay 0.95; T2 0.01 + 2.95 vs 1.85; T5 (withdrawal: no budgetpay) 4.35 vs euroacq 4.35
    ("euroacq", "saving_eur", 0.60 + 1.11 + 0.0),
    ("euroacq", "cheapest_eligible_cost_eur", 0.95 + 1.85 + 4.35),
    ("all", "saving_eur", 25.36),
    ("all", "saving_bps", 25.36 / 1600 * 1e4),
    ("all", "share_at_cheapest_psp", 1 / 4),
]


@pytest.mark.parametrize("psp, column, expected", SAVINGS)
def test_saving_against_cheapest_eligible_psp(data, catalog, psp, column, expected):
    assert savings_by_psp(data, catalog).set_index("psp").loc[psp, column] == pytest.approx(expected, abs=1e-9)


CHARGEBACKS = [
    ("psp", "euroacq", "chargeback_rate_count", 1 / 3),      # T1 of T1 T2 T5
    ("psp", "euroacq", "chargeback_rate_amount", 100 / 600),
    ("psp", "britpay", "chargeback_rate_count", 1.0),        # T6 of T6
    ("merchant_id", "m1", "chargeback_rate_count", 1 / 3),
    ("merchant_id", "m2", "chargeback_rate_amount", 1.0),
    ("merchant_id", "m2", "chargeback_amount_eur", 1000.0),
]


@pytest.mark.parametrize("level, key, column, expected", CHARGEBACKS)
def test_chargeback_rates(data, level, key, column, expected):
    assert chargeback_rates(data, level).set_index(level).loc[key, column] == pytest.approx(expected)


def _rates(count: int, approved: int, amount: float = 0.0, volume: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({
        "merchant_id": ["m"], "approved_payments": [approved], "chargebacks": [count],
        "chargeback_rate_count": [count / approved], "chargeback_rate_amount": [amount / volume],
    })


FLAGS = [
    # count, approved, expected status, programme (defaults: CMM 1 %/100, ECM 1.5 %/100, HECM 3 %/300)
    (50, 10_000, "ok", ""),                      # 0.5 %: below 75 % of 1 %
    (80, 10_000, "nearing", "mastercard_cmm"),   # 0.8 %: at 80 % of CMM's 1 %
    (120, 10_000, "breach", "mastercard_cmm"),   # 1.2 % and 120 chargebacks
    (160, 10_000, "breach", "mastercard_ecm"),
    (20, 1_000, "nearing", "mastercard_ecm"),    # 2 %: over ECM's ratio but only 20 chargebacks
    (400, 10_000, "breach", "mastercard_hecm"),  # 4 % and 400
]


@pytest.mark.parametrize("count, approved, status, programme", FLAGS)
def test_monitoring_flags(count, approved, status, programme):
    flagged = flag(_rates(count, approved), "merchant_id", DEFAULT_THRESHOLDS)
    assert (flagged["status"].iloc[0], flagged["programme"].iloc[0]) == (status, programme)


def test_thresholds_are_configurable_and_amount_based(data):
    strict = MonitoringThresholds(programmes=(
        MonitoringProgramme(name="house_rule", level="psp", ratio=0.5, amount_ratio=0.9, min_count=1),
    ), warn_fraction=0.5)
    table = chargeback_monitoring(data, "psp", strict).set_index("psp")
    assert table.loc["britpay", "status"] == "breach"      # amount ratio 100 % ≥ 90 %
    assert table.loc["euroacq", "status"] == "nearing"     # count 1/3 ≥ 0.5 × 50 %


def test_payouts(data):
    row = payout_kpis(data).set_index(["type", "psp"]).loc[("withdrawal", "all")]
    assert (row["requests"], row["success"], row["approved_volume_eur"], row["cost_eur"]) == (1, 1.0, 300.0, 4.35)
    assert row["cost_bps"] == pytest.approx(145.0)
    assert row["p50_seconds_to_complete"] == pytest.approx(0.7)  # latency of the approving attempt


def test_window_keeps_the_days_asked_for(catalog):
    history = example_history(catalog=catalog)
    first_day = prepare(history, catalog, dt.date(2026, 10, 1), dt.date(2026, 10, 1))
    assert sorted(first_day.payments["id"]) == ["T1", "T2", "T5", "T6"]
    assert len(first_day.attempts) == 5
    assert list(first_day.chargebacks["transaction_id"]) == ["T1", "T6"]


def test_traffic_share_rows_sum_to_one(data):
    share = traffic_share(data)
    assert share.sum(axis=1).to_numpy() == pytest.approx(1.0)


def test_incident_window_found_from_failures(catalog):
    history = example_history(copies=10, catalog=catalog)
    # The ten copies of T4 fall in one hour: britpay errors and budgetpay times out on 10 of 10 attempts
    # there, while each PSP's other hours have no error or timeout.
    data = prepare(history, catalog)
    windows = incident_windows(data, failure_rate=0.5, min_attempts=5)
    assert list(windows["psp"]) == ["britpay", "budgetpay"]
    assert (windows["failure_rate"] == 1.0).all()


def test_service_views_only_when_columns_exist(data, catalog):
    assert service_views(data) == {}
    history = example_history(catalog=catalog)
    service = history.attempts[["transaction_id", "attempt"]].assign(
        model_version=["v1", "v1", "v2", "v2", "v2", "v2", "v2", "v1", "v2"],
        degraded=False, explored=[True, False, False, False, False, False, False, False, False],
    )
    views = service_views(prepare(history, catalog, service=service))
    by_version = views["approval_by_model_version"].set_index("model_version")
    # first attempts: T1 v1 (approved), T2 v1 (declined; final approved), T3 v2, T4 v2, T5 v1, T6 v2 (approved)
    assert by_version.loc["v1", "final_approval"] == pytest.approx(1.0)
    assert by_version.loc["v2", "final_approval"] == pytest.approx(1 / 3)
    assert views["exploration_share"]["share"].sum() == pytest.approx(1 / 4)  # T1 of 4 on day 1
    assert views["degraded_share"]["share"].sum() == 0


def test_fast_reader_gives_the_same_tables_as_the_contract_reader(tmp_path, catalog):
    """load() reads with Arrow casts and categoricals; prepare(read_history(...)) is the reference."""
    from payroute.history import read_history
    from payroute.reporting.example import write_example_history
    from payroute.reporting.frames import load
    from payroute.reporting.report import build_report

    directory = write_example_history(tmp_path / "h", copies=3, catalog=catalog)
    fast = build_report(load(directory, catalog), catalog)
    reference = build_report(prepare(read_history(directory), catalog), catalog)
    assert fast.tables.keys() == reference.tables.keys()
    for name, table in reference.tables.items():
        pd.testing.assert_frame_equal(
            fast.tables[name].astype({c: object for c in table.columns if table[c].dtype != float}).reset_index(drop=True),
            table.astype({c: object for c in table.columns if table[c].dtype != float}).reset_index(drop=True),
            check_dtype=False, obj=name,
        )
