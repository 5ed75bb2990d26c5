"""Exponentially decayed counts: the arithmetic both paths share.

A decayed count at time ``t`` of events at times ``s < t`` with weights ``w`` is
``Σ w · exp(−(t − s) · ln 2 / h)`` for half-life ``h``. Times are microseconds since :data:`EPOCH`
(int64, so the visibility comparison ``s < cutoff`` is exact, equal timestamps included); the decay
arithmetic only ever sees differences of such times, in seconds, so no precision is lost to the
size of the timestamps.

* Online, a key's state is ``[reference time (µs), value_1 .. value_C]``: the values decayed to the
  reference time. :func:`fold` adds one event (in or out of order: decay is order-free),
  :func:`read` decays the values to the reading time.
* Offline, :func:`decayed_sums_at_queries` answers many ``(key, cutoff)`` queries at once by one sorted
  scan: per key, a cumulative sum of ``w · exp(λ (s − block start))`` inside fixed time blocks of
  about ``BLOCK_UNITS / λ`` seconds (a whole number of µs), plus the previous block's total decayed by ``exp(−BLOCK_UNITS)``.
  Blocks keep the exponentials finite (no overflow however long the history); events two or more
  blocks back weigh less than ``exp(−BLOCK_UNITS)`` and are dropped (below 1e-100 of one event).
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd

EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
US_PER_S = 1_000_000
LN2 = math.log(2.0)
BLOCK_UNITS = 250.0  # block width in units of 1/λ


def decay_rate(half_lives: np.ndarray | float) -> np.ndarray:
    """λ = ln 2 / h, per second."""
    return LN2 / np.asarray(half_lives, dtype=float)


def datetime_to_us(timestamp: dt.datetime) -> int:
    """Microseconds since :data:`EPOCH` of an aware datetime (exact integer arithmetic)."""
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return (timestamp - EPOCH) // dt.timedelta(microseconds=1)


def series_to_us(timestamps: pd.Series) -> np.ndarray:
    """Microseconds since :data:`EPOCH` of a tz-aware datetime column (int64)."""
    values = timestamps.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()
    return values + datetime_to_us(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))


def delay_us(reporting_delay: dt.timedelta) -> int:
    if reporting_delay < dt.timedelta(0):
        raise ValueError("reporting_delay must not be negative")
    return reporting_delay // dt.timedelta(microseconds=1)


# --------------------------------------------------------------------------------------------------
# Online: one key's state
# --------------------------------------------------------------------------------------------------


def new_state(event_us: int, weights: np.ndarray) -> np.ndarray:
    """A key's first state: reference time = the event's time (µs, exact in float64), values = weights."""
    state = np.empty(len(weights) + 1)
    state[0] = event_us
    state[1:] = weights
    return state


def fold(state: np.ndarray, event_us: int, weights: np.ndarray, rates: np.ndarray) -> None:
    """Add one event to a state in place. A late event (before the reference time) is decayed to
    the reference time; otherwise the values are decayed to the event and the reference moves."""
    age_s = (event_us - state[0]) / US_PER_S
    if age_s >= 0:
        state[1:] *= np.exp(-rates * age_s)
        state[1:] += weights
        state[0] = event_us
    else:
        state[1:] += weights * np.exp(rates * age_s)


def read(values: np.ndarray, reference_us: np.ndarray, at_us: int, rates: np.ndarray) -> np.ndarray:
    """State values (rows, C) kept at their reference times (µs, broadcastable) decayed to ``at_us``."""
    return values * np.exp(-rates * ((at_us - reference_us) / US_PER_S))


# --------------------------------------------------------------------------------------------------
# Offline: many keys, many queries, one sorted scan
# --------------------------------------------------------------------------------------------------


def grouped_cumsum(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Cumulative sums of ``values`` (rows, C, C-contiguous) restarting at each group, in place
    (pandas' Cython kernel reads each value before writing its sum).

    A global cumsum minus each group's offset would lose the small groups' precision next to big ones.
    """
    try:
        from pandas._libs.groupby import group_cumsum

        group_cumsum(values, values, group.astype(np.intp, copy=False), n_groups, False, True)
        return values
    except (ImportError, TypeError, ValueError):  # internal kernel moved: the public, slower route
        return pd.DataFrame(values).groupby(group, sort=False).cumsum().to_numpy()


