"""A small seeded synthetic training table with a known approval process, for tests and smoke runs.

Approval depends on PSP × country (what the segment baseline can learn) and on amount and 3-D Secure
within a segment (what it cannot), so a good model beats the segment baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from payroute.training.dataset import TableSpec

SYNTHETIC_SPEC = TableSpec(
    feature_names=("psp", "country", "payment_method", "amount_eur_log", "three_ds", "attempt", "psp_recent_rate"),
    categorical_features=("psp", "country", "payment_method"),
    version="synthetic-1",
)
_PSPS = ("euroacq", "britpay", "latamconnect", "globalpay")
_COUNTRIES = ("DE", "GB", "BR", "MX", "FR")
_METHODS = ("card", "ewallet")


def synthetic_training_table(n_rows: int, seed: int, days: int = 60, logit_scale: float = 1.0) -> pd.DataFrame:
    """``n_rows`` single-attempt rows over ``days`` days with labels drawn from a known logistic model."""
    rng = np.random.default_rng(seed)
    psp = rng.choice(_PSPS, n_rows)
    country = rng.choice(_COUNTRIES, n_rows, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    method = rng.choice(_METHODS, n_rows, p=[0.8, 0.2])
    amount_log = rng.normal(3.5, 1.2, n_rows)
    three_ds = rng.random(n_rows) < 0.4
    seconds = np.sort(rng.uniform(0, days * 86_400, n_rows))
    psp_effect = dict(zip(_PSPS, (0.6, 0.3, 0.1, 0.0)))
    country_effect = dict(zip(_COUNTRIES, (0.5, 0.4, -0.3, -0.5, 0.3)))
    local = ((psp == "latamconnect") & np.isin(country, ["BR", "MX"])) | ((psp == "britpay") & (country == "GB"))
    logit = (
        0.8
        + np.vectorize(psp_effect.get)(psp)
        + np.vectorize(country_effect.get)(country)
        + 0.7 * local
        - 0.45 * (amount_log - 3.5)
        + 0.5 * three_ds
        - 0.3 * (method == "ewallet")
    ) * logit_scale
    probability = 1 / (1 + np.exp(-logit))
    label = (rng.random(n_rows) < probability).astype(int)
    amount_eur = np.exp(amount_log)
    chargeback = np.where(rng.random(n_rows) < 0.004 + 0.01 * (country == "BR"), amount_eur, 0.0)
    fee_deviation = np.where(psp == "globalpay", 0.002 * amount_eur, 0.0) + rng.normal(0, 0.01, n_rows)
    approved = label == 1
    return pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(n_rows)],
            "attempt": 1,
            "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "psp": psp,
            "country": country,
            "payment_method": method,
            "amount_eur_log": amount_log,
            "three_ds": three_ds.astype(float),
            "psp_recent_rate": np.clip(probability + rng.normal(0, 0.15, n_rows), 0, 1),
            "label": label,
            "true_probability": probability,
            "chargeback_eur": np.where(approved, chargeback, np.nan),
            "fee_deviation_eur": np.where(approved, fee_deviation, np.nan),
        }
    )
