"""Exponentially decayed counts: the arithmetic both paths share.

A decayed count at time ``t`` of events at times ``s < t`` with weights ``w`` is
``Σ w · exp(−(t − s) · ln 2 / h)`` for half-life ``h``. Times are microseconds since :data:`EPOCH`
(int64, so the visibility comparison ``s < cutoff`` is exact, equal timestamps included) and
seconds since :data:`EPOCH` (float64) for the decay arithmetic.

* Online, a key's state is ``[reference time, value_1 .. value_C]``: the values decayed to the
  reference time. :func:`fold` adds one event (in or out of order: decay is order-free),
  :func:`read` decays the values to the reading time.
* Offline, :func:`decayed_sums_before` answers many ``(key, cutoff)`` queries at once by one sorted
  scan: per key, a cumulative sum of ``w · exp(λ (s − block start))`` inside fixed time blocks of
  ``BLOCK_UNITS / λ`` seconds, plus the previous block's total decayed by ``exp(−BLOCK_UNITS)``.
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


def new_state(event_s: float, weights: np.ndarray) -> np.ndarray:
    """A key's first state: reference time = the event's time, values = its weights."""
    state = np.empty(len(weights) + 1)
    state[0] = event_s
    state[1:] = weights
    return state


def fold(state: np.ndarray, event_s: float, weights: np.ndarray, rates: np.ndarray) -> None:
    """Add one event to a state in place. A late event (before the reference time) is decayed to
    the reference time; otherwise the values are decayed to the event and the reference moves."""
    reference = state[0]
    if event_s >= reference:
        state[1:] *= np.exp(-rates * (event_s - reference))
        state[1:] += weights
        state[0] = event_s
    else:
        state[1:] += weights * np.exp(-rates * (reference - event_s))


def read(states: np.ndarray, at_s: float, rates: np.ndarray) -> np.ndarray:
    """Values of states (rows ``[reference, values...]``) decayed to time ``at_s``; shape (rows, C)."""
    age = at_s - states[:, :1]
    return states[:, 1:] * np.exp(-rates * age)


# --------------------------------------------------------------------------------------------------
# Offline: many keys, many queries, one sorted scan
# --------------------------------------------------------------------------------------------------


def scan_order(keys: np.ndarray, times_us: np.ndarray, is_event: np.ndarray) -> np.ndarray:
    """Order rows by key, then time, with queries before events at equal times (strictly before)."""
    return np.lexsort((is_event, times_us, keys))


def decayed_sums_before(
    keys: np.ndarray,
    times_us: np.ndarray,
    weights: np.ndarray,
    half_lives: np.ndarray,
    order: np.ndarray,
) -> np.ndarray:
    """For every row, the decayed sums (at that row's time) of the weights of rows sorted before it
    with the same key.

    ``keys``, ``times_us``: (n,) rows of events and queries; ``weights``: (n, C), zero on query rows;
    ``half_lives``: (C,) seconds; ``order``: :func:`scan_order` of the rows. Returns (n, C) in the
    original row order.
    """
    sorted_keys = keys[order]
    seconds = times_us[order] / US_PER_S
    result = np.empty(weights.shape, dtype=float)
    key_change = np.empty(len(order), dtype=bool)
    key_change[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=key_change[1:])
    for half_life in np.unique(half_lives):
        columns = np.flatnonzero(half_lives == half_life)
        rate = float(decay_rate(half_life))
        units = seconds * rate
        block = np.floor(units / BLOCK_UNITS)
        local = units - block * BLOCK_UNITS  # in [0, BLOCK_UNITS)
        new_group = key_change.copy()
        new_group[1:] |= block[1:] != block[:-1]
        group = np.cumsum(new_group) - 1
        scaled = weights[order][:, columns] * np.exp(local)[:, None]
        partial = pd.DataFrame(scaled).groupby(group, sort=False).cumsum().to_numpy()
        # Carry: the previous block's total for the same key, when that block is the adjacent one.
        starts = np.flatnonzero(new_group)
        ends = np.append(starts[1:], len(order)) - 1
        totals = partial[ends]
        carry = np.zeros_like(totals)
        adjacent = np.zeros(len(starts), dtype=bool)
        adjacent[1:] = (~key_change[starts[1:]]) & (block[starts[1:]] == block[starts[:-1]] + 1)
        carry[adjacent] = totals[np.flatnonzero(adjacent) - 1] * math.exp(-BLOCK_UNITS)
        values = (partial + carry[group]) * np.exp(-local)[:, None]
        result[np.ix_(order, columns)] = values
    return result