class Timeline:
    """Events and queries on one time axis, sorted by time once and shared by every key level.

    ``event_us``: (n,) outcome timestamps; ``query_us``: (q,) query cutoffs, or None when every event
    is also a query at its own timestamp (the training table: half the rows to scan). At equal
    times queries sort before events, so an outcome stamped at a query's cutoff is not visible.
    """

    def __init__(self, event_us: np.ndarray, query_us: np.ndarray | None = None) -> None:
        self.n_events = len(event_us)
        self.self_queries = query_us is None
        self.n_queries = self.n_events if query_us is None else len(query_us)
        if query_us is None:
            self.times_us = np.asarray(event_us, dtype=np.int64)
            self.by_time = np.argsort(self.times_us, kind="stable")
        else:
            self.times_us = np.concatenate([event_us, query_us]).astype(np.int64)
            is_event = np.concatenate([np.ones(self.n_events, np.int64), np.zeros(len(query_us), np.int64)])
            self.by_time = np.argsort(self.times_us * 2 + is_event, kind="stable")


def decayed_sums_at_queries(
    timeline: Timeline, keys: np.ndarray, event_weights: np.ndarray, half_lives: np.ndarray
) -> np.ndarray:
    """For each query, the decayed sums at its cutoff of the weights of the events with the same key
    stamped strictly before it.

    ``keys``: int codes of the timeline's rows (events, then queries unless self-queried);
    ``event_weights``: (n, C); ``half_lives``: (C,) seconds. Returns (q, C).
    """
    n = timeline.n_events
    by_time_keys = keys[timeline.by_time]
    narrow = np.uint16 if keys.max(initial=0) < 2**16 else np.int64  # uint16: numpy sorts by radix
    within = np.argsort(by_time_keys.astype(narrow), kind="stable")
    order = timeline.by_time[within]
    sorted_keys = by_time_keys[within]
    sorted_us = timeline.times_us[order]
    rows = len(order)
    key_change = np.empty(rows, dtype=bool)
    key_change[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=key_change[1:])
    if timeline.self_queries:
        # An event's query sees the rows before its run of equal (key, timestamp).
        event_rows = query_rows = slice(None)  # every row is an event and its own query
        event_index = query_index = order
        run_change = key_change.copy()
        run_change[1:] |= sorted_us[1:] != sorted_us[:-1]
        prefix = np.maximum.accumulate(np.where(run_change, np.arange(rows), 0)) - 1
    else:
        is_event = order < n
        event_rows, query_rows = np.flatnonzero(is_event), np.flatnonzero(~is_event)
        event_index, query_index = order[event_rows], order[query_rows] - n
        prefix = query_rows  # a query row's own running sum holds exactly the events before it
    in_scan_order = np.empty((timeline.n_queries, len(half_lives)))
    for half_life in np.unique(half_lives):
        columns = np.flatnonzero(half_lives == half_life)
        rate = float(decay_rate(half_life))
        width_us = int(round(BLOCK_UNITS / rate * US_PER_S))
        block = sorted_us // width_us
        local = (sorted_us - block * width_us) * (rate / US_PER_S)  # exact offset from the block start
        new_group = key_change.copy()
        new_group[1:] |= block[1:] != block[:-1]
        group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        del new_group
        if timeline.self_queries:
            partial = np.ascontiguousarray(event_weights[:, columns])[event_index]
            partial *= np.exp(local)[:, None]
        else:
            partial = np.zeros((rows, len(columns)))
            partial[event_rows] = event_weights[:, columns][event_index] * np.exp(local[event_rows])[:, None]
        grouped_cumsum(partial, group, len(starts))  # in place: running sums of w·exp(λ(s − block start))
        query_group = group[query_rows]
        del group
        visible = partial[np.maximum(prefix, 0)]
        visible[prefix < starts[query_group]] = 0.0
        # Carry: the previous block's total for the same key, when that block is the adjacent one.
        adjacent = np.zeros(len(starts), dtype=bool)
        adjacent[1:] = (~key_change[starts[1:]]) & (block[starts[1:]] == block[starts[:-1]] + 1)
        carry = np.zeros((len(starts), len(columns)))
        carry[adjacent] = partial[starts[adjacent] - 1] * math.exp(-rate * width_us / US_PER_S)
        del partial, block
        visible += carry[query_group]
        visible *= np.exp(-local[query_rows])[:, None]
        in_scan_order[:, columns] = visible
        del visible, carry, local, query_group
    result = np.empty_like(in_scan_order)
    result[query_index] = in_scan_order
    return result
