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

from payroute.catalog import Catalog
from payroute.features.decay import decay_rate, decayed_sums_before, delay_us, scan_order, series_to_us
from payroute.features.derive import ShrinkagePlan
from payroute.features.spec import COUNTERS, DEFAULT_SPEC, FeatureSpec
from payroute.features.transforms import TRANSACTION_FIELDS, RequestContext, outcome_weights, request_features
from payroute.history import History

_CHUNK_ROWS = 250_000


def _objects(series: pd.Series) -> np.ndarray:
    """A column as an object array with None for missing values (the form both paths share)."""
    if series.dtype == bool or pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy()
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)


def attempt_rows(history: History) -> pd.DataFrame:
    """Attempts joined with their transaction, sorted by time, with the previous attempt's decline
    class of the same transaction."""
    transactions = history.transactions[["id", *TRANSACTION_FIELDS]].rename(columns={"id": "transaction_id"})
    attempts = history.attempts[
        ["transaction_id", "attempt", "psp", "timestamp", "status", "decline_class", "latency_ms", "propensity"]
    ]
    rows = attempts.merge(transactions, on="transaction_id", how="inner", validate="many_to_one")
    rows = rows.sort_values(["transaction_id", "attempt"], kind="stable").reset_index(drop=True)
    same_transaction = rows["transaction_id"].eq(rows["transaction_id"].shift())
    previous = rows["decline_class"].shift()
    rows["previous_decline_class"] = previous.where(same_transaction & previous.notna(), None)
    rows["timestamp_us"] = series_to_us(rows["timestamp"])
    order = np.lexsort((rows["attempt"].to_numpy(), rows["transaction_id"].to_numpy(dtype=object).astype(str),
                        rows["timestamp_us"].to_numpy()))
    return rows.iloc[order].reset_index(drop=True)


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    names = (*TRANSACTION_FIELDS, "timestamp_us", "attempt", "previous_decline_class")
    return {name: _objects(frame[name]) for name in names}


def _level_codes(values: list[np.ndarray]) -> np.ndarray:
    """One int64 code per distinct combination of the given columns (missing is its own value)."""
    combined = np.zeros(len(values[0]), dtype=np.int64)
    for column in values:
        codes, uniques = pd.factorize(pd.Series(column, dtype=object), use_na_sentinel=True)
        combined = combined * (len(uniques) + 1) + (codes + 1)
        combined, _ = pd.factorize(combined)
    return combined.astype(np.int64)


def history_matrix(
    events: pd.DataFrame,
    query_columns: dict[str, np.ndarray],
    query_psp: np.ndarray,
    query_us: np.ndarray,
    query_bands: np.ndarray,
    context: RequestContext,
    reporting_delay: dt.timedelta,
) -> np.ndarray:
    """Raw decayed counters (queries, plan.raw_width) of every level, point in time.

    ``events``: :func:`attempt_rows` (with ``amount_band``); the queries are given column-wise.
    """
    spec = context.spec
    plan = ShrinkagePlan(spec)
    delay = delay_us(reporting_delay)
    n_events, n_queries = len(events), len(query_psp)
    weights = outcome_weights(_objects(events["status"]), _objects(events["decline_class"]),
                              events["latency_ms"].to_numpy(dtype=float))
    times = np.concatenate([events["timestamp_us"].to_numpy(), query_us - delay])
    is_event = np.concatenate([np.ones(n_events, bool), np.zeros(n_queries, bool)])
    event_columns = {"psp": _objects(events["psp"]), "amount_band": events["amount_band"].to_numpy(),
                     **{name: _objects(events[name]) for name in TRANSACTION_FIELDS}}
    query_all = {**query_columns, "psp": query_psp, "amount_band": query_bands}
    raw = np.empty((n_queries, plan.raw_width))
    for level_name in spec.level_order:
        layout = spec.layouts.get(level_name)
        if not layout:
            continue
        fields = ("psp", *spec.level(level_name).fields)
        keys = _level_codes([np.concatenate([event_columns[f], query_all[f]]) for f in fields])
        half_lives = np.array([h for _, h in layout])
        level_weights = np.zeros((n_events + n_queries, len(layout)))
        level_weights[:n_events] = weights[:, [COUNTERS.index(counter) for counter, _ in layout]]
        sums = decayed_sums_before(keys, times, level_weights, half_lives, scan_order(keys, times, is_event))
        start = plan.raw_offsets[(level_name, *layout[0])]
        raw[:, start : start + len(layout)] = sums[n_events:] * np.exp(-decay_rate(half_lives) * delay / 1e6)
    return raw


