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
from dataclasses import dataclass
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from payroute.catalog import Catalog
from payroute.features.decay import US_PER_S, Timeline, decay_rate, decayed_sums_at_queries, delay_us, series_to_us
from payroute.features.derive import ShrinkagePlan
from payroute.features.spec import COUNTERS, DEFAULT_SPEC, FeatureSpec
from payroute.features.transforms import TRANSACTION_FIELDS, RequestContext, outcome_weights, request_features
from payroute.history import History

_CHUNK_ROWS = 250_000
_WORKERS = min(2, os.cpu_count() or 1)
_TEXT_FIELDS = ("currency", "country", "payment_method", "card_network", "card_bin", "card_type",
                "issuer_country", "vertical", "type")


def _categorical(series: pd.Series) -> pd.Series:
    """Text as a pandas categorical: transforms then run once per distinct value, keys are codes."""
    return series if isinstance(series.dtype, pd.CategoricalDtype) else series.astype("category")


def _positions(values: pd.Series, index: pd.Series) -> np.ndarray:
    """Row of ``index`` holding each value (-1 when absent): a hash join on the ids."""
    try:
        found = pc.index_in(pa.array(values.array), value_set=pa.array(index.array))
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pd.Index(index).get_indexer(values)


def attempt_rows(history: History) -> pd.DataFrame:
    """Attempts joined with their transaction (attempts of unknown transactions are dropped), sorted
    by time, then the transaction's position in the history, then attempt number; with
    ``timestamp_us`` and the previous attempt's decline class of the same transaction."""
    transactions, attempts = history.transactions, history.attempts
    position = _positions(attempts["transaction_id"], transactions["id"])
    known = np.flatnonzero(position >= 0)
    position = position[known]
    timestamp_us = series_to_us(attempts["timestamp"]).take(known)
    attempt = attempts["attempt"].to_numpy().take(known)
    decline_class = _categorical(attempts["decline_class"]).take(known)
    # previous attempt's decline class, found in (transaction, attempt) order
    by_attempt = np.lexsort((attempt, position))
    codes = decline_class.cat.codes.to_numpy()[by_attempt]
    previous = np.full(len(codes), -1, dtype=codes.dtype)
    previous[1:] = np.where(position[by_attempt][1:] == position[by_attempt][:-1], codes[:-1], -1)
    previous_codes = np.empty_like(previous)
    previous_codes[by_attempt] = previous
    order = np.lexsort((attempt, position, timestamp_us))
    rows = known[order]
    columns: dict[str, object] = {
        name: _categorical(attempts[name]).array.take(rows) if name in ("psp", "status", "decline_class")
        else attempts[name].array.take(rows)
        for name in ("transaction_id", "psp", "timestamp", "status", "decline_class", "latency_ms", "propensity")
    }
    columns["attempt"] = attempt[order]
    columns["timestamp_us"] = timestamp_us[order]
    columns["previous_decline_class"] = pd.Categorical.from_codes(previous_codes[order],
                                                                  categories=decline_class.cat.categories)
    for name in TRANSACTION_FIELDS:
        column = _categorical(transactions[name]) if name in _TEXT_FIELDS else transactions[name]
        columns[name] = column.array.take(position[order])
    return pd.DataFrame(columns)


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


@dataclass
class ScanInputs:
    """What the history scans need, extracted so the joined frames can be freed before scanning."""

    timeline: Timeline
    weights: np.ndarray  # (events, len(COUNTERS))
    field_codes: dict[str, np.ndarray]  # per key field: codes of the timeline's rows
    delay_us: int


