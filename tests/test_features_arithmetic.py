"""Decay arithmetic against hand-computed values, shrinkage on sparse keys, and the blame rule.

Both interpreters (offline builder, online store) are checked against the same hand numbers.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payroute.catalog import load_catalog
from payroute.features import DEFAULT_SPEC, OnlineFeatureStore, build_training_table
from payroute.features.decay import Timeline, decayed_sums_at_queries, fold, new_state, read
from payroute.features.derive import shrink
from payroute.features.spec import half_life_label
from payroute.history import History

START = pd.Timestamp("2026-11-02 00:00:00", tz="UTC")
K = 10.0  # approval_rate strength in DEFAULT_SPEC
PRIOR = 0.5


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def card_transaction(i: int, timestamp: pd.Timestamp, card_bin: str = "411111") -> dict:
    return {
        "id": f"t{i}", "timestamp": timestamp, "type": "deposit", "amount": 100.0, "currency": "EUR",
        "country": "DE", "payment_method": "card", "card_network": "visa", "card_bin": card_bin,
        "card_type": "debit", "issuer_country": "DE", "vertical": "ecommerce", "merchant_id": "m1",
        "first_deposit": False, "three_ds": False, "customer_id": None, "card_fingerprint": None,
    }


def outcome(i: int, timestamp: pd.Timestamp, status: str, reason: str | None = None, decline_class: str | None = None,
            psp: str = "euroacq", attempt: int = 1, latency_ms: float = 300.0) -> dict:
    return {
        "transaction_id": f"t{i}", "attempt": attempt, "psp": psp, "timestamp": timestamp, "status": status,
        "decline_code": None, "decline_reason": reason, "decline_class": decline_class, "latency_ms": latency_ms,
        "fee": 0.0, "fx_cost": 0.0, "fee_eur": 0.0, "fx_cost_eur": 0.0, "propensity": 0.5,
    }


def tiny_history(rows: list[tuple[dict, dict]]) -> History:
    return History(pd.DataFrame([t for t, _ in rows]), pd.DataFrame([o for _, o in rows]), pd.DataFrame())


def online_row(catalog, rows, query_transaction, psp="euroacq", **kwargs):
    store = OnlineFeatureStore(catalog)
    for transaction, event in rows:
        store.update(event, transaction)
    frame = store.features(query_transaction, [psp], **kwargs)
    return frame.iloc[0]


HOUR = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def three_outcomes():
    """Approved at 0 h and 1 h, soft decline at 2 h, a customer decline and a hard decline at 2.5 h,
    then the queried transaction at 3 h."""
    rows = [
        (card_transaction(0, START), outcome(0, START, "approved")),
        (card_transaction(1, START + HOUR), outcome(1, START + HOUR, "approved")),
        (card_transaction(2, START + 2 * HOUR), outcome(2, START + 2 * HOUR, "declined", "do_not_honor", "soft")),
        (card_transaction(3, START + 2.5 * HOUR), outcome(3, START + 2.5 * HOUR, "declined", "insufficient_funds", "customer")),
        (card_transaction(4, START + 2.5 * HOUR), outcome(4, START + 2.5 * HOUR, "declined", "stolen_card", "hard")),
        (card_transaction(5, START + 3 * HOUR), outcome(5, START + 3 * HOUR, "approved")),
    ]
    return rows


def hand_values() -> dict[str, float]:
    """By hand, at 3 h with a 1 h half-life: approvals 2^-3 + 2^-2; controllable adds the soft decline
    2^-1; the customer and hard declines (2^-0.5 each) are not the PSP's fault."""
    approved = 2**-3 + 2**-2
    controllable = approved + 2**-1
    psp_rate = (approved + K * PRIOR) / (controllable + K)
    return {
        "volume_controllable__psp__1h": controllable,
        "approval_rate__psp__1h": psp_rate,
        # every finer level saw the same outcomes, so each shrinks toward the level above it
        "approval_rate__psp_country__1h": (approved + K * psp_rate) / (controllable + K),
        "hard_share__psp__1d": (2**-(0.5 / 24) + 0.02 * 10) / (sum(2**-(h / 24) for h in (3, 2, 1, 0.5, 0.5)) + 10),
    }


@pytest.mark.parametrize("feature", list(hand_values()))
@pytest.mark.parametrize("path", ["offline", "online"])
def test_decayed_features_match_hand_computation(catalog, three_outcomes, feature, path):
    if path == "offline":
        table = build_training_table(tiny_history(three_outcomes), catalog)
        row = table.iloc[-1]
        assert row["transaction_id"] == "t5"
    else:
        row = online_row(catalog, three_outcomes[:-1], three_outcomes[-1][0])
    assert row[feature] == pytest.approx(hand_values()[feature], rel=1e-12)


