"""The PSP catalogue: loading, eligibility (both interpreters agree), the fee rule."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from payroute.catalog import attempt_cost, dump_catalog, fee_formula, load_catalog
from payroute.contracts import CardNetwork, PaymentMethod, TransactionType, Vertical

CATALOG = load_catalog()

BASE = {
    "type": "deposit",
    "amount": "50",
    "currency": "EUR",
    "country": "DE",
    "payment_method": "card",
    "card_network": "visa",
    "vertical": "igaming",
    "issuer_country": "DE",
}


def test_default_catalogue_shape():
    assert len(CATALOG.psps) >= 6 and len(CATALOG.countries) >= 12
    assert CATALOG.static_order[0] == "globalpay"
    assert set(CATALOG.static_order) == set(CATALOG.psp_names)


@pytest.mark.parametrize(
    ("change", "psp", "reason"),
    [
        ({}, "euroacq", None),
        ({"amount": "0.50"}, "euroacq", "amount_below_minimum"),
        ({"amount": "10000.01"}, "euroacq", "amount_above_maximum"),
        ({"amount": "10000.00"}, "euroacq", None),
        ({"card_network": "amex"}, "euroacq", "network_not_supported"),
        ({"card_network": "amex"}, "britpay", None),
        ({"vertical": "crypto"}, "euroacq", "vertical_not_accepted"),
        ({}, "globalpay", "vertical_not_accepted"),
        ({"vertical": "forex"}, "globalpay", None),
        ({"country": "BR", "currency": "BRL"}, "euroacq", "country_not_supported"),
        ({"currency": "USD"}, "euroacq", "currency_not_supported"),
        ({"currency": "CHF"}, "globalpay", "currency_not_supported"),
        ({"type": "affiliate_payout"}, "euroacq", "type_not_supported"),
        ({"type": "withdrawal"}, "budgetpay", "type_not_supported"),
        ({"payment_method": "pix", "country": "BR", "currency": "BRL", "card_network": None}, "latamconnect", None),
        ({"payment_method": "pix", "country": "BR", "currency": "BRL", "card_network": None}, "riskshield", "method_not_supported"),
        ({"amount": "5.00", "currency": "GBP", "country": "GB", "issuer_country": "GB"}, "riskshield", "amount_below_minimum"),
    ],
)
def test_eligibility_rules(change, psp, reason):
    txn = {**BASE, **change}
    report = CATALOG.eligibility(txn)
    assert report.excluded.get(psp) == reason
    assert (psp in report.eligible) == (reason is None)
    # The column-wise interpreter gives the same answer and reason.
    mask, reasons = CATALOG.eligibility_matrix(pd.DataFrame([txn]))
    j = CATALOG.psp_names.index(psp)
    assert bool(mask[0, j]) == (reason is None)
    assert reasons[0, j] == (reason or "")


transactions = st.fixed_dictionaries(
    {
        "type": st.sampled_from([t.value for t in TransactionType]),
        "amount": st.decimals(min_value="0.01", max_value="200000", places=2).map(str),
        "currency": st.sampled_from([*CATALOG.fx_rates, "CHF"]),
        "country": st.sampled_from([*CATALOG.countries, "US"]),
        "payment_method": st.sampled_from([m.value for m in PaymentMethod]),
        "card_network": st.one_of(st.none(), st.sampled_from([n.value for n in CardNetwork])),
        "vertical": st.sampled_from([v.value for v in Vertical]),
    }
)


@settings(max_examples=60, deadline=None)
@given(st.lists(transactions, min_size=1, max_size=20))
def test_scalar_and_columnwise_eligibility_agree(rows):
    mask, reasons = CATALOG.eligibility_matrix(pd.DataFrame(rows))
    for i, row in enumerate(rows):
        report = CATALOG.eligibility(row)
        assert tuple(p for j, p in enumerate(CATALOG.psp_names) if mask[i, j]) == report.eligible
        assert {p: reasons[i, j] for j, p in enumerate(CATALOG.psp_names) if not mask[i, j]} == report.excluded


LIMITS_EUR = sorted({float(p.amount_limits.min_eur) for p in CATALOG.psps} | {float(p.amount_limits.max_eur) for p in CATALOG.psps})


@settings(max_examples=80, deadline=None)
@given(transactions, st.sampled_from(LIMITS_EUR), st.sampled_from(LIMITS_EUR),
       st.floats(-1e-6, 1e-6, allow_nan=False), st.floats(-1e-6, 1e-6, allow_nan=False))
def test_amounts_in_one_band_get_one_eligibility(row, a, b, nudge_a, nudge_b):
    """The router caches eligibility by (other fields, amount band): amounts with the same band must get
    the same report. Amounts are taken at the catalogue's limits (in EUR) and nudged across them."""
    rate = float(CATALOG.fx_rates.get(row["currency"], 1))  # a currency without a rate: band empty, any amount
    first, second = ({**row, "amount": Decimal(repr((limit + nudge) * rate))} for limit, nudge in ((a, nudge_a), (b, nudge_b)))
    same_band = CATALOG.amount_band(row["currency"], first["amount"]) == CATALOG.amount_band(row["currency"], second["amount"])
    if same_band:
        assert CATALOG.eligibility(first) == CATALOG.eligibility(second)
    assert len(CATALOG.amount_band(row["currency"], first["amount"])) == (len(CATALOG.psp_names) if row["currency"] in CATALOG.fx_rates else 0)


