"""Small seeded histories in the contract's columns, for the feature tests and benchmark.

Not a simulator (that is ``payroute.simulator``): just enough structure to exercise the feature
pipeline where it is fragile. Timestamps are whole seconds, so many outcomes share a timestamp;
sparse BINs sit beside busy ones; some transactions retry at another PSP in the same second.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.contracts import DECLINE_CLASS, CardNetwork, CardType, TransactionType, Vertical
from payroute.history import History

START = pd.Timestamp("2026-10-01", tz="UTC")
_REASONS = np.array([reason.value for reason in DECLINE_CLASS])
_CLASSES = np.array([DECLINE_CLASS[reason].value for reason in DECLINE_CLASS])


def synthetic_history(catalog: Catalog, n_transactions: int, *, days: float = 7.0, seed: int,
                      max_attempts: int = 3) -> History:
    """A random history: ``n_transactions`` over ``days``, 1–``max_attempts`` attempts each at
    eligible PSPs (distinct per transaction), statuses drawn with PSP-specific approval odds."""
    rng = np.random.default_rng(seed)
    n = n_transactions
    countries = np.array(sorted(catalog.countries))
    country = rng.choice(countries, n)
    currency = np.array([catalog.countries[c].currency for c in country])
    is_card = rng.random(n) < 0.75
    local = np.array([(catalog.countries[c].local_methods or ("ewallet",))[0] for c in country], dtype=object)
    method = np.where(is_card, "card", np.where(rng.random(n) < 0.5, local, "ewallet"))
    networks = np.array([CardNetwork.visa.value, CardNetwork.mastercard.value, CardNetwork.maestro.value])
    bins = np.array([f"{400000 + i:06d}" for i in range(60)])
    bin_weights = 1.0 / np.arange(1, 61)  # Zipf: a few busy BINs, many sparse ones
    issuer = np.where(rng.random(n) < 0.85, country, rng.choice(countries, n))
    seconds = np.sort(rng.integers(0, int(days * 86400), n))
    transactions = pd.DataFrame({
        "id": [f"tx{seed}_{i:07d}" for i in range(n)],
        "timestamp": START + pd.to_timedelta(seconds, unit="s"),
        "type": rng.choice([t.value for t in TransactionType], n, p=[0.8, 0.15, 0.05]),
        "amount": np.round(np.exp(rng.normal(4.0, 1.2, n)) * np.array([float(catalog.fx_rates[c]) for c in currency]), 2) + 1,
        "currency": currency,
        "country": country,
        "payment_method": method,
        "card_network": np.where(is_card, rng.choice(networks, n), None),
        "card_bin": np.where(is_card, rng.choice(bins, n, p=bin_weights / bin_weights.sum()), None),
        "card_type": np.where(is_card, rng.choice([t.value for t in CardType], n), None),
        "issuer_country": np.where(is_card, issuer, None),
        "vertical": rng.choice([v.value for v in Vertical], n),
        "merchant_id": "m1",
        "first_deposit": rng.random(n) < 0.1,
        "three_ds": rng.random(n) < 0.3,
        "customer_id": None,
        "card_fingerprint": None,
    })
    eligible, _ = catalog.eligibility_matrix(transactions)
    # Random distinct PSP order per transaction among eligible ones; ineligible get +inf keys.
    keys = np.where(eligible, rng.random(eligible.shape), np.inf)
    order = np.argsort(keys, axis=1)
    n_tries = np.minimum(rng.integers(1, max_attempts + 1, n), eligible.sum(axis=1))
    psp_approval = rng.uniform(0.55, 0.9, len(catalog.psp_names))
    rows = []
    for k in range(max_attempts):
        tried = np.flatnonzero(n_tries > k)
        psp_index = order[tried, k]
        m = len(tried)
        draw = rng.random(m)
        approved = draw < psp_approval[psp_index]
        failure = rng.choice(len(_REASONS), m)
        status = np.where(approved, "approved",
                          np.where(_REASONS[failure] == "psp_error", "error",
                                   np.where(_REASONS[failure] == "psp_timeout", "timeout", "declined")))
        rows.append(pd.DataFrame({
            "transaction_id": transactions["id"].to_numpy()[tried],
            "attempt": k + 1,
            "psp": np.asarray(catalog.psp_names)[psp_index],
            "timestamp": START + pd.to_timedelta(seconds[tried] + k * rng.integers(0, 3, m), unit="s"),
            "status": status,
            "decline_code": None,
            "decline_reason": np.where(approved, None, _REASONS[failure]),
            "decline_class": np.where(approved, None, _CLASSES[failure]),
            "latency_ms": np.round(np.exp(rng.normal(6.0, 0.5, m)), 1),
            "fee": 0.0, "fx_cost": 0.0, "fee_eur": 0.0, "fx_cost_eur": 0.0,
            "propensity": rng.uniform(0.05, 1.0, m),
        }))
    attempts = pd.concat(rows, ignore_index=True)
    attempts = attempts.sort_values(["timestamp", "transaction_id", "attempt"], kind="stable").reset_index(drop=True)
    chargebacks = pd.DataFrame(columns=["transaction_id", "date", "amount", "currency", "reason"])
    return History(transactions, attempts, chargebacks)


def with_outcomes_changed_after(history: History, cutoff: dt.datetime, *, seed: int) -> History:
    """The same history with every attempt outcome stamped at or after ``cutoff`` redrawn (status,
    decline reason and class, latency): the leakage test's counterfactual."""
    rng = np.random.default_rng(seed)
    attempts = history.attempts.copy()
    late = (attempts["timestamp"] >= cutoff).to_numpy()
    m = int(late.sum())
    approved = rng.random(m) < 0.5
    failure = rng.choice(len(_REASONS), m)
    attempts.loc[late, "status"] = np.where(approved, "approved", np.where(
        _REASONS[failure] == "psp_error", "error", np.where(_REASONS[failure] == "psp_timeout", "timeout", "declined")))
    attempts.loc[late, "decline_reason"] = np.where(approved, None, _REASONS[failure])
    attempts.loc[late, "decline_class"] = np.where(approved, None, _CLASSES[failure])
    attempts.loc[late, "latency_ms"] = rng.uniform(1, 5000, m)
    return History(history.transactions, attempts, history.chargebacks)
