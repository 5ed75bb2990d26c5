"""Card-number (PAN) screening: find full card numbers anywhere in inbound data, without echoing them.

payroute only ever handles a card's BIN (first 6-8 digits). A full PAN in any field is refused; the
error names the field but never repeats the value, and nothing here logs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# A card number as people write it: 13-19 plain digits, or the printed groupings (4-4-4-4 with a last
# group of 1-7 digits; Amex/Diners 4-6-5 and 4-6-4) separated by single spaces or dashes. It must stand
# as its own token (digits inside a hex/base64 hash or an alphanumeric id are hash material) and start
# with a payment-card major industry identifier (2-6). Other groupings, such as a UUID's 8-4-4-4-12,
# are not card numbers and are not joined across their dashes.
_PAN_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z])[2-6](?:\d{12,18}|\d{3}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{3}[ -]\d{6}[ -]\d{4,5})(?![0-9A-Za-z])"
)


def luhn_valid(digits: str) -> bool:
    """True when a digit string passes the Luhn (mod 10) check used by every card scheme."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def contains_pan(text: str) -> bool:
    """True when the text holds a 13-19 digit run (spaces/dashes allowed) that passes Luhn."""
    for match in _PAN_CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


def _leaf_texts(value: Any, out: list[str]) -> list[str]:
    """Append the text of every string or integer (not bool) inside ``value`` to ``out``.

    Parsed JSON is made of exact dicts, lists, strings and numbers: those are told apart by their type
    first (an ABC ``isinstance`` check costs several times more), other mappings and sequences after."""
    kind = type(value)
    if kind is str:
        out.append(value)
    elif kind is dict or kind is list or kind is tuple:
        for item in value.values() if kind is dict else value:
            item_kind = type(item)
            if item_kind is str:
                out.append(item)
            elif item_kind is int:
                out.append(str(item))
            elif item_kind is not float and item_kind is not bool and item is not None:
                _leaf_texts(item, out)
    elif kind is int:
        out.append(str(value))
    elif kind is float or kind is bool or value is None:
        pass
    elif isinstance(value, Mapping):
        for item in value.values():
            _leaf_texts(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _leaf_texts(item, out)
    elif isinstance(value, str):
        out.append(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(str(value))
    return out


def holds_pan(value: Any) -> bool:
    """True when any string or integer inside ``value`` holds a PAN: one scan of all leaves joined by NUL.

    NUL is neither a digit, a letter nor a separator the pattern crosses, so a match in the joined text
    is a match inside one leaf: the same answer as screening each leaf alone, for a fraction of the cost."""
    return contains_pan("\x00".join(_leaf_texts(value, [])))


def find_pan_fields(value: Any, path: str = "") -> Iterator[str]:
    """Yield the dotted path of every string (or integer) inside ``value`` that holds a PAN."""
    if not path and not holds_pan(value):  # the common case: nothing to name, no paths built
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from find_pan_fields(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from find_pan_fields(item, f"{path}[{index}]")
    elif isinstance(value, bool):
        return
    elif isinstance(value, (str, int)):
        if contains_pan(str(value)):
            yield path or "<root>"


PAN_MESSAGE = "looks like a full card number (PAN); send only the BIN (first 6-8 digits)"