def _feature_matrix(raw: np.ndarray, request: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    plan = ShrinkagePlan(spec)
    n_request = request.shape[1]
    out = np.empty((len(raw), len(spec.feature_names)))
    out[:, :n_request] = request
    for start in range(0, len(raw), _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        plan.history_features(raw[rows], out=out[rows, n_request:])
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
    return pd.DataFrame(columns)


def build_training_table(
    history: History,
    catalog: Catalog,
    spec: FeatureSpec = DEFAULT_SPEC,
    *,
    reporting_delay: dt.timedelta = dt.timedelta(0),
) -> pd.DataFrame:
    """One row per attempt: ``transaction_id, attempt, psp, timestamp, label`` (1 if approved) and
    ``spec.feature_names``, each computed from outcomes stamped before ``timestamp − reporting_delay``.
    Rows are sorted by timestamp (then transaction, attempt)."""
    context = RequestContext(catalog, spec)
    events = attempt_rows(history)
    columns = _columns(events)
    psp = _objects(events["psp"])
    request = request_features(columns, psp, context)
    events["amount_band"] = request[:, spec.numeric_request_features.index("amount_band")]
    raw = history_matrix(events, columns, psp, events["timestamp_us"].to_numpy(), events["amount_band"].to_numpy(),
                         context, reporting_delay)
    matrix = _feature_matrix(raw, request, spec)
    del raw
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
    decline). ``label`` is the outcome where that PSP was tried for the transaction (its first try;
    NaN otherwise), ``tried_attempt`` which attempt that was, ``propensity`` as logged."""
    context = RequestContext(catalog, spec)
    events = attempt_rows(history)
    request_events = request_features(_columns(events), _objects(events["psp"]), context)
    events["amount_band"] = request_events[:, spec.numeric_request_features.index("amount_band")]
    first = events[events["attempt"] == events.groupby("transaction_id")["attempt"].transform("min")]
    first = first.drop_duplicates("transaction_id").reset_index(drop=True)
    eligible, _ = catalog.eligibility_matrix(first[list(TRANSACTION_FIELDS)])
    row, column = np.nonzero(eligible)
    queries = first.iloc[row].reset_index(drop=True)
    psp = np.asarray(catalog.psp_names, dtype=object)[column]
    columns = _columns(queries)
    columns["attempt"] = np.ones(len(queries), dtype=np.int64)
    columns["previous_decline_class"] = np.full(len(queries), None, dtype=object)
    request = request_features(columns, psp, context)
    raw = history_matrix(events, columns, psp, queries["timestamp_us"].to_numpy(),
                         request[:, spec.numeric_request_features.index("amount_band")], context, reporting_delay)
    matrix = _feature_matrix(raw, request, spec)
    tried = (events.sort_values("attempt", kind="stable")
             .drop_duplicates(["transaction_id", "psp"])
             .set_index(["transaction_id", "psp"]))
    index = pd.MultiIndex.from_arrays([queries["transaction_id"].to_numpy(), psp])
    outcome = tried.reindex(index)
    label = np.where(outcome["status"].isna(), np.nan, (outcome["status"] == "approved").astype(float))
    identity = {
        "transaction_id": queries["transaction_id"].to_numpy(),
        "timestamp": queries["timestamp"].array,
        "label": label,
        "tried_attempt": outcome["attempt"].to_numpy(dtype=float),
        "propensity": outcome["propensity"].to_numpy(dtype=float),
    }
    return _frame(identity, matrix, context)
