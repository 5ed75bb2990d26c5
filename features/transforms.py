"""Row-wise transforms declared once and run by both paths: what an outcome adds to the counters,
the request-time features, and the key of each level.

Every function here takes columns (numpy arrays of equal length) and returns arrays, so the offline
builder calls it on a million rows and the online store on one row per candidate PSP. The online
store passes plain Python values (enum values as strings, money as float, times as microseconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _equals(values, target: str) -> np.ndarray:
    if isinstance(values, pd.Series):
        return (values == target).to_numpy(dtype=bool, na_value=False)
    return np.asarray(values, dtype=object) == target


def outcome_weights(status, decline_class, latency_ms) -> np.ndarray:
    """What each outcome adds to the counters, shape (n, len(COUNTERS)), columns in COUNTERS order.

    ``controllable`` (the PSP's approval denominator) = approved, soft-declined, error or timeout:
    a PSP is blamed only for what it controls; hard and customer declines count only in the mix.
    """
    approved = _equals(status, AttemptStatus.approved.value)
    soft = _equals(decline_class, DeclineClass.soft.value)
    error_timeout = _equals(status, AttemptStatus.error.value) | _equals(status, AttemptStatus.timeout.value)
    columns = {
        "attempts": np.ones(len(approved)),
        "controllable": approved | soft | error_timeout,
        "approved": approved,
        "soft": soft,
        "hard": _equals(decline_class, DeclineClass.hard.value),
        "customer": _equals(decline_class, DeclineClass.customer.value),
        "error_timeout": error_timeout,
        "latency_ms": np.asarray(latency_ms, dtype=float),
    }
    weights = np.empty((len(approved), len(COUNTERS)))
    for j, name in enumerate(COUNTERS):
        weights[:, j] = columns[name]
    return weights


def one_transaction(column: object) -> bool:
    """True for the online store's single-transaction column (a one-item list broadcast over the PSPs)."""
    return type(column) is list and len(column) == 1


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class RequestContext:
    """The scalar rules of the request-time transforms, from catalogue and spec, with memo tables.

    Each rule is a plain function of a few values; :func:`lookup` applies it per distinct
    combination offline and per (memoised) row online, so both paths run the same rule.
    """

    def __init__(self, catalog: Catalog, spec: FeatureSpec) -> None:
        self.catalog = catalog
        self.spec = spec
        self.categories = spec.categories(catalog.psp_names)
        self.code_of = {name: {value: i for i, value in enumerate(values)} for name, values in self.categories.items()}
        self._memo: dict[tuple, float] = {}

    def fx_rate(self, currency: str | None) -> float:
        """Units of the currency per EUR at the catalogue's dated rates (NaN when unknown)."""
        rate = None if _missing(currency) else self.catalog.fx_rates.get(currency)
        return np.nan if rate is None else float(rate)

    def cross_border(self, psp: str, issuer_country: str | None, country: str | None) -> float:
        """``Catalog.is_cross_border`` on the card's issuer country, else the customer's country."""
        if psp not in self.catalog.by_name:
            return np.nan
        where = country if _missing(issuer_country) else issuer_country
        return float(self.catalog.is_cross_border(psp, None if _missing(where) else where))

    def needs_fx(self, psp: str, currency: str) -> float:
        """``Catalog.needs_fx``: the PSP does not settle in the transaction currency."""
        return np.nan if psp not in self.catalog.by_name else float(self.catalog.needs_fx(psp, currency))

    def utc_offset_hours(self, country: str | None) -> float:
        return UTC_OFFSET_HOURS.get(country, 0.0)

    def code(self, name: str):
        """The rule 'value → position in the categorical vocabulary of ``name``' (NaN if unknown)."""
        index = self.code_of[name]
        return lambda value: index.get(value, np.nan)

    def memoised(self, rule, *values) -> float:
        key = (rule, *values)
        try:
            return self._memo[key]
        except KeyError:
            result = self._memo[key] = rule(*values)
            return result


def lookup(columns: list, rule, context: RequestContext | None = None) -> np.ndarray:
    """``rule(*row)`` for every row of the columns, as floats.

    Offline (pandas Series): the rule runs once per distinct combination of values. Online (short
    sequences): once per row, memoised in ``context``.
    """
    if not isinstance(columns[0], pd.Series):
        if context is None:
            return np.array([rule(*row) for row in zip(*columns)], dtype=float)
        return np.array([context.memoised(rule, *row) for row in zip(*columns)], dtype=float)
    combined = np.zeros(len(columns[0]), dtype=np.int64)
    for column in columns:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        combined = combined * (len(uniques) + 1) + (codes + 1)
    inverse, uniques = pd.factorize(combined)
    first = np.empty(len(uniques), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    values = [[None if _missing(v) else v for v in column.iloc[first]] for column in columns]
    return np.array([rule(*row) for row in zip(*values)], dtype=float)[inverse]


def encode(values, name: str, context: RequestContext) -> np.ndarray:
    """Categorical values → float codes (positions in the spec's vocabulary; NaN when unknown)."""
    if isinstance(values, pd.Series):
        return lookup([values], context.code(name))
    index = context.code_of[name]
    return np.array([index.get(value, np.nan) for value in values], dtype=float)


def amount_eur(amount: np.ndarray, currency, context: RequestContext) -> np.ndarray:
    """Amount in EUR at the catalogue's dated rate (``Catalog.to_eur`` without its 4-dp rounding)."""
    return np.asarray(amount, dtype=float) / lookup([currency], context.fx_rate, context)


def amount_band(amount_in_eur: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Index of the EUR amount band (0 below the first edge)."""
    edges = np.asarray(spec.amount_band_edges_eur)
    return edges.searchsorted(amount_in_eur, side="right").astype(float)  # the method: np.searchsorted's values


def local_time(timestamp_us: np.ndarray, country, context: RequestContext) -> tuple[np.ndarray, np.ndarray]:
    """Local hour (0–23) and weekday (Monday = 0) in the country's standard time."""
    offsets = lookup([country], context.utc_offset_hours, context)
    local_s = np.asarray(timestamp_us, dtype=np.int64) // US_PER_S + (offsets * 3600).astype(np.int64)
    hour = (local_s // 3600) % 24
    weekday = (local_s // 86400 + EPOCH_WEEKDAY) % 7
    return hour.astype(float), weekday.astype(float)


PER_PSP = frozenset({"cross_border", "needs_fx", "psp"})
"""The request-time features that depend on the candidate PSP; every other one depends on the transaction alone."""


def request_features(columns: Mapping[str, object], psp, context: RequestContext,
                     repeats: Sequence[int] | None = None) -> np.ndarray:
    """The request-time features, shape (rows, numeric + categorical) in the spec's order.

    ``columns``: transaction fields (``amount``, ``currency``, ``country``, ``payment_method``,
    ``card_network``, ``card_type``, ``issuer_country``, ``vertical``, ``type``, ``three_ds``,
    ``first_deposit``), plus ``timestamp_us`` (of the attempt), ``attempt`` and
    ``previous_decline_class``; ``psp``: the candidate PSP of each row. Text columns are pandas
    Series offline and short sequences online; numeric columns are arrays. Online, the transaction
    columns may hold one row, broadcast over the candidate PSPs, or (``repeats``: a batch) one entry
    per transaction, transaction i standing for the next ``repeats[i]`` rows: what depends on the
    transaction alone is computed once per transaction and repeated, what depends on the PSP per row.
    """
    spec = context.spec
    n = len(psp)
    if repeats is None:
        def rows(column):  # one transaction row against n PSPs (online)
            return column * n if one_transaction(column) and n > 1 else column
    else:
        counts = list(repeats)

        def rows(column):
            return [value for value, count in zip(column, counts) for _ in range(count)]

    eur = amount_eur(columns["amount"], columns["currency"], context)
    hour, weekday = local_time(columns["timestamp_us"], columns["country"], context)
    per_transaction = {  # one value per transaction row
        "amount_eur": eur,
        "log_amount_eur": np.log1p(eur),
        "amount_band": amount_band(eur, spec),
        "local_hour": hour,
        "local_weekday": weekday,
        "three_ds": np.asarray(columns["three_ds"], dtype=float),
        "first_deposit": np.asarray(columns["first_deposit"], dtype=float),
        "attempt": np.asarray(columns["attempt"], dtype=float),
    }

    def psp_column(name: str) -> np.ndarray:  # one value per (transaction, PSP) row: the names in PER_PSP
        if name == "cross_border":
            return lookup([psp, rows(columns["issuer_country"]), rows(columns["country"])], context.cross_border, context)
        if name == "needs_fx":
            return lookup([psp, rows(columns["currency"])], context.needs_fx, context)
        return encode(psp, "psp", context)

    names = [*spec.numeric_request_features, *spec.categorical_features]

    def transaction_column(name: str) -> np.ndarray:
        return per_transaction[name] if name in per_transaction else encode(columns[name], name, context)

    if repeats is None:  # one transaction broadcast over the rows, or (offline) one entry per row
        out = np.empty((n, len(names)), order="F")
        if one_transaction(columns["country"]):  # its row as floats, broadcast in one copy (same values)
            code_of = context.code_of
            out[:] = [
                np.nan if name in PER_PSP
                else float(per_transaction[name][0]) if name in per_transaction
                else code_of[name].get(columns[name][0], np.nan)  # = encode() of the one value
                for name in names
            ]
            for j, name in enumerate(names):
                if name in PER_PSP:
                    out[:, j] = psp_column(name)
            return out
        for j, name in enumerate(names):
            out[:, j] = psp_column(name) if name in PER_PSP else transaction_column(name)
        return out
    # a batch: the transaction-level columns once per transaction, repeated over its rows in one copy
    by_transaction = np.empty((len(counts), len(names)))
    for j, name in enumerate(names):
        if name not in PER_PSP:
            by_transaction[:, j] = transaction_column(name)
    out = np.repeat(by_transaction, counts, axis=0)
    for j, name in enumerate(names):
        if name in PER_PSP:
            out[:, j] = psp_column(name)
    return out
