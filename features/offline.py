"""Offline interpreter of the feature spec: history → point-in-time training and scoring tables.

Point-in-time rule (the same in the online store): a row at time ``t`` sees exactly the outcomes
with ``timestamp < t − reporting_delay``. An outcome stamped exactly at the cutoff is NOT visible
(equal timestamps are resolved against the outcome), so an attempt never sees its own outcome nor
any outcome stamped at the same microsecond. Request-time fields (amount, attempt number, the
previous attempt's decline class) are known at decision time and are not delayed.

Everything is a sorted scan per key level (:func:`payroute.features.decay.decayed_sums_before`);
there is no Python loop over rows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from payroute.catalog import Catalog
from payroute.features.decay import US_PER_S, Timeline, decay_rate, decayed_sums_at_queries, delay_us, series_to_us
from payroute.features.derive import ShrinkagePlan
from payroute.features.spec import COUNTERS, DEFAULT_SPEC, FeatureSpec
from payroute.features.transforms import TRANSACTION_FIELDS, RequestContext, outcome_weights, request_features
from payroute.history import History

_CHUNK_ROWS = 250_000
_TEXT_FIELDS = ("currency", "country", "payment_method", "card_network", "card_bin", "card_type",
                "issuer_country", "vertical", "type")


def _categorical(series: pd.Series) -> pd.Series:
    """Text as a pandas categorical: transforms then run once per distinct value, keys are codes."""
    return series if isinstance(series.dtype, pd.CategoricalDtype) else series.astype("category")


def attempt_rows(history: History) -> pd.DataFrame:
    """Attempts joined with their transaction, sorted by time (then transaction, attempt), with the
    previous attempt's decline class of the same transaction and ``timestamp_us``."""
    transactions = history.transactions[["id", *TRANSACTION_FIELDS]].rename(columns={"id": "transaction_id"})
    transactions = transactions.assign(**{name: _categorical(transactions[name]) for name in _TEXT_FIELDS})
    attempts = history.attempts[
        ["transaction_id", "attempt", "psp", "timestamp", "status", "decline_class", "latency_ms", "propensity"]
    ]
    attempts = attempts.assign(**{name: _categorical(attempts[name]) for name in ("psp", "status", "decline_class")})
    rows = attempts.merge(transactions, on="transaction_id", how="inner", validate="many_to_one")
    rows["timestamp_us"] = series_to_us(rows["timestamp"])
    rows = rows.sort_values(["timestamp_us", "transaction_id", "attempt"], kind="stable").reset_index(drop=True)
    by_attempt = rows.sort_values(["transaction_id", "attempt"], kind="stable")
    same_transaction = by_attempt["transaction_id"].eq(by_attempt["transaction_id"].shift()).to_numpy()
    previous = by_attempt["decline_class"].shift()
    previous[~same_transaction] = np.nan
    rows["previous_decline_class"] = previous.reindex(rows.index)
    return rows


def _columns(frame: pd.DataFrame) -> dict[str, object]:
    """The columns ``request_features`` reads: text as categorical Series, numbers as arrays."""
    columns: dict[str, object] = {name: frame[name] for name in (*_TEXT_FIELDS, "previous_decline_class")}
    for name in ("amount", "three_ds", "first_deposit", "timestamp_us", "attempt"):
        columns[name] = frame[name].to_numpy()
    return columns


def _codes(events: pd.Series | np.ndarray, queries: pd.Series | np.ndarray | None) -> np.ndarray:
    """Joint integer codes of one field over events then queries (missing values get their own)."""
    if queries is None:
        codes, _ = pd.factorize(events, use_na_sentinel=True)
        return codes.astype(np.int64) + 1
    if isinstance(events, pd.Series) and isinstance(queries, pd.Series):
        both = union_categoricals([pd.Categorical(events), pd.Categorical(queries)], ignore_order=True)
        return both.codes.astype(np.int64) + 1
    codes, _ = pd.factorize(np.concatenate([np.asarray(events), np.asarray(queries)]), use_na_sentinel=True)
    return codes + 1


def _level_keys(fields: list[np.ndarray]) -> np.ndarray:
    """One compact int64 code per distinct combination of the fields' codes."""
    combined = np.zeros(len(fields[0]), dtype=np.int64)
    for codes in fields:
        combined = combined * (int(codes.max(initial=0)) + 1) + codes
        combined, _ = pd.factorize(combined)
    return combined.astype(np.int64)


def history_matrix(
    events: pd.DataFrame,
    queries: dict[str, object],
    query_us: np.ndarray,
    context: RequestContext,
    reporting_delay: dt.timedelta,
) -> np.ndarray:
    """Raw decayed counters (queries, plan.raw_width) of every level, point in time.

    ``events``: :func:`attempt_rows` with ``amount_band``; ``queries``: the key fields of each query
    (``psp``, ``amount_band`` and the transaction fields), ``query_us``: each query's time.
    """
    spec = context.spec
    plan = ShrinkagePlan(spec)
    delay = delay_us(reporting_delay)
    weights = outcome_weights(events["status"], events["decline_class"], events["latency_ms"].to_numpy(dtype=float))
    self_queries = queries is events and delay == 0
    timeline = Timeline(events["timestamp_us"].to_numpy(), None if self_queries else np.asarray(query_us) - delay)
    field_codes: dict[str, np.ndarray] = {}
    raw = np.empty((len(query_us), plan.raw_width), order="F")
    for level_name in spec.level_order:
        layout = spec.layouts.get(level_name)
        if not layout:
            continue
        fields = ("psp", *spec.level(level_name).fields)
        for name in fields:
            if name not in field_codes:
                field_codes[name] = _codes(events[name], None if self_queries else queries[name])
        keys = _level_keys([field_codes[name] for name in fields])
        half_lives = np.array([h for _, h in layout])
        level_weights = weights[:, [COUNTERS.index(counter) for counter, _ in layout]]
        sums = decayed_sums_at_queries(timeline, keys, level_weights, half_lives)
        start = plan.raw_offsets[(level_name, *layout[0])]
        raw[:, start : start + len(layout)] = sums * np.exp(-decay_rate(half_lives) * delay / US_PER_S)
    return raw


