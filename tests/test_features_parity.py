"""Parity: replaying a history through the online store gives the offline builder's features.

The replay is adversarial: outcomes arrive out of order (shuffled within the reporting delay), some
arrive before their own timestamp, and arrivals are delivered before queries stamped at the same
instant, while whole-second timestamps make equal timestamps common. Tolerance: 1e-9 (abs + rel).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from payroute.catalog import load_catalog
from payroute.features import DEFAULT_SPEC, OnlineFeatureStore, build_training_table
from payroute.features.synthetic import synthetic_history

TOLERANCE = 1e-9


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """A feature table as the online store's float matrix (categoricals as codes, NaN unknown)."""
    columns = []
    for name in DEFAULT_SPEC.feature_names:
        column = table[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy().astype(float)
            codes[codes < 0] = np.nan
            columns.append(codes)
        else:
            columns.append(column.to_numpy(dtype=float))
    return np.column_stack(columns)


def replay(history, catalog, reporting_delay: dt.timedelta, *, seed: int, early_share: float = 0.05):
    """Feed outcomes to a store in arrival order and query it before each attempt, like serving.

    Arrival = timestamp + U[0, reporting_delay) (or up to 30 s *before* the timestamp for
    ``early_share`` of outcomes); at equal instants arrivals are delivered before queries.
    """
    rng = np.random.default_rng(seed)
    store = OnlineFeatureStore(catalog, reporting_delay=reporting_delay)
    training = build_training_table(history, catalog, reporting_delay=reporting_delay)
    transactions = history.transactions.set_index("id", drop=False)
    attempts = history.attempts.set_index(["transaction_id", "attempt"], drop=False)
    stamp_us = (training["timestamp"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(microseconds=1)
    delay = reporting_delay // dt.timedelta(microseconds=1)
    lag = rng.uniform(0, max(delay, 1), len(training)).astype(np.int64)
    early = rng.random(len(training)) < early_share
    lag[early] = -rng.integers(1, 30_000_000, early.sum())
    # timeline entries: (time, kind, row) with kind 0 = outcome arrival, 1 = query
    timeline = sorted([(int(t) + int(l), 0, i) for i, (t, l) in enumerate(zip(stamp_us, lag))]
                      + [(int(t), 1, i) for i, t in enumerate(stamp_us)])
    previous_class = {}
    online = np.empty((len(training), len(DEFAULT_SPEC.feature_names)))
    for _, kind, i in timeline:
        tx_id, attempt = training["transaction_id"].iat[i], int(training["attempt"].iat[i])
        transaction = transactions.loc[tx_id].to_dict()
        if kind == 0:
            store.update(attempts.loc[(tx_id, attempt)].to_dict(), transaction)
        else:
            previous = attempts.loc[(tx_id, attempt - 1), "decline_class"] if attempt > 1 else None
            online[i], _ = store.features_array(
                transaction, [training["psp"].iat[i]], attempt=attempt,
                previous_decline_class=None if pd.isna(previous) else previous,
                at=training["timestamp"].iat[i],
            )
    return training, online, store


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def history(catalog):
    return synthetic_history(catalog, 1500, days=3, seed=11)


@pytest.mark.parametrize("reporting_delay", [dt.timedelta(0), dt.timedelta(minutes=20)], ids=["no-delay", "20min-delay"])
def test_online_replay_matches_offline_builder(history, catalog, reporting_delay):
    training, online, _ = replay(history, catalog, reporting_delay, seed=5)
    offline = feature_matrix(training)
    assert len(training) > 2000
    # the history really has ties: many attempts share their timestamp with another attempt
    assert training["timestamp"].duplicated().sum() > 50
    worst = np.nanmax(np.abs(online - offline) / (TOLERANCE + TOLERANCE * np.abs(offline)))
    np.testing.assert_allclose(online, offline, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True,
                               err_msg=f"worst scaled gap {worst}")
    # and the history features are not trivially at their priors
    assert np.nanstd(offline[:, -5]) > 0


def test_parity_on_simulated_history(catalog):
    """The same replay on the simulator's history (its own mix of methods, retries and incidents)."""
    simulator = pytest.importorskip("payroute.simulator")
    simulated = simulator.simulate_history(simulator.SimulationConfig(n_transactions=1500, days=2), catalog, seed=3)
    training, online, _ = replay(simulated, catalog, dt.timedelta(minutes=5), seed=9)
    np.testing.assert_allclose(online, feature_matrix(training), rtol=TOLERANCE, atol=TOLERANCE, equal_nan=True)
