"""Point in time: leakage, snapshot/restore, the scoring table and the online API surface."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from payroute.catalog import load_catalog
from payroute.contracts import AttemptOutcome, Transaction
from payroute.features import (
    DEFAULT_SPEC,
    FeatureSpec,
    InMemoryBackend,
    OnlineFeatureStore,
    build_scoring_table,
    build_training_table,
)
from payroute.features.synthetic import synthetic_history, with_outcomes_changed_after

HISTORY_FEATURES = list(DEFAULT_SPEC.history_feature_names)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def history(catalog):
    return synthetic_history(catalog, 1200, days=4, seed=21)


@pytest.mark.parametrize("reporting_delay", [dt.timedelta(0), dt.timedelta(hours=2)], ids=["no-delay", "2h-delay"])
def test_changing_outcomes_after_t_leaves_earlier_features_unchanged(history, catalog, reporting_delay):
    """Redraw every outcome stamped at or after ``t − delay``: rows before ``t`` must not move at all,
    and rows after it must (else the test could not fail). With a delay, the previous attempt's
    decline class is exempt: the router learns it synchronously, so it is request-time, not delayed."""
    t = history.attempts["timestamp"].quantile(0.5).floor("s")
    changed = with_outcomes_changed_after(history, t - reporting_delay, seed=4)
    before = build_training_table(history, catalog, reporting_delay=reporting_delay)
    after = build_training_table(changed, catalog, reporting_delay=reporting_delay)
    earlier = (before["timestamp"] < t).to_numpy()
    assert earlier.sum() > 500
    compared = [n for n in DEFAULT_SPEC.feature_names if reporting_delay == dt.timedelta(0) or n != "previous_decline_class"]
    pd.testing.assert_frame_equal(before.loc[earlier, compared], after.loc[earlier, compared], check_exact=True)
    later_gap = np.abs(before.loc[~earlier, HISTORY_FEATURES].to_numpy() - after.loc[~earlier, HISTORY_FEATURES].to_numpy())
    assert later_gap.max() > 1e-3


def test_scoring_table_has_every_eligible_psp_and_agrees_with_training_rows(history, catalog):
    scoring = build_scoring_table(history, catalog)
    training = build_training_table(history, catalog)
    first = history.attempts[history.attempts["attempt"] == 1]
    eligible, _ = catalog.eligibility_matrix(history.transactions.set_index("id").loc[first["transaction_id"]].reset_index())
    assert len(scoring) == eligible.sum()
    tried = scoring[scoring["tried_attempt"] == 1]
    assert len(tried) == len(first)
    assert scoring["label"].isna().sum() == (scoring["tried_attempt"].isna()).sum()
    # The counterfactual row of the PSP actually tried first is exactly that attempt's training row.
    merged = tried.merge(training[training["attempt"] == 1], on=["transaction_id", "psp"], suffixes=("_s", "_t"))
    assert len(merged) == len(first)
    for name in HISTORY_FEATURES + ["cross_border", "needs_fx", "amount_eur", "local_hour"]:
        np.testing.assert_allclose(merged[f"{name}_s"], merged[f"{name}_t"], rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(merged["label_s"], merged["label_t"])


def _replay_half(store, history, n):
    transactions = history.transactions.set_index("id", drop=False)
    for record in history.attempts.head(n).to_dict("records"):
        store.update(record, transactions.loc[record["transaction_id"]].to_dict())


def test_snapshot_restore_round_trip(history, catalog, tmp_path):
    """A restored store answers exactly as the original, staged (not yet visible) outcomes included."""
    delay = dt.timedelta(minutes=30)
    store = OnlineFeatureStore(catalog, reporting_delay=delay)
    _replay_half(store, history, 1000)
    transactions = history.transactions.set_index("id", drop=False)
    query = transactions.iloc[700].to_dict()
    at = history.attempts["timestamp"].iloc[999] - pd.Timedelta(minutes=10)
    store.features(query, list(catalog.psp_names), at=at)  # moves the cutoff; later outcomes stay staged
    assert store._staged, "the round trip must cover staged outcomes"
    restored = OnlineFeatureStore.restore(store.snapshot(tmp_path / "store.npz"), catalog)
    assert len(restored.backend) == len(store.backend)
    later = history.attempts["timestamp"].iloc[999] + pd.Timedelta(hours=1)
    a, _ = store.features_array(query, list(catalog.psp_names), at=later)
    b, _ = restored.features_array(query, list(catalog.psp_names), at=later)
    np.testing.assert_array_equal(a, b)
    fresh, _ = OnlineFeatureStore(catalog).features_array(query, list(catalog.psp_names), at=later)
    assert not np.allclose(a, fresh, equal_nan=True)


def test_restore_refuses_a_snapshot_of_another_spec(history, catalog, tmp_path):
    store = OnlineFeatureStore(catalog)
    path = store.snapshot(tmp_path / "store.npz")
    other = FeatureSpec(levels=DEFAULT_SPEC.levels, families=DEFAULT_SPEC.families[:1])
    with pytest.raises(ValueError, match="feature spec"):
        OnlineFeatureStore.restore(path, catalog, other)


def test_online_store_takes_contract_models_and_returns_typed_frame(catalog):
    now = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc)
    transaction = Transaction(
        id="tx1", timestamp=now, type="deposit", amount=Decimal("250.00"), currency="PLN", country="PL",
        payment_method="card", card_network="visa", card_bin="41111111", card_type="credit", issuer_country="DE",
        vertical="igaming", merchant_id="m1",
    )
    outcome = AttemptOutcome(transaction_id="tx1", attempt=1, psp="euroacq", timestamp=now - dt.timedelta(minutes=5),
                             status="declined", decline_reason="do_not_honor", latency_ms=420.0)
    store = OnlineFeatureStore(catalog, backend=InMemoryBackend())
    store.update(outcome, transaction)
    frame = store.features(transaction, ["euroacq", "globalpay"], attempt=2, previous_decline_class="soft")
    assert list(frame.columns) == list(DEFAULT_SPEC.feature_names)
    assert frame["psp"].tolist() == ["euroacq", "globalpay"]
    assert frame["previous_decline_class"].tolist() == ["soft", "soft"]
    assert frame["amount_eur"].iat[0] == pytest.approx(250.0 / 4.30)
    assert frame["needs_fx"].tolist() == [0.0, 1.0]  # euroacq settles PLN, globalpay does not
    assert frame["approval_rate__psp__1h"].iat[0] < 0.5 == frame["approval_rate__psp__1h"].iat[1]
    assert frame["local_hour"].iat[0] == 13.0  # Poland, standard time