def _feature_matrix(raw: np.ndarray, request: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Request features and history features side by side (rows, len(feature_names)), column-major."""
    plan = ShrinkagePlan(spec)
    n_request = request.shape[1]
    out = np.empty((len(raw), len(spec.feature_names)), order="F")
    out[:, :n_request] = request
    for start in range(0, len(raw), _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        out[rows, n_request:] = plan.history_features(raw[rows])
    return out


def _frame(identity: dict[str, object], matrix: np.ndarray, context: RequestContext) -> pd.DataFrame:
    """Identity columns, then every feature; categoricals as pandas categoricals of fixed vocabulary."""
    spec = context.spec
    columns: dict[str, object] = dict(identity)
    for j, name in enumerate(spec.feature_names):
        if name in spec.categorical_features:
            codes = np.nan_to_num(matrix[:, j], nan=-1).astype(np.int32)
            columns[name] = pd.Categorical.from_codes(codes, categories=list(context.categories[name]))
        elif name == "attempt" and "attempt" in identity:
            continue
        else:
            columns[name] = matrix[:, j]
    return pd.DataFrame(columns, copy=False)


def build_training_table(
    history: History,
    catalog: Catalog,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    reporting_delay: dt.timedelta = dt.timedelta(0),
) -> pd.DataFrame:
    """One row per attempt: ``transaction_id, attempt, psp, timestamp, label`` (1 if approved) and
    ``spec.feature_names``, each history feature computed from outcomes stamped strictly before
    ``timestamp − reporting_delay``. Rows are sorted by timestamp (then transaction, attempt)."""
    context = RequestContext(catalog, spec)
    events = attempt_rows(history)
    columns = _columns(events)
    request = request_features(columns, events["psp"], context)
    events["amount_band"] = request[:, spec.numeric_request_features.index("amount_band")]
    raw = history_matrix(events, events, events["timestamp_us"].to_numpy(), context, reporting_delay)
    matrix = _feature_matrix(raw, request, spec)
    del raw, request
    identity = {
        "transaction_id": events["transaction_id"].to_numpy(),
        "attempt": events["attempt"].to_numpy(),
        "timestamp": events["timestamp"].array,
        "label": (events["status"] == "approved").to_numpy(dtype=np.int8),
    }
    return _frame(identity, matrix, context)


def build_scoring_table(
    history: History,
    catalog: Catalog,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    reporting_delay: dt.timedelta = dt.timedelta(0),
) -> pd.DataFrame:
    """Counterfactual rows for evaluation: for each transaction's first attempt, one row per PSP the
    catalogue deems eligible, with the features that PSP would have had (attempt 1, no previous
    decline, at the first attempt's time). ``label`` is the outcome where that PSP was tried for the
    transaction (its first try there; NaN otherwise), ``tried_attempt`` which attempt that was,
    ``propensity`` as logged."""
    context = RequestContext(catalog, spec)
    events = attempt_rows(history)
    request_events = request_features(_columns(events), events["psp"], context)
    events["amount_band"] = request_events[:, spec.numeric_request_features.index("amount_band")]
    del request_events
    first = events.sort_values(["transaction_id", "attempt"], kind="stable").drop_duplicates("transaction_id")
    first = first.sort_values(["timestamp_us", "transaction_id"], kind="stable").reset_index(drop=True)
    eligible, _ = catalog.eligibility_matrix(first[list(TRANSACTION_FIELDS)])
    row, column = np.nonzero(eligible)
    queries = first.iloc[row].reset_index(drop=True)
    queries["psp"] = pd.Categorical.from_codes(column, categories=list(catalog.psp_names))
    queries["attempt"] = 1
    queries["previous_decline_class"] = pd.Series(np.full(len(queries), None, dtype=object))
    request = request_features(_columns(queries), queries["psp"], context)
    queries["amount_band"] = request[:, spec.numeric_request_features.index("amount_band")]
    raw = history_matrix(events, queries, queries["timestamp_us"].to_numpy(), context, reporting_delay)
    matrix = _feature_matrix(raw, request, spec)
    del raw, request
    tried = (events.sort_values("attempt", kind="stable")
             .drop_duplicates(["transaction_id", "psp"])
             .astype({"psp": object})
             .set_index(["transaction_id", "psp"]))
    psp = np.asarray(catalog.psp_names, dtype=object)[column]
    outcome = tried.reindex(pd.MultiIndex.from_arrays([queries["transaction_id"].to_numpy(), psp]))
    label = np.where(outcome["status"].isna(), np.nan, (outcome["status"] == "approved").astype(float))
    identity = {
        "transaction_id": queries["transaction_id"].to_numpy(),
        "timestamp": queries["timestamp"].array,
        "label": label,
        "tried_attempt": outcome["attempt"].to_numpy(dtype=float),
        "propensity": outcome["propensity"].to_numpy(dtype=float),
    }
    return _frame(identity, matrix, context)
