"""The data contract: good inputs accepted, each bad field named, PANs refused and never echoed."""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
from collections.abc import Mapping
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from payroute.contracts import (
    ATTEMPTS_SCHEMA,
    CHARGEBACKS_SCHEMA,
    DECLINE_CLASS,
    TRANSACTIONS_SCHEMA,
    AttemptOutcome,
    Chargeback,
    DeclineClass,
    DeclineReason,
    Transaction,
    field_errors,
)
from payroute.pan import _leaf_texts, contains_pan, holds_pan, luhn_valid

TEST_PAN = "4111111111111111"  # published scheme test numbers only (Visa 4111…1111, Mastercard 5555…4444,
# Amex 3782…0005): never a real card

CARD_TRANSACTION = {
    "id": "tx-1",
    "timestamp": "2026-11-01T10:00:00Z",
    "type": "deposit",
    "amount": "50.00",
    "currency": "EUR",
    "country": "DE",
    "payment_method": "card",
    "card_network": "visa",
    "card_bin": "411111",
    "card_type": "debit",
    "issuer_country": "DE",
    "vertical": "igaming",
    "merchant_id": "casino-1",
    "first_deposit": True,
    "three_ds": True,
}

PIX_TRANSACTION = {
    "id": "tx-2",
    "timestamp": "2026-11-01T10:00:00+02:00",
    "type": "withdrawal",
    "amount": 120,
    "currency": "brl",
    "country": "br",
    "payment_method": "pix",
    "vertical": "sports_betting",
    "merchant_id": "book-7",
}

ATTEMPT = {
    "transaction_id": "tx-1",
    "attempt": 1,
    "psp": "euroacq",
    "timestamp": "2026-11-01T10:00:01Z",
    "status": "declined",
    "decline_code": "51",
    "decline_reason": "insufficient_funds",
    "latency_ms": 812.5,
    "fee": "0.02",
    "fee_eur": "0.02",
    "propensity": 0.4,
}


def errors_of(model, payload) -> list:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    return field_errors(caught.value)


def test_good_transactions_are_normalised():
    card = Transaction.model_validate(CARD_TRANSACTION)
    assert card.amount == Decimal("50.00") and card.timestamp.tzinfo == dt.timezone.utc
    pix = Transaction.model_validate(PIX_TRANSACTION)
    assert (pix.currency, pix.country) == ("BRL", "BR")
    assert pix.timestamp == dt.datetime(2026, 11, 1, 8, tzinfo=dt.timezone.utc)
    assert pix.card_bin is None and not pix.is_card


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"amount": "0"}, "amount", "greater_than"),
        ({"amount": "-5"}, "amount", "greater_than"),
        ({"amount": "abc"}, "amount", "decimal_parsing"),
        ({"currency": "XYZ"}, "currency", "currency"),
        ({"country": "QQ"}, "country", "country"),
        ({"issuer_country": "ZZ"}, "issuer_country", "country"),
        ({"card_bin": "4111"}, "card_bin", "string_pattern_mismatch"),
        ({"card_bin": "41111a"}, "card_bin", "string_pattern_mismatch"),
        ({"card_bin": None}, "card_bin", "card_fields"),
        ({"card_network": None}, "card_network", "card_fields"),
        ({"type": "refund"}, "type", "enum"),
        ({"payment_method": "cheque"}, "payment_method", "enum"),
        ({"timestamp": "2026-11-01T10:00:00"}, "timestamp", "timezone"),
        ({"unexpected": 1}, "unexpected", "extra_forbidden"),
        ({"customer_id": "short"}, "customer_id", "string_too_short"),
    ],
)
def test_bad_transaction_field_is_named(change, field, code):
    rows = errors_of(Transaction, {**CARD_TRANSACTION, **change})
    assert [(r.field, r.code) for r in rows] == [(field, code)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("card_bin", TEST_PAN),
        ("customer_id", TEST_PAN),
        ("merchant_id", "4111-1111-1111-1111"),
        ("id", "order 5555 5555 5555 4444"),
        ("card_fingerprint", "378282246310005"),
    ],
)
def test_pan_refused_named_and_never_echoed(field, value):
    with pytest.raises(ValidationError) as caught:
        Transaction.model_validate({**CARD_TRANSACTION, field: value})
    rows = field_errors(caught.value)
    assert [(r.field, r.code) for r in rows] == [(field, "pan_detected")]
    digits = value.replace("-", "").replace(" ", "")
    for text in (str(caught.value), repr(caught.value), json.dumps([r.model_dump() for r in rows])):
        assert digits not in text.replace("-", "").replace(" ", "")
        assert value not in text


