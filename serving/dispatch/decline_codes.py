"""Each PSP's decline codes mapped to the normalised reasons and classes, from configuration.

An unmapped code is treated conservatively: class ``None`` means "do not retry elsewhere", and it is
counted per (PSP, code) so an operator can extend ``decline_codes.yaml``.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from payroute.contracts import DECLINE_CLASS, DeclineClass, DeclineReason


@dataclass(frozen=True)
class Classified:
    """A decline code understood: reason and class, or ``known=False`` for an unmapped code."""

    reason: DeclineReason | None
    decline_class: DeclineClass | None
    known: bool

    @property
    def retry_elsewhere(self) -> bool:
        """Only a known soft decline may be retried at another PSP."""
        return self.known and self.decline_class == DeclineClass.soft


UNKNOWN = Classified(None, None, False)


class DeclineCodeMap:
    """``psp -> code -> DeclineReason``; thread-safe counter of unknown codes."""

    def __init__(self, mapping: dict[str, dict[str, DeclineReason]]) -> None:
        self.mapping = mapping
        self.unknown_codes: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> "DeclineCodeMap":
        psps = data.get("psps")
        if not isinstance(psps, dict):
            raise ValueError("decline-code config needs a 'psps' mapping")
        mapping: dict[str, dict[str, DeclineReason]] = {}
        for psp, codes in psps.items():
            try:
                mapping[str(psp)] = {str(code): DeclineReason(reason) for code, reason in (codes or {}).items()}
            except ValueError as error:
                raise ValueError(f"decline-code config for {psp!r}: {error}") from None
        return cls(mapping)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DeclineCodeMap":
        """Load a YAML mapping; with no path, the embedded ``decline_codes.yaml``."""
        text = (Path(path).read_text() if path is not None
                else resources.files("payroute.serving.dispatch").joinpath("decline_codes.yaml").read_text())
        return cls.from_config(yaml.safe_load(text))

    def classify(self, psp: str, code: str | None) -> Classified:
        reason = self.mapping.get(psp, {}).get(code) if code is not None else None
        if reason is None:
            with self._lock:
                self.unknown_codes[(psp, str(code))] += 1
            return UNKNOWN
        return Classified(reason, DECLINE_CLASS[reason], True)

    def unknown_total(self) -> int:
        with self._lock:
            return sum(self.unknown_codes.values())
