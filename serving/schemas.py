"""The scoring service's public request and response models (the HTTP contract of /rank, /feedback).

Requests reuse the shared contract models (:class:`~payroute.contracts.Transaction`,
:class:`~payroute.contracts.AttemptOutcome`): PAN-screened, unknown fields refused, input never echoed
in errors. Field names here are a public contract: the dispatcher and operators' tools depend on them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from payroute.contracts import AttemptOutcome, ContractModel, FieldError, Identifier, Transaction

MAX_BATCH = 256
"""Most transactions one /rank_batch request may carry."""

MAX_BODY_BYTES = 512 * 1024
"""Largest request body accepted (a full batch of transactions is about 150 KB)."""

# One example, used as the API's documented example and as the tests' input.
EXAMPLE_TRANSACTION: dict[str, Any] = {
    "id": "tx-example-0001",
    "timestamp": "2026-11-02T10:15:00Z",
    "type": "deposit",
    "amount": "120.00",
    "currency": "EUR",
    "country": "DE",
    "payment_method": "card",
    "card_network": "visa",
    "card_bin": "411111",
    "card_type": "debit",
    "issuer_country": "DE",
    "vertical": "igaming",
    "merchant_id": "merchant-7",
    "first_deposit": False,
    "three_ds": True,
}


class RankRequest(ContractModel):
    """Body of ``POST /rank``: one transaction to route."""

    model_config = ConfigDict(json_schema_extra={"example": {"transaction": EXAMPLE_TRANSACTION}})

    transaction: Transaction


class RankBatchRequest(ContractModel):
    """Body of ``POST /rank_batch``: up to :data:`MAX_BATCH` transactions, answered in order."""

    transactions: Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]


class FeedbackRequest(AttemptOutcome):
    """Body of ``POST /feedback``: one attempt's outcome plus the decision that routed it.

    Idempotent on ``(transaction_id, attempt)``. Without a ``decision_id`` this service issued for the
    same transaction, the outcome is stored (and exported) but never learned from.
    """

    decision_id: Optional[Identifier] = None

    def outcome(self) -> AttemptOutcome:
        """The contract outcome without the routing reference."""
        return AttemptOutcome.model_construct(**{name: getattr(self, name) for name in AttemptOutcome.model_fields})


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReasonOut(_Response):
    """A machine-readable reason: stable code and its value (e.g. ``model_probability`` = 0.81)."""

    code: str
    value: Union[bool, int, float, str, None] = None


class RankedPsp(_Response):
    psp: str
    p_approve: Optional[float] = Field(description="approval probability the score uses (posterior mean)")
    expected_cost: Optional[float] = Field(description="expected cost of the attempt in EUR")
    score: float
    reasons: list[ReasonOut] = Field(default_factory=list)


class ExcludedPsp(_Response):
    psp: str
    reason: str


class RankResponse(_Response):
    decision_id: str
    ranking: list[RankedPsp]
    excluded: list[ExcludedPsp]
    model_version: Optional[str]
    propensity: Optional[float] = Field(description="probability the first PSP was chosen first")
    degraded: bool
    objective: Optional[str] = None


class RankBatchResponse(_Response):
    decisions: list[RankResponse]


class FeedbackAck(_Response):
    status: Literal["recorded", "duplicate"]
    transaction_id: str
    attempt: int
    decision_known: bool = Field(description="the decision id was issued by this service for this transaction")
    learned: bool = Field(description="the outcome moved the bandit and online features")
    sequence: int = Field(description="position of the outcome in the durable log")


class ErrorBody(_Response):
    """Every 4xx answer: machine-readable rows, never echoing input values."""

    errors: list[FieldError]


def error_body(field: str, code: str, message: str) -> dict[str, Any]:
    """A one-row error body as plain JSON-able data."""
    return {"errors": [{"field": field, "code": code, "message": message}]}