def test_pan_in_outcome_refused():
    rows = errors_of(AttemptOutcome, {**ATTEMPT, "decline_code": TEST_PAN})
    assert [(r.field, r.code) for r in rows] == [("decline_code", "pan_detected")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TEST_PAN, True),
        ("4111111111111112", False),  # fails Luhn
        ("411111", False),  # a BIN
        ("12345678", False),
        ("tx-20261101-000123456789", False),  # 12 digits: too short for a PAN
        ("5555 5555 5555 4444", True),
    ],
)
def test_pan_detection(text, expected):
    assert contains_pan(text) is expected


def test_luhn():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_outcome_decline_class_derived_and_checked():
    outcome = AttemptOutcome.model_validate(ATTEMPT)
    assert outcome.decline_class == DeclineClass.customer
    rows = errors_of(AttemptOutcome, {**ATTEMPT, "decline_class": "soft"})
    assert rows[0].code == "decline_class"
    rows = errors_of(AttemptOutcome, {**ATTEMPT, "status": "error", "decline_reason": None})
    assert rows[0].code == "missing_decline_reason"
    rows = errors_of(AttemptOutcome, {**ATTEMPT, "status": "approved"})
    assert rows[0].code == "decline_on_approval"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attempt": 0}, "attempt"),
        ({"propensity": 0}, "propensity"),
        ({"propensity": 1.5}, "propensity"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"fee": "-0.01"}, "fee"),
        ({"psp": "Not A Psp"}, "psp"),
    ],
)
def test_bad_outcome_field_is_named(change, field):
    assert errors_of(AttemptOutcome, {**ATTEMPT, **change})[0].field == field


def test_every_decline_reason_has_a_class():
    assert set(DECLINE_CLASS) == set(DeclineReason)
    assert DECLINE_CLASS[DeclineReason.stolen_card] == DeclineClass.hard
    assert DECLINE_CLASS[DeclineReason.expired_card] == DeclineClass.customer
    assert DECLINE_CLASS[DeclineReason.psp_error] == DeclineClass.soft


def test_chargeback_contract():
    chargeback = Chargeback.model_validate(
        {"transaction_id": "tx-1", "date": "2026-11-20", "amount": "50", "currency": "eur", "reason": "fraud"}
    )
    assert chargeback.currency == "EUR"


def test_arrow_schemas_follow_models():
    assert TRANSACTIONS_SCHEMA.names == list(Transaction.model_fields)
    assert ATTEMPTS_SCHEMA.names == [
        "transaction_id", "attempt", "psp", "timestamp", "status", "decline_code", "decline_reason",
        "decline_class", "latency_ms", "fee", "fx_cost", "fee_eur", "fx_cost_eur", "propensity",
    ]
    assert CHARGEBACKS_SCHEMA.names == ["transaction_id", "date", "amount", "currency", "reason"]
    assert ATTEMPTS_SCHEMA.field("fee").type == pa.decimal128(18, 4)
    assert ATTEMPTS_SCHEMA.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert ATTEMPTS_SCHEMA.field("propensity").nullable
    assert not ATTEMPTS_SCHEMA.field("psp").nullable


@pytest.mark.parametrize(
    "text",
    [
        "cu902879565808611f",  # digits inside a hex customer hash (Luhn-valid run)
        "d-4111111111111111x",  # embedded in an alphanumeric token
        "1111111111111117",  # Luhn-valid but no card-scheme industry identifier
    ],
)
def test_hash_material_is_not_a_pan(text):
    assert not contains_pan(text)


@pytest.mark.parametrize("text", ["card=4111111111111111", "pan:5555-5555-5555-4444;", "tx_378282246310005"])
def test_delimited_pan_is_found(text):
    assert contains_pan(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3782 822463 10005", True),  # Amex as printed (4-6-5)
        ("4111 1111 1111 1111", True),
        ("41111111-1111-1111-1111-111111111111", False),  # a UUID-shaped id, not a card grouping
        ("12345678-4111-1111-1111-111111111111", False),
        ("4111-11111111-1111", False),  # not a printed card grouping
    ],
)
def test_card_groupings(text, expected):
    assert contains_pan(text) is expected


