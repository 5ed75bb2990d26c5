"""How a sandbox PSP answers an authorisation: approval, decline code (its own vocabulary), latency.

The server asks a :class:`PspBehaviour`; :class:`ScriptedBehaviour` answers from a table (unit tests),
:mod:`payroute.sandbox.world` adapts the simulator's world (realistic traffic).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PspAnswer:
    """A PSP's answer before delivery: ``status`` approved | declined | error | timeout."""

    status: str
    decline_code: str | None = None
    latency_ms: float = 1.0


APPROVED = PspAnswer("approved")


class PspBehaviour(Protocol):
    def answer(self, psp: str, transaction: Mapping[str, Any], attempt: int) -> PspAnswer: ...


@dataclass(frozen=True)
class ScriptedBehaviour:
    """Answers from a table keyed by ``(psp, transaction_id)`` then ``psp``, else ``default``."""

    default: PspAnswer = APPROVED
    by_psp: dict[str, PspAnswer] = field(default_factory=dict)
    by_transaction: dict[tuple[str, str], PspAnswer] = field(default_factory=dict)

    def answer(self, psp: str, transaction: Mapping[str, Any], attempt: int) -> PspAnswer:
        found = self.by_transaction.get((psp, str(transaction.get("id"))))
        return found or self.by_psp.get(psp, self.default)
