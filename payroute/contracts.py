"""The shared data contract: transactions, attempt outcomes and chargebacks.

Every stage (simulator, features, training, serving, dispatcher, reporting) speaks these models. The
Parquet/Arrow schemas of the history files are derived from them (:func:`arrow_schema`), never written
twice. Field names are a public contract: operators' tools and data depend on them.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Optional

import pyarrow as pa
import pycountry
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from payroute.pan import PAN_MESSAGE, find_pan_fields

# --------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------


class TransactionType(StrEnum):
    deposit = "deposit"
    withdrawal = "withdrawal"
    affiliate_payout = "affiliate_payout"


class PaymentMethod(StrEnum):
    card = "card"
    ewallet = "ewallet"
    bank_transfer = "bank_transfer"
    crypto = "crypto"
    # Local methods
    pix = "pix"  # Brazil
    spei = "spei"  # Mexico
    pse = "pse"  # Colombia
    upi = "upi"  # India
    blik = "blik"  # Poland
    ideal = "ideal"  # Netherlands
    interac = "interac"  # Canada
    papara = "papara"  # Turkey


class CardNetwork(StrEnum):
    visa = "visa"
    mastercard = "mastercard"
    maestro = "maestro"
    amex = "amex"
    discover = "discover"
    jcb = "jcb"
    unionpay = "unionpay"
    elo = "elo"
    rupay = "rupay"
    troy = "troy"


class CardType(StrEnum):
    credit = "credit"
    debit = "debit"
    prepaid = "prepaid"


class Vertical(StrEnum):
    igaming = "igaming"
    sports_betting = "sports_betting"
    forex = "forex"
    crypto = "crypto"
    ecommerce = "ecommerce"


HIGH_RISK_VERTICALS: frozenset[Vertical] = frozenset(
    {Vertical.igaming, Vertical.sports_betting, Vertical.forex, Vertical.crypto}
)


class AttemptStatus(StrEnum):
    approved = "approved"
    declined = "declined"
    error = "error"
    timeout = "timeout"


class DeclineClass(StrEnum):
    """Who a failed attempt says something about, and whether another PSP may succeed.

    ``soft``: the PSP or its acquiring path failed; another PSP may approve (blame the PSP).
    ``hard``: never retry anywhere (stolen card, fraud).
    ``customer``: retrying elsewhere will not help (insufficient funds, expired card); says nothing
    about the PSP.
    """

    soft = "soft"
    hard = "hard"
    customer = "customer"


class DeclineReason(StrEnum):
    # soft: PSP / acquirer path
    do_not_honor = "do_not_honor"
    issuer_unavailable = "issuer_unavailable"
    try_again_later = "try_again_later"
    risk_declined = "risk_declined"
    not_permitted_for_acquirer = "not_permitted_for_acquirer"
    authentication_required = "authentication_required"
    psp_error = "psp_error"
    psp_timeout = "psp_timeout"
    # hard: never retry
    stolen_card = "stolen_card"
    lost_card = "lost_card"
    suspected_fraud = "suspected_fraud"
    pickup_card = "pickup_card"
    restricted_card = "restricted_card"
    # customer: the customer's card/account, the same at every PSP
    insufficient_funds = "insufficient_funds"
    expired_card = "expired_card"
    incorrect_cvc = "incorrect_cvc"
    invalid_account = "invalid_account"
    limit_exceeded = "limit_exceeded"
    authentication_failed = "authentication_failed"


DECLINE_CLASS: dict[DeclineReason, DeclineClass] = {
    DeclineReason.do_not_honor: DeclineClass.soft,
    DeclineReason.issuer_unavailable: DeclineClass.soft,
    DeclineReason.try_again_later: DeclineClass.soft,
    DeclineReason.risk_declined: DeclineClass.soft,
    DeclineReason.not_permitted_for_acquirer: DeclineClass.soft,
    DeclineReason.authentication_required: DeclineClass.soft,
    DeclineReason.psp_error: DeclineClass.soft,
    DeclineReason.psp_timeout: DeclineClass.soft,
    DeclineReason.stolen_card: DeclineClass.hard,
    DeclineReason.lost_card: DeclineClass.hard,
    DeclineReason.suspected_fraud: DeclineClass.hard,
    DeclineReason.pickup_card: DeclineClass.hard,
    DeclineReason.restricted_card: DeclineClass.hard,
    DeclineReason.insufficient_funds: DeclineClass.customer,
    DeclineReason.expired_card: DeclineClass.customer,
    DeclineReason.incorrect_cvc: DeclineClass.customer,
    DeclineReason.invalid_account: DeclineClass.customer,
    DeclineReason.limit_exceeded: DeclineClass.customer,
    DeclineReason.authentication_failed: DeclineClass.customer,
}

CARD_METHODS: frozenset[PaymentMethod] = frozenset({PaymentMethod.card})

ISO_CURRENCIES: frozenset[str] = frozenset(c.alpha_3 for c in pycountry.currencies)
ISO_COUNTRIES: frozenset[str] = frozenset(c.alpha_2 for c in pycountry.countries)

REPORTING_CURRENCY = "EUR"

# --------------------------------------------------------------------------------------------------
# Base model: strict, PAN-screened, no input echoed in errors
# --------------------------------------------------------------------------------------------------


class ContractModel(BaseModel):
    """Base of every inbound contract: unknown fields refused, PANs refused, inputs never echoed."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        str_strip_whitespace=True,
        use_enum_values=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_pans(cls, data: Any, info: ValidationInfo) -> Any:
        """Screen every string and integer inside the input. With a fresh :func:`screening_context` the
        outermost model screens the whole tree once (naming the full path) and the models nested in it,
        already covered, skip their own screen."""
        context = info.context
        screened = isinstance(context, dict) and context.get(_PAN_SCREENED, False)
        if isinstance(data, dict) and not screened:
            fields = list(find_pan_fields(data))
            if fields:
                raise PydanticCustomError(
                    "pan_detected",
                    "field '{field}' " + PAN_MESSAGE,
                    {"field": fields[0]},
                )
            if isinstance(context, dict) and _PAN_SCREENED in context:
                context[_PAN_SCREENED] = True
        return data