def test_amount_band_marks_below_within_above():
    euroacq = CATALOG.psp_names.index("euroacq")
    limits = next(p.amount_limits for p in CATALOG.psps if p.name == "euroacq")
    below, inside, above = float(limits.min_eur) / 2, float(limits.min_eur) * 2, float(limits.max_eur) * 2
    assert [CATALOG.amount_band("EUR", v)[euroacq] for v in (below, inside, above)] == [1, 0, 2]
    assert CATALOG.amount_band("XXX", 10) == b""


@pytest.mark.parametrize(
    ("psp", "amount", "currency", "status", "fee", "fx_cost"),
    [
        # euroacq: 0.15 EUR + 1.40 %, FX 1.50 % when not settled (GBP is not), decline 0.02 EUR
        ("euroacq", "100", "EUR", "approved", "1.5500", "0.0000"),
        ("euroacq", "100", "GBP", "approved", "1.5275", "1.5000"),  # 0.15*0.85 + 1.40
        ("euroacq", "100", "EUR", "declined", "0.0200", "0.0000"),
        ("euroacq", "100", "PLN", "error", "0.0860", "0.0000"),  # 0.02 * 4.30
        ("globalpay", "1000", "BRL", "approved", "30.5000", "20.0000"),  # 0.25*6 + 29; FX 2 %
    ],
)
def test_fee_rule_hand_computed(psp, amount, currency, status, fee, fx_cost):
    cost = attempt_cost(CATALOG, psp, Decimal(amount), currency, status)
    assert (cost.fee, cost.fx_cost) == (Decimal(fee), Decimal(fx_cost))
    assert cost.fee_eur == CATALOG.to_eur(cost.fee, currency)


def test_fee_formula_vectorised_matches_decimal():
    fees = CATALOG.by_name["euroacq"].fees
    amounts = np.array([10.0, 99.99, 2500.0])
    fee, fx = fee_formula(amounts, 4.30, fees, np.array([1, 0, 1]), np.array([1, 1, 0]))
    for k, amount in enumerate(amounts):
        status = "approved" if k != 1 else "declined"
        expected = fee_formula(Decimal(str(amount)), Decimal("4.30"), fees, Decimal(int(status == "approved")), Decimal(int(k != 2)))
        assert fee[k] == pytest.approx(float(expected[0]), abs=1e-9)
        assert fx[k] == pytest.approx(float(expected[1]), abs=1e-9)


def test_cross_border_and_fx():
    assert not CATALOG.is_cross_border("euroacq", "DE")
    assert CATALOG.is_cross_border("euroacq", "BR")
    assert CATALOG.is_cross_border("britpay", "DE")
    assert CATALOG.needs_fx("britpay", "EUR") and not CATALOG.needs_fx("britpay", "GBP")


def test_round_trip_and_bad_catalogue(tmp_path):
    path = tmp_path / "catalog.yaml"
    dump_catalog(CATALOG, path)
    assert load_catalog(path) == CATALOG
    data = yaml.safe_load(path.read_text())
    data["psps"][0]["countries"] = ["XX"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationError, match="countries"):
        load_catalog(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_catalog(tmp_path / "missing.yaml")