def test_outcome_stamped_at_the_query_time_is_not_visible(catalog):
    """Ties: the attempt at 10:00:00 does not see another outcome stamped 10:00:00, only earlier ones."""
    rows = [
        (card_transaction(0, START), outcome(0, START, "approved")),
        (card_transaction(1, START + HOUR), outcome(1, START + HOUR, "approved")),
        (card_transaction(2, START + HOUR), outcome(2, START + HOUR, "approved")),
    ]
    table = build_training_table(tiny_history(rows), catalog).set_index("transaction_id")
    assert table.loc["t1", "volume_controllable__psp__1h"] == pytest.approx(0.5, rel=1e-12)
    assert table.loc["t2", "volume_controllable__psp__1h"] == pytest.approx(0.5, rel=1e-12)
    store = OnlineFeatureStore(catalog)
    for transaction, event in rows:  # everything delivered before the query
        store.update(event, transaction)
    online = store.features(rows[2][0], ["euroacq"])
    assert online["volume_controllable__psp__1h"].iat[0] == pytest.approx(0.5, rel=1e-12)


def test_reporting_delay_hides_recent_outcomes(catalog, three_outcomes):
    """With a 45-minute delay the query at 3 h sees outcomes before 2:15 h only: the 2 h soft decline,
    not the 2.5 h declines, and everything is aged to 3 h."""
    table = build_training_table(tiny_history(three_outcomes), catalog, reporting_delay=dt.timedelta(minutes=45))
    row = table.iloc[-1]
    assert row["volume_controllable__psp__1h"] == pytest.approx(2**-3 + 2**-2 + 2**-1, rel=1e-12)
    assert row["hard_share__psp__1d"] == pytest.approx(0.02 * 10 / (sum(2 ** -(h / 24) for h in (3, 2, 1)) + 10))


@pytest.mark.parametrize(
    ("numerator", "denominator", "parent_rate", "strength", "expected"),
    [
        (0.0, 0.0, 0.8, 10.0, 0.8),  # never seen: the parent's rate
        (3.0, 3.0, 0.6, 10.0, 9.0 / 13.0),  # 3 of 3 does not claim 100 %
        (0.0, 3.0, 0.6, 10.0, 6.0 / 13.0),  # 0 of 3 does not claim 0 %
        (900.0, 1000.0, 0.5, 10.0, 905.0 / 1010.0),  # busy keys speak for themselves
    ],
)
def test_shrink_table(numerator, denominator, parent_rate, strength, expected):
    assert shrink(numerator, denominator, parent_rate, strength) == pytest.approx(expected, rel=1e-12)


def test_sparse_bin_is_shrunk_toward_its_network_issuer_rate(catalog):
    """A BIN approved 3 times of 3 sits between its parent's rate and 1, much nearer the parent."""
    rows = []
    for i in range(40):  # a busy BIN approving half of the time
        status = ("approved", None, None) if i % 2 else ("declined", "do_not_honor", "soft")
        rows.append((card_transaction(i, START + i * pd.Timedelta(minutes=1), "400000"),
                     outcome(i, START + i * pd.Timedelta(minutes=1), *status)))
    for i in range(40, 43):  # a sparse BIN, three approvals
        rows.append((card_transaction(i, START + i * pd.Timedelta(minutes=1), "499999"),
                     outcome(i, START + i * pd.Timedelta(minutes=1), "approved")))
    query = card_transaction(99, START + HOUR, "499999")
    rows.append((query, outcome(99, START + HOUR, "approved")))
    row = build_training_table(tiny_history(rows), catalog).iloc[-1]
    parent = row["approval_rate__psp_network_issuer__180d"]
    sparse = row["approval_rate__psp_bin__180d"]
    assert 0.45 < parent < 0.6
    assert parent < sparse < parent + 3 / 13
    assert row["volume_controllable__psp_bin__180d"] == pytest.approx(3.0, rel=1e-3)


def test_online_state_folds_late_events_exactly():
    """fold/read: events folded in any order give Σ w·2^(−age/h) at read time."""
    rates = np.log(2) / np.array([60.0, 3600.0])
    times = np.array([0.0, 30.0, 10.0, 120.0, 5.0])  # seconds, out of order
    state = new_state(int(times[0] * 1e6), np.ones(2))
    for t in times[1:]:
        fold(state, int(t * 1e6), np.ones(2), rates)
    value = read(state[1:], state[0], 300_000_000, rates)
    expected = [sum(2 ** (-(300.0 - t) / h) for t in times) for h in (60.0, 3600.0)]
    np.testing.assert_allclose(value, expected, rtol=1e-13)