def scan_inputs(events: pd.DataFrame, queries: pd.DataFrame | None, query_us: np.ndarray | None,
                spec: FeatureSpec, reporting_delay: dt.timedelta) -> ScanInputs:
    """``events``: :func:`attempt_rows` with ``amount_band``; ``queries``: the key fields of each query
    (``psp``, ``amount_band`` and the transaction fields) with their times, or None when the events
    are the queries (the training table)."""
    delay = delay_us(reporting_delay)
    weights = outcome_weights(events["status"], events["decline_class"], events["latency_ms"].to_numpy(dtype=float))
    if queries is None:
        queries, query_us = events, events["timestamp_us"].to_numpy()
    self_queries = queries is events and delay == 0
    timeline = Timeline(events["timestamp_us"].to_numpy(), None if self_queries else np.asarray(query_us) - delay)
    field_codes = {
        name: _codes(events[name], None if self_queries else queries[name])
        for name in {"psp", *(f for level in spec.levels for f in level.fields)}
    }
    return ScanInputs(timeline, weights, field_codes, delay)


def history_features(inputs: ScanInputs, spec: FeatureSpec, out: np.ndarray) -> None:
    """Write the history features of every query, point in time, into ``out`` (queries, history).

    Each level is a sorted scan (two at a time: numpy and pandas' kernels release the GIL), shrunk
    as soon as it is done (its parents are done before it), so only a couple of levels' counters
    are ever held.
    """
    plan = ShrinkagePlan(spec)

    def level_counters(level_name: str) -> np.ndarray:
        layout = spec.layouts[level_name]
        keys = _level_keys([inputs.field_codes[name] for name in ("psp", *spec.level(level_name).fields)])
        half_lives = np.array([h for _, h in layout])
        level_weights = inputs.weights[:, [COUNTERS.index(counter) for counter, _ in layout]]
        sums = decayed_sums_at_queries(inputs.timeline, keys, level_weights, half_lives)
        if inputs.delay_us:  # the sums are at the cutoff; age them to the query time
            sums *= np.exp(-decay_rate(half_lives) * inputs.delay_us / US_PER_S)
        return sums

    levels = [name for name in spec.level_order if spec.layouts.get(name)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        pending = [pool.submit(level_counters, levels[0])]
        for i, level_name in enumerate(levels):
            if i + 1 < len(levels):
                pending.append(pool.submit(level_counters, levels[i + 1]))
            counters = pending[i].result()
            pending[i] = None
            for start in range(0, len(counters), _CHUNK_ROWS):
                rows = slice(start, start + _CHUNK_ROWS)
                plan.level_features(level_name, counters[rows], out[rows])
            del counters


def request_width(spec: FeatureSpec) -> int:
    return len(spec.numeric_request_features) + len(spec.categorical_features)


def _feature_matrix(request: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """The output matrix (rows, len(feature_names)), column-major, request features filled in."""
    out = np.empty((len(request), len(spec.feature_names)), order="F")
    out[:, : request.shape[1]] = request
    return out


def _frame(identity: dict[str, object], matrix: np.ndarray, context: RequestContext) -> pd.DataFrame:
    """Identity columns, then every feature; categoricals as pandas categoricals of fixed vocabulary."""
    spec = context.spec
    columns: dict[str, object] = dict(identity)
    for j, name in enumerate(spec.feature_names):
        if name in spec.categorical_features:
            codes = np.nan_to_num(matrix[:, j], nan=-1).astype(np.int32)
            columns[name] = pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(list(context.categories[name])))
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
    matrix = _feature_matrix(request, spec)
    del request
    identity = {
        "transaction_id": events["transaction_id"].array,
        "attempt": events["attempt"].to_numpy(),
        "timestamp": events["timestamp"].array,
        "label": (events["status"] == "approved").to_numpy(dtype=np.int8),
    }
    inputs = scan_inputs(events, None, None, spec, reporting_delay)
    del events
    history_features(inputs, spec, out=matrix[:, request_width(spec):])
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
    matrix = _feature_matrix(request, spec)
    del request
    inputs = scan_inputs(events, queries, queries["timestamp_us"].to_numpy(), spec, reporting_delay)
    history_features(inputs, spec, out=matrix[:, request_width(spec):])
    del inputs
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
