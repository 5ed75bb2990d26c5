"""Traffic: customers with their cards and methods, and the transactions they make.

Customers are drawn first (country, method, card BIN from an issuer, vertical, merchant, hidden risk),
then transactions pick customers with skewed activity and get a time of day from a daily traffic
cycle. Everything is vectorised.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.simulator.config import DEFAULT_COUNTRY_WEIGHTS, TrafficMix
from payroute.simulator.frames import categorical_to_strings, map_categories
from payroute.simulator.issuers import IssuerBook

TRANSACTION_COLUMNS = (
    "id", "timestamp", "type", "amount", "currency", "country", "payment_method", "card_network", "card_bin",
    "card_type", "issuer_country", "vertical", "merchant_id", "first_deposit", "three_ds", "customer_id",
    "card_fingerprint",
)
HIDDEN_COLUMNS = ("_customer", "_issuer", "_customer_risk")
STRING_COLUMNS = (
    "country", "currency", "payment_method", "card_bin", "vertical", "merchant_id", "card_network", "card_type",
    "issuer_country", "customer_id", "card_fingerprint",
)

# Share of traffic per UTC hour (a European evening peak, a quiet night).
HOURLY_TRAFFIC = np.array(
    [2.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.8, 2.6, 3.4, 4.0, 4.4, 4.6, 4.8, 4.9, 5.0, 5.2, 5.5, 5.9, 6.4, 6.8, 6.9,
     6.2, 4.6, 3.0]
)
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "COP"})
# Median deposit in EUR per vertical (log-normal amounts, sigma 0.9).
_MEDIAN_EUR = {"igaming": 35.0, "sports_betting": 25.0, "forex": 250.0, "crypto": 150.0, "ecommerce": 45.0}
_TYPE_SCALE = {"deposit": 1.0, "withdrawal": 2.0, "affiliate_payout": 8.0}


def _choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    keys = [k for k, w in weights.items() if w > 0]
    p = np.array([weights[k] for k in keys], dtype=float)
    return np.asarray(keys, dtype=object)[rng.choice(len(keys), size=n, p=p / p.sum())]


def _hex_ids(prefix: str, keys: np.ndarray, seed: int) -> np.ndarray:
    """Opaque, stable identifiers (keyed hashes of an index), never raw identifiers."""
    hashed = pd.util.hash_array(np.char.add(f"{seed}:", keys.astype(str)).astype(object))
    return np.array([f"{prefix}{h:016x}" for h in hashed.tolist()], dtype=object)


def sample_customers(
    n_customers: int, catalog: Catalog, issuers: IssuerBook, mix: TrafficMix, rng: np.random.Generator, seed: int
) -> pd.DataFrame:
    """Customers with a country, a payment method, a card (for card payers), a vertical and a merchant."""
    weights = mix.countries or {c: DEFAULT_COUNTRY_WEIGHTS.get(c, 0.01) for c in catalog.countries}
    country = _choice(rng, {c: w for c, w in weights.items() if c in catalog.countries}, n_customers)
    family = _choice(rng, mix.methods, n_customers)
    local = np.array(
        [catalog.countries[c].local_methods[0].value if catalog.countries[c].local_methods else "card"
         for c in country], dtype=object
    )
    method = np.where(family == "local", local, family)

    # Cards: a BIN of a domestic issuer, or of a foreign one for a share of customers.
    bins = issuers.bins.merge(issuers.issuers[["issuer", "size"]], on="issuer")
    card_bin = np.empty(n_customers, dtype=object)
    foreign = rng.random(n_customers) < mix.cross_border_card_share
    for code in np.unique(country):
        for is_foreign in (False, True):
            rows = np.flatnonzero((country == code) & (foreign == is_foreign))
            if len(rows) == 0:
                continue
            pool = bins[(bins["country"] != code) if is_foreign else (bins["country"] == code)]
            if pool.empty:
                pool = bins
            p = pool["size"].to_numpy() / pool["size"].sum()
            card_bin[rows] = pool["card_bin"].to_numpy()[rng.choice(len(pool), size=len(rows), p=p)]
    by_bin = bins.set_index("card_bin")
    is_card = method == "card"
    card = by_bin.loc[card_bin[is_card]]

    vertical = _choice(rng, mix.verticals, n_customers)
    merchant_number = rng.integers(1, mix.merchants_per_vertical + 1, n_customers).astype(str)
    merchant = np.char.add(np.char.add("m_", vertical.astype(str)), np.char.add("_", merchant_number))
    customers = pd.DataFrame(
        {
            "_customer": np.arange(n_customers),
            "country": country,
            "currency": [catalog.countries[c].currency for c in country],
            "payment_method": method,
            "card_bin": np.where(is_card, card_bin, None),
            "vertical": vertical,
            "merchant_id": merchant.astype(object),
            "_customer_risk": rng.normal(0.0, 0.6, n_customers),
            "_activity": rng.lognormal(0.0, 1.2, n_customers),
        }
    )
    for column in ("issuer", "card_network", "card_type", "country"):
        values = np.full(n_customers, None, dtype=object)
        values[is_card] = card[column].to_numpy()
        customers["_issuer" if column == "issuer" else ("issuer_country" if column == "country" else column)] = values
    customers["_issuer"] = customers["_issuer"].fillna(-1).astype(np.int64)
    customers["customer_id"] = _hex_ids("cu", np.arange(n_customers), seed)
    customers["card_fingerprint"] = np.where(is_card, _hex_ids("fp", np.arange(n_customers), seed + 1), None)
    # Categoricals until the end: taking rows of integer codes is far cheaper than of strings.
    for column in STRING_COLUMNS:
        customers[column] = pd.Categorical(customers[column].astype(object))
    return customers


def _draw_raw(
    n: int, start: dt.datetime, days: float, catalog: Catalog, issuers: IssuerBook, mix: TrafficMix,
    rng: np.random.Generator, seed: int,
) -> pd.DataFrame:
    """``n`` unsorted transactions without ids (customers, time, type, amount, 3-D Secure)."""
    n_customers = max(1, int(np.ceil(n / mix.transactions_per_customer)))
    customers = sample_customers(n_customers, catalog, issuers, mix, rng, seed)
    activity = customers["_activity"].to_numpy()
    who = rng.choice(n_customers, size=n, p=activity / activity.sum())
    frame = customers.drop(columns="_activity").iloc[who].reset_index(drop=True)

    # Time: a day uniformly, an hour from the daily cycle, a uniform offset inside the hour.
    day = np.floor(rng.random(n) * days)
    hour = rng.choice(24, size=n, p=HOURLY_TRAFFIC / HOURLY_TRAFFIC.sum())
    seconds = day * 86_400 + hour * 3_600 + rng.random(n) * 3_600
    seconds = np.minimum(seconds, days * 86_400 - 1e-3)
    offset = pd.to_timedelta(np.round(seconds * 1e6).astype(np.int64), unit="us")
    frame["timestamp"] = pd.Timestamp(start).tz_convert("UTC").as_unit("us") + offset
    frame["type"] = pd.Categorical(_choice(rng, mix.types, n))

    rate = map_categories(frame["currency"], {c: float(r) for c, r in catalog.fx_rates.items()})
    median = map_categories(frame["vertical"], _MEDIAN_EUR, 40.0)
    scale = map_categories(frame["type"], _TYPE_SCALE, 1.0)
    amount_eur = np.clip(median * scale * rng.lognormal(0.0, 0.9, n), 1.0, 200_000.0)
    zero_decimals = frame["currency"].isin(_ZERO_DECIMAL_CURRENCIES).to_numpy()
    amount = np.where(zero_decimals, np.round(amount_eur * rate), np.round(amount_eur * rate, 2))
    frame["amount"] = np.maximum(amount, 1.0)

    is_card = (frame["payment_method"] == "card").to_numpy()
    sca = map_categories(frame["country"], {c: float(p.region in ("EU", "UK")) for c, p in catalog.countries.items()}, 0.0) > 0
    share = np.where(sca, min(1.0, mix.three_ds_share + 0.25), max(0.05, mix.three_ds_share - 0.25))
    frame["three_ds"] = is_card & (rng.random(n) < share)
    return frame


def sample_transactions(
    n: int,
    start: dt.datetime,
    days: float,
    catalog: Catalog,
    issuers: IssuerBook,
    mix: TrafficMix,
    rng: np.random.Generator,
    seed: int,
    eligibility: Callable[[pd.DataFrame], np.ndarray] | None = None,
    id_prefix: str = "tx",
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """``n`` transactions in ``[start, start + days)``, sorted by time, contract columns + hidden ``_`` ones.

    ``eligibility(frame) -> (rows, n_psps) bool``: keep only transactions some PSP can take (extra
    traffic is drawn and a uniform subsample of the routable part kept, so the time profile is
    unchanged); the matrix of the kept rows is returned with the frame (``None`` without a callback).
    """
    factor = 1.0 if eligibility is None else 1.3
    for _ in range(6):
        frame = _draw_raw(int(np.ceil(n * factor)) + (0 if eligibility is None else 32), start, days, catalog,
                          issuers, mix, rng, seed)
        matrix = None if eligibility is None else np.asarray(eligibility(frame), bool)
        keep = np.ones(len(frame), bool) if matrix is None else matrix.any(axis=1)
        if keep.sum() >= n:
            break
        factor *= 1.5 * len(frame) / max(1, keep.sum())
    else:
        raise ValueError("traffic mix yields too few transactions any PSP of the catalogue can take")
    chosen = np.sort(rng.choice(np.flatnonzero(keep), size=n, replace=False))
    # int64 microseconds: a tz-aware column's to_numpy() would build an object array of Timestamps.
    order = np.argsort(frame["timestamp"].dt.as_unit("us").astype("int64").to_numpy()[chosen], kind="stable")
    chosen = chosen[order]
    frame = frame.iloc[chosen].reset_index(drop=True)
    matrix = None if matrix is None else matrix[chosen]
    frame["id"] = np.char.add(f"{id_prefix}{seed}-", np.char.zfill(np.arange(n).astype(str), 8)).astype(object)
    deposits = frame["type"] == "deposit"
    rank = frame.loc[deposits].groupby("_customer").cumcount()
    frame["first_deposit"] = (rank == 0).reindex(frame.index, fill_value=False).to_numpy(dtype=bool)
    for column in (*STRING_COLUMNS, "type"):
        frame[column] = categorical_to_strings(frame[column])
    return frame[list(TRANSACTION_COLUMNS) + list(HIDDEN_COLUMNS)], matrix