@pytest.mark.parametrize("self_queries", [True, False])
def test_offline_scan_matches_brute_force_across_many_time_blocks(self_queries):
    """The blocked scan against the definition, on a history far longer than a block (half-life 60 s
    over 20 days: hundreds of blocks), with ties. Seed 3; tolerance 1e-9 relative + 1e-12 absolute."""
    rng = np.random.default_rng(3)
    n = 3000
    event_us = np.sort(rng.integers(0, 20 * 86400, n)) * 1_000_000 + 10**14  # whole seconds: ties
    event_us[rng.random(n) < 0.3] += 0  # ties come from whole seconds already
    keys = rng.integers(0, 5, n)
    weights = rng.random((n, 3))
    half_lives = np.array([60.0, 3600.0, 14 * 86400.0])
    if self_queries:
        timeline, query_us, query_keys = Timeline(event_us), event_us, keys
        all_keys = keys
    else:
        query_us = rng.choice(event_us, 2000) + rng.integers(-2, 3, 2000) * 1_000_000
        query_keys = rng.integers(0, 5, 2000)
        timeline, all_keys = Timeline(event_us, query_us), np.concatenate([keys, query_keys])
    got = decayed_sums_at_queries(timeline, all_keys, weights, half_lives)
    age_s = (query_us[:, None] - event_us[None, :]) / 1e6
    visible = (age_s > 0) & (query_keys[:, None] == keys[None, :])
    for c, h in enumerate(half_lives):
        expected = (np.where(visible, np.exp2(-np.where(visible, age_s, 0) / h), 0.0) * weights[None, :, c]).sum(axis=1)
        np.testing.assert_allclose(got[:, c], expected, rtol=1e-9, atol=1e-12)
    assert visible.any(axis=1).mean() > 0.9
    assert math.isfinite(got.max())


def test_spec_declarations_are_consistent():
    spec = DEFAULT_SPEC
    assert len(set(spec.feature_names)) == len(spec.feature_names)
    assert set(spec.categorical_features) <= set(spec.feature_names)
    assert {"psp", "country", "payment_method", "card_network", "card_type", "vertical", "currency",
            "previous_decline_class"} <= set(spec.categorical_features)
    assert spec.version == type(spec)(levels=spec.levels, families=spec.families).version
    changed = type(spec)(levels=spec.levels, families=spec.families[:-1])
    assert changed.version != spec.version


def test_bin_evidence_from_two_months_ago_keeps_most_of_its_weight(catalog):
    """An issuer's affinity to a PSP is learned per BIN from outcomes spread over months: 10 outcomes
    60 days old still count 10·2^(−60/180) ≈ 7.9 at the slowest half-life (a 14-day half-life kept
    0.5). Both interpreters, hand number."""
    old = START - pd.Timedelta(days=60)
    rows = [(card_transaction(i, old + i * pd.Timedelta(minutes=1), "455555"),
             outcome(i, old + i * pd.Timedelta(minutes=1), "approved")) for i in range(10)]
    query = card_transaction(99, START, "455555")
    rows.append((query, outcome(99, START, "approved")))
    slowest = half_life_label(max(DEFAULT_SPEC.families[0].half_lives))
    expected = sum(2 ** (-(60 * 86400.0 - i * 60.0) / (180 * 86400.0)) for i in range(10))
    offline = build_training_table(tiny_history(rows), catalog).iloc[-1]
    online = online_row(catalog, rows[:-1], query)
    for row in (offline, online):
        assert row[f"volume_controllable__psp_bin__{slowest}"] == pytest.approx(expected, rel=1e-6)
        assert expected > 7.5


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 9))
def test_history_features_in_stage_order_equal_the_stages_one_by_one(seed, rows):
    """``ShrinkagePlan.history_features`` gathers every stage's counters at once and writes the rates in
    stage order; its values are, bit for bit, those of applying each stage in turn (``_apply``)."""
    from payroute.features.derive import ShrinkagePlan, _apply

    plan = ShrinkagePlan(DEFAULT_SPEC)
    data = np.random.default_rng(seed)
    raw = data.uniform(0, 50, (rows, plan.raw_width)) * (data.random((rows, plan.raw_width)) < 0.7)
    reference = np.empty((rows, plan.n_rates + len(plan.volume_columns)))
    for stage in plan.stages:
        _apply(stage, raw, reference)
    reference[:, plan.n_rates:] = raw[:, plan.volume_columns]
    assert plan.history_features(raw).tobytes() == np.ascontiguousarray(reference).tobytes()
    assert any(stage.parent_mode == "all" for stage in plan.stages)  # parents read from earlier stages
