"""Row-wise transforms declared once and run by both paths: what an outcome adds to the counters,
the request-time features, and the key of each level.

Every function here takes columns (numpy arrays of equal length) and returns arrays, so the offline
builder calls it on a million rows and the online store on one row per candidate PSP. The online
store passes plain Python values (enum values as strings, money as float, times as microseconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.contracts import AttemptStatus, DeclineClass
from payroute.features.decay import US_PER_S
from payroute.features.spec import COUNTERS, FeatureSpec

# Standard-time UTC offsets (hours) for local hour and weekday. Daylight saving is ignored on
# purpose: it keeps the transform a pure integer function (identical in both paths) and an hour's
# shift twice a year is immaterial to approval patterns. Countries not listed count as UTC.
UTC_OFFSET_HOURS: dict[str, float] = {
    "DE": 1, "FR": 1, "ES": 1, "IT": 1, "NL": 1, "PL": 1, "SE": 1, "AT": 1, "BE": 1, "CH": 1,
    "DK": 1, "NO": 1, "CZ": 1, "HU": 1, "GB": 0, "IE": 0, "PT": 0, "FI": 2, "GR": 2, "RO": 2,
    "TR": 3, "BR": -3, "AR": -3, "CL": -4, "CO": -5, "PE": -5, "MX": -6, "CA": -5, "US": -5,
    "IN": 5.5, "JP": 9, "KR": 9, "CN": 8, "SG": 8, "AU": 10, "NZ": 12, "ZA": 2, "NG": 1, "AE": 4,
}
EPOCH_WEEKDAY = 2  # 2020-01-01 was a Wednesday (Monday = 0)

# The transaction fields the request-time transforms and the key levels read.
TRANSACTION_FIELDS: tuple[str, ...] = (
    "amount", "currency", "country", "payment_method", "card_network", "card_bin", "card_type",
    "issuer_country", "vertical", "type", "three_ds", "first_deposit",
)


def outcome_weights(status: np.ndarray, decline_class: np.ndarray, latency_ms: np.ndarray) -> np.ndarray:
    """What each outcome adds to the counters, shape (n, len(COUNTERS)), columns in COUNTERS order.

    ``controllable`` (the PSP's approval denominator) = approved, soft-declined, error or timeout:
    a PSP is blamed only for what it controls; hard and customer declines count only in the mix.
    """
    status = np.asarray(status, dtype=object)
    decline_class = np.asarray(decline_class, dtype=object)
    approved = status == AttemptStatus.approved.value
    soft = decline_class == DeclineClass.soft.value
    error_timeout = (status == AttemptStatus.error.value) | (status == AttemptStatus.timeout.value)
    columns = {
        "attempts": np.ones(len(status)),
        "controllable": approved | soft | error_timeout,
        "approved": approved,
        "soft": soft,
        "hard": decline_class == DeclineClass.hard.value,
        "customer": decline_class == DeclineClass.customer.value,
        "error_timeout": error_timeout,
        "latency_ms": np.asarray(latency_ms, dtype=float),
    }
    return np.column_stack([np.asarray(columns[name], dtype=float) for name in COUNTERS])


@dataclass(frozen=True)
class RequestContext:
    """Lookup tables for the request-time transforms, derived once from catalogue and spec."""

    catalog: Catalog
    spec: FeatureSpec

    @cached_property
    def categories(self) -> dict[str, tuple[str, ...]]:
        return self.spec.categories(self.catalog.psp_names)

    @cached_property
    def code_of(self) -> dict[str, dict[str, int]]:
        return {name: {value: i for i, value in enumerate(values)} for name, values in self.categories.items()}

    @cached_property
    def fx_rate(self) -> dict[str, float]:
        return {code: float(rate) for code, rate in self.catalog.fx_rates.items()}

    @cached_property
    def cross_border(self) -> dict[tuple[str, str | None], float]:
        """(psp, card-or-customer country) → 1.0 if cross-border, by ``Catalog.is_cross_border``."""
        countries = [*self.catalog.countries, None]
        return {
            (psp, country): float(self.catalog.is_cross_border(psp, country))
            for psp in self.catalog.psp_names
            for country in countries
        }

    @cached_property
    def needs_fx(self) -> dict[tuple[str, str], float]:
        """(psp, currency) → 1.0 if the PSP does not settle the currency, by ``Catalog.needs_fx``."""
        return {
            (psp, currency): float(self.catalog.needs_fx(psp, currency))
            for psp in self.catalog.psp_names
            for currency in self.catalog.fx_rates
        }


def encode(values: np.ndarray, name: str, context: RequestContext) -> np.ndarray:
    """Categorical values → float codes (positions in the spec's vocabulary; NaN when unknown)."""
    if len(values) <= 64:  # the online path: a dict lookup per value beats building a Categorical
        index = context.code_of[name]
        return np.array([index.get(value, np.nan) for value in values], dtype=float)
    codes = pd.Categorical(values, categories=context.categories[name]).codes.astype(float)
    codes[codes < 0] = np.nan
    return codes


def _pairs(left: np.ndarray, right: np.ndarray, table: Mapping[tuple, float]) -> np.ndarray:
    """Look a (left, right) pair table up row-wise, factorising first so a million rows cost little."""
    if len(left) <= 64:
        return np.array([table.get((a, b), 0.0) for a, b in zip(left, right)], dtype=float)
    frame = pd.DataFrame({"left": left, "right": right}, dtype=object)
    codes, uniques = pd.MultiIndex.from_frame(frame).factorize()
    looked_up = np.array([table.get((a, b), 0.0) for a, b in uniques], dtype=float)
    return looked_up[codes]


def amount_eur(amount: np.ndarray, currency: np.ndarray, context: RequestContext) -> np.ndarray:
    """Amount in EUR at the catalogue's dated rate (``Catalog.to_eur`` without its 4-dp rounding)."""
    rates = np.array([context.fx_rate.get(c, np.nan) for c in currency], dtype=float) if len(currency) <= 64 \
        else pd.Series(currency, dtype=object).map(context.fx_rate).to_numpy(dtype=float)
    return np.asarray(amount, dtype=float) / rates


def amount_band(amount_in_eur: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Index of the EUR amount band (0 below the first edge)."""
    return np.searchsorted(np.asarray(spec.amount_band_edges_eur), amount_in_eur, side="right").astype(float)


def local_time(timestamp_us: np.ndarray, country: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (0–23) and weekday (Monday = 0) in the country's standard time."""
    if len(country) <= 64:
        offsets = np.array([UTC_OFFSET_HOURS.get(c, 0.0) for c in country], dtype=float)
    else:
        offsets = pd.Series(country, dtype=object).map(UTC_OFFSET_HOURS).fillna(0.0).to_numpy(dtype=float)
    local_s = np.asarray(timestamp_us, dtype=np.int64) // US_PER_S + (offsets * 3600).astype(np.int64)
    hour = (local_s // 3600) % 24
    weekday = (local_s // 86400 + EPOCH_WEEKDAY) % 7
    return hour.astype(float), weekday.astype(float)


def request_features(columns: Mapping[str, np.ndarray], psp: np.ndarray, context: RequestContext) -> np.ndarray:
    """The request-time features, shape (rows, numeric + categorical) in the spec's order.

    ``columns``: transaction fields (``amount``, ``currency``, ``country``, ``payment_method``,
    ``card_network``, ``card_type``, ``issuer_country``, ``vertical``, ``type``, ``three_ds``,
    ``first_deposit``), plus ``timestamp_us`` (of the attempt), ``attempt`` and
    ``previous_decline_class``; ``psp``: the candidate PSP of each row.
    """
    spec = context.spec
    eur = amount_eur(columns["amount"], columns["currency"], context)
    issuer = np.where(pd.isna(columns["issuer_country"]), columns["country"], columns["issuer_country"])
    hour, weekday = local_time(columns["timestamp_us"], columns["country"])
    numeric = {
        "amount_eur": eur,
        "log_amount_eur": np.log1p(eur),
        "amount_band": amount_band(eur, spec),
        "cross_border": _pairs(psp, issuer, context.cross_border),
        "needs_fx": _pairs(psp, columns["currency"], context.needs_fx),
        "local_hour": hour,
        "local_weekday": weekday,
        "three_ds": np.asarray(columns["three_ds"], dtype=float),
        "first_deposit": np.asarray(columns["first_deposit"], dtype=float),
        "attempt": np.asarray(columns["attempt"], dtype=float),
    }
    sources = {"psp": psp}
    out = np.empty((len(psp), len(spec.numeric_request_features) + len(spec.categorical_features)))
    for j, name in enumerate(spec.numeric_request_features):
        out[:, j] = numeric[name]
    offset = len(spec.numeric_request_features)
    for j, name in enumerate(spec.categorical_features):
        out[:, offset + j] = encode(sources.get(name, columns.get(name)), name, context)
    return out