def test_uuid4_ids_are_never_refused():
    import uuid

    rng = __import__("random").Random(5)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20_000)]
    # Force digit-only groups too: the shape that used to be joined across dashes.
    ids += [f"{rng.randrange(10**7, 10**8)}-{rng.randrange(1000, 10**4)}-4{rng.randrange(100, 1000)}-"
            f"{rng.randrange(8000, 9000)}-{rng.randrange(10**11, 10**12)}" for _ in range(20_000)]
    assert not [i for i in ids if contains_pan(i)]


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [
        (["4111", "1111", "1111", "1111"], False),  # four groups in four fields: no PAN in any one of them
        (["411111", "4111111111111111"], True),
        (["tx-1", "4111 1111 1111 1111", "DE"], True),
        (["4111-1111-1111-", "1111"], False),  # a grouping split across fields is not joined
        (["a4111111111111111", "x"], False),
        ([4111111111111111, "b"], True),
        ([True, "378282246310005"], True),
        (["", "5555555555554444z"], False),
    ],
)
def test_one_scan_screen_equals_screening_each_field(leaves, expected):
    assert any(contains_pan(str(leaf)) for leaf in leaves if not isinstance(leaf, bool)) is expected
    assert holds_pan({"nested": {f"f{i}": leaf for i, leaf in enumerate(leaves)}, "list": leaves}) is expected


def _reference_leaf_texts(value, out):
    """The screen's leaves as first defined: ABC checks, any depth."""
    if isinstance(value, Mapping):
        for item in value.values():
            _reference_leaf_texts(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _reference_leaf_texts(item, out)
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(str(value))
    return out


class _Network(str, enum.Enum):
    VISA = "4111111111111111"


class _Code(enum.IntEnum):
    BIG = 4111111111111111


_leaves = st.one_of(
    st.text(max_size=12), st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.sampled_from([_Network.VISA, _Code.BIG, "4111111111111111", Decimal("4111111111111111")]),
)
_json_like = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=3).map(types.MappingProxyType),
    ),
    max_leaves=20,
)


@given(_json_like)
def test_leaf_walk_by_exact_type_equals_the_reference_walk(value):
    assert _leaf_texts(value, []) == _reference_leaf_texts(value, [])


def test_one_screen_per_call_still_refuses_a_pan_at_any_depth():
    """With a fresh screening context the outermost model screens the whole batch once (nested models skip
    theirs): a PAN in any transaction is refused, named by its full path, never echoed; each call screens
    anew, and a transaction validated on its own still screens itself."""
    from payroute.contracts import screening_context
    from payroute.serving.schemas import RankBatchRequest

    clean = {"transactions": [{**CARD_TRANSACTION, "id": f"t-{i}"} for i in range(3)]}
    assert len(RankBatchRequest.model_validate_json(json.dumps(clean), context=screening_context()).transactions) == 3
    dirty = {"transactions": [*clean["transactions"][:2], {**CARD_TRANSACTION, "id": "t-2", "merchant_id": TEST_PAN}]}
    with pytest.raises(ValidationError) as caught:
        RankBatchRequest.model_validate_json(json.dumps(dirty), context=screening_context())
    rows = field_errors(caught.value)
    assert [r.code for r in rows] == ["pan_detected"] and "transactions[2].merchant_id" in rows[0].message
    assert TEST_PAN not in str(caught.value)
    with pytest.raises(ValidationError):
        Transaction.model_validate({**CARD_TRANSACTION, "merchant_id": TEST_PAN}, context=screening_context())


def test_nested_models_skip_their_screen_only_inside_a_screened_call():
    """The skip is real (one screen per call) and needs the context: without one, every model screens."""
    from unittest import mock

    from payroute import contracts
    from payroute.contracts import screening_context
    from payroute.serving.schemas import RankBatchRequest

    body = json.dumps({"transactions": [{**CARD_TRANSACTION, "id": f"t-{i}"} for i in range(4)]})
    with mock.patch.object(contracts, "find_pan_fields", wraps=contracts.find_pan_fields) as screen:
        RankBatchRequest.model_validate_json(body, context=screening_context())
        assert screen.call_count == 1
        RankBatchRequest.model_validate_json(body)
        assert screen.call_count == 1 + 5