_PAN_SCREENED = "payroute.pan_screened"


def screening_context() -> dict[str, bool]:
    """A validation context for one ``model_validate(_json)`` call of a contract model: its outermost
    model screens the whole input for card numbers once and nested models skip theirs. Use a new one
    per call (it records that the call's input was screened)."""
    return {_PAN_SCREENED: False}


def _iso_currency(value: str) -> str:
    code = value.upper()
    if code not in ISO_CURRENCIES:
        raise PydanticCustomError("currency", "unknown ISO 4217 currency code")
    return code


def _iso_country(value: str) -> str:
    code = value.upper()
    if code not in ISO_COUNTRIES:
        raise PydanticCustomError("country", "unknown ISO 3166-1 alpha-2 country code")
    return code


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("timezone", "timestamp must carry a UTC offset (e.g. 'Z')")
    return value.astimezone(dt.timezone.utc)


Money = Annotated[Decimal, Field(gt=0, lt=Decimal(10) ** 12, max_digits=20, decimal_places=8)]
NonNegativeMoney = Annotated[Decimal, Field(ge=0, lt=Decimal(10) ** 12, max_digits=20, decimal_places=8)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
OpaqueHash = Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_\-+/=]+$")]
CardBin = Annotated[str, Field(pattern=r"^\d{6,8}$")]
PspName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$")]


# --------------------------------------------------------------------------------------------------
# Transaction
# --------------------------------------------------------------------------------------------------


