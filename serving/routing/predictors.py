"""What the router needs from the model side: calibrated approval and expected chargeback cost.

The router depends on these protocols only, never on the feature pipeline or the model bundle; the
serving layer adapts (online features + bundle) to :class:`ApprovalPredictor`. :class:`TablePredictor`
is a real, tiny predictor (known probabilities per PSP, optionally per segment) for tests, benchmarks
and a cold start without a trained model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from payroute.contracts import DeclineClass, Transaction


@runtime_checkable
class ApprovalPredictor(Protocol):
    """Calibrated P(approve) per PSP for one transaction; NaN for a PSP the model does not know."""

    version: str

    def predict(
        self,
        transaction: Transaction,
        psps: Sequence[str],
        *,
        attempt: int = 1,
        previous_decline_class: DeclineClass | None = None,
    ) -> np.ndarray: ...

    # Optional: ``predict_many(items: Sequence[tuple[Transaction, Sequence[str]]]) -> list[np.ndarray]``,
    # first attempts of many transactions in one model call; ``Router.rank_many`` uses it when present.


@runtime_checkable
class ChargebackCostPredictor(Protocol):
    """Expected chargeback loss in EUR per PSP, if the payment is approved there; shape (len(psps),)."""

    def expected_chargeback_cost(self, transaction: Transaction, psps: Sequence[str]) -> np.ndarray: ...


class TablePredictor:
    """Known approval probabilities per PSP, optionally overridden per segment key.

    ``probabilities[psp]`` is the default; ``by_segment[segment][psp]`` wins when the transaction's
    segment (see :func:`payroute.serving.routing.bandit.segment_of`) matches. A PSP in neither gets NaN
    (unknown to the model), which the router treats as a cold prior. ``retry_factor`` scales the
    probability after a soft decline (attempt > 1), as a trained model's attempt features would.
    """

    def __init__(
        self,
        probabilities: Mapping[str, float],
        *,
        by_segment: Mapping[str, Mapping[str, float]] | None = None,
        retry_factor: float = 1.0,
        version: str = "table",
    ) -> None:
        self.probabilities = dict(probabilities)
        self.by_segment = {key: dict(value) for key, value in (by_segment or {}).items()}
        self.retry_factor = retry_factor
        self.version = version

    def predict(
        self,
        transaction: Transaction,
        psps: Sequence[str],
        *,
        attempt: int = 1,
        previous_decline_class: DeclineClass | None = None,
    ) -> np.ndarray:
        from payroute.serving.routing.bandit import segment_of

        table = {**self.probabilities, **self.by_segment.get(segment_of(transaction), {})}
        factor = self.retry_factor if attempt > 1 else 1.0
        return np.array([table.get(psp, np.nan) * factor for psp in psps], dtype=np.float64)

    def predict_many(self, items: Sequence[tuple[Transaction, Sequence[str]]]) -> list[np.ndarray]:
        """First-attempt probabilities for many (transaction, PSPs) pairs (the router's batch path)."""
        return [self.predict(transaction, psps) for transaction, psps in items]
