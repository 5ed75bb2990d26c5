"""Batch lookup: ``features_array_many`` equals ``features_array`` called on each transaction in turn.

Two stores get the same outcomes (a reporting delay, so many are still staged when the batch comes);
one answers a batch, the other one query at a time. The batch spans timestamps between staged
outcomes, so the point-in-time cut-off must advance item by item for the answers to agree. Exact.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from payroute.catalog import load_catalog
from payroute.features import OnlineFeatureStore
from payroute.features.synthetic import synthetic_history

DELAY = dt.timedelta(hours=2)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def history(catalog):
    return synthetic_history(catalog, 600, days=1, seed=5)


def fed_store(catalog, history, learned: int) -> OnlineFeatureStore:
    """A store that has taken the outcomes of the first ``learned`` transactions (in time order)."""
    store = OnlineFeatureStore(catalog, reporting_delay=DELAY)
    transactions = history.transactions.sort_values("timestamp").set_index("id", drop=False)
    known = set(transactions.index[:learned])
    for attempt in history.attempts.sort_values("timestamp").to_dict("records"):
        if attempt["transaction_id"] in known:
            store.update(attempt, transactions.loc[attempt["transaction_id"]].to_dict())
    return store


def test_batch_lookup_equals_one_by_one(catalog, history):
    ordered = history.transactions.sort_values("timestamp").to_dict("records")
    learned = 450
    batch = ordered[learned - 60 : learned + 40]  # queries interleaved with staged outcomes, then later ones
    names = list(catalog.psp_names)
    items = [(transaction, names[i % 5 :]) for i, transaction in enumerate(batch)]
    one_by_one_store, batch_store = fed_store(catalog, history, learned), fed_store(catalog, history, learned)
    staged_before = len(batch_store._staged)

    expected = [one_by_one_store.features_array(transaction, psps)[0] for transaction, psps in items]
    blocks, columns = batch_store.features_array_many(items)

    assert staged_before > len(batch_store._staged) > 0  # the batch folded some staged outcomes, not all
    assert columns == one_by_one_store.spec.feature_names
    assert [block.shape for block in blocks] == [block.shape for block in expected]
    for block, reference in zip(blocks, expected):
        np.testing.assert_array_equal(block, reference)
    assert batch_store._cutoff_us == one_by_one_store._cutoff_us
    assert len(batch_store._staged) == len(one_by_one_store._staged)
    assert sum(np.isfinite(block[:, -1]).sum() for block in blocks) > 0
    assert batch_store.features_array_many([]) == ([], batch_store.spec.feature_names)


def test_fields_of_a_model_are_its_declared_fields_as_plain_values():
    """``_fields`` reads a pydantic model's __dict__: the declared fields, in order, enums as values,
    Decimals as floats, datetimes as they are — what reading each declared field gives."""
    from decimal import Decimal
    from enum import Enum

    from payroute.contracts import AttemptOutcome, Transaction
    from payroute.features.online import _fields
    from payroute.serving.schemas import EXAMPLE_TRANSACTION

    def reference(value):
        return value.value if isinstance(value, Enum) else float(value) if isinstance(value, Decimal) else value

    transaction = Transaction.model_validate({**EXAMPLE_TRANSACTION, "three_ds": True})
    outcome = AttemptOutcome.model_validate({
        "transaction_id": "t-1", "attempt": 1, "psp": "euroacq", "timestamp": "2026-11-02T12:00:00Z",
        "status": "declined", "decline_reason": "do_not_honor", "decline_class": "soft", "latency_ms": 120,
    })
    for model in (transaction, outcome):
        expected = {name: reference(getattr(model, name)) for name in type(model).model_fields}
        got = _fields(model)
        assert list(got) == list(expected) and got == expected
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