class Transaction(ContractModel):
    """A routing request: one payment to place with some PSP."""

    id: Identifier
    timestamp: dt.datetime
    type: TransactionType
    amount: Money
    currency: str
    country: str
    payment_method: PaymentMethod
    card_network: Optional[CardNetwork] = None
    card_bin: Optional[CardBin] = None
    card_type: Optional[CardType] = None
    issuer_country: Optional[str] = None
    vertical: Vertical
    merchant_id: Identifier
    first_deposit: bool = False
    three_ds: bool = False
    customer_id: Optional[OpaqueHash] = None
    card_fingerprint: Optional[OpaqueHash] = None

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        return _iso_currency(value)

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)

    @field_validator("country", "issuer_country")
    @classmethod
    def _check_country(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _iso_country(value)

    @model_validator(mode="after")
    def _card_fields(self) -> "Transaction":
        if self.payment_method in CARD_METHODS:
            missing = [
                name
                for name in ("card_network", "card_bin", "card_type", "issuer_country")
                if getattr(self, name) is None
            ]
            if missing:
                raise PydanticCustomError(
                    "card_fields",
                    "field '{field}' is required when payment_method is 'card'",
                    {"field": missing[0]},
                )
        return self

    @property
    def is_card(self) -> bool:
        return self.payment_method in CARD_METHODS


# --------------------------------------------------------------------------------------------------
# Attempt outcome and chargeback
# --------------------------------------------------------------------------------------------------


class AttemptOutcome(ContractModel):
    """What happened when one PSP was tried for one transaction (one row of ``attempts.parquet``)."""

    transaction_id: Identifier
    attempt: Annotated[int, Field(ge=1, le=20)]
    psp: PspName
    timestamp: dt.datetime
    status: AttemptStatus
    decline_code: Optional[Annotated[str, Field(max_length=32)]] = None
    decline_reason: Optional[DeclineReason] = None
    decline_class: Optional[DeclineClass] = None
    latency_ms: Annotated[float, Field(ge=0, le=600_000)]
    fee: NonNegativeMoney = Decimal(0)
    fx_cost: NonNegativeMoney = Decimal(0)
    fee_eur: NonNegativeMoney = Decimal(0)
    fx_cost_eur: NonNegativeMoney = Decimal(0)
    propensity: Optional[Annotated[float, Field(gt=0, le=1)]] = None

    @field_validator("timestamp")
    @classmethod
    def _check_timestamp(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _consistent_decline(self) -> "AttemptOutcome":
        if self.status == AttemptStatus.approved:
            if self.decline_reason is not None or self.decline_class is not None:
                raise PydanticCustomError(
                    "decline_on_approval",
                    "field 'decline_reason' must be empty when status is 'approved'",
                )
            return self
        if self.decline_reason is None:
            raise PydanticCustomError(
                "missing_decline_reason",
                "field 'decline_reason' is required when status is '{status}'",
                {"status": self.status.value},
            )
        expected = DECLINE_CLASS[self.decline_reason]
        if self.decline_class is None:
            object.__setattr__(self, "decline_class", expected)
        elif self.decline_class != expected:
            raise PydanticCustomError(
                "decline_class",
                "field 'decline_class' is '{given}' but decline_reason '{reason}' is '{expected}'",
                {"given": self.decline_class.value, "reason": self.decline_reason.value, "expected": expected.value},
            )
        return self


class Chargeback(ContractModel):
    """A dispute that reversed an approved payment, days after it."""

    transaction_id: Identifier
    date: dt.date
    amount: Money
    currency: str
    reason: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        return _iso_currency(value)


# --------------------------------------------------------------------------------------------------
# Errors in a machine-readable form that never echoes input
# --------------------------------------------------------------------------------------------------


class FieldError(BaseModel):
    """One validation problem: which field, a stable code, and a message (never the input value)."""

    field: str
    code: str
    message: str


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Turn a pydantic error into ``FieldError`` rows; the field named by a model-level check wins."""
    rows: list[FieldError] = []
    for item in error.errors(include_input=False, include_url=False, include_context=True):
        location = ".".join(str(part) for part in item.get("loc", ()))
        context = item.get("ctx") or {}
        named = context.get("field")
        if named:
            location = f"{location}.{named}" if location else str(named)
        if prefix:
            location = f"{prefix}.{location}" if location else prefix
        rows.append(FieldError(field=location or "<root>", code=item["type"], message=item["msg"]))
    return rows


# --------------------------------------------------------------------------------------------------
# Arrow / Parquet schemas, derived from the models
# --------------------------------------------------------------------------------------------------

MONEY_ARROW_TYPE = pa.decimal128(18, 4)

_SCALAR_ARROW: dict[Any, pa.DataType] = {
    str: pa.string(),
    bool: pa.bool_(),
    int: pa.int32(),
    float: pa.float64(),
    Decimal: MONEY_ARROW_TYPE,
    dt.datetime: pa.timestamp("us", tz="UTC"),
    dt.date: pa.date32(),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """Map a field annotation to (arrow type, nullable)."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _arrow_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner, _ = _arrow_type(args[0])
        return inner, True
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return pa.string(), nullable
    return _SCALAR_ARROW[annotation], nullable


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a contract model: its fields in order, money as decimal128(18, 4)."""
    fields = []
    for name, info in model.model_fields.items():
        arrow_type, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=nullable or not info.is_required()))
    return pa.schema(fields)


TRANSACTIONS_SCHEMA = arrow_schema(Transaction)
ATTEMPTS_SCHEMA = arrow_schema(AttemptOutcome)
CHARGEBACKS_SCHEMA = arrow_schema(Chargeback)

MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("amount",),
    "attempts": ("fee", "fx_cost", "fee_eur", "fx_cost_eur"),
    "chargebacks": ("amount",),
}
