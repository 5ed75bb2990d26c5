"""Feature declarations: every feature is declared here once; the offline builder and the online store
interpret the same declarations (Feast's shape, without a Feast server).

A feature family is a shrunk ratio of two exponentially decayed counters (``numerator / denominator``)
at a list of key levels and half-lives. A key level groups outcomes by the PSP and some request fields
(``psp × country``, ``psp × card BIN``...) and names a coarser parent level that sparse keys are shrunk
toward (empirical Bayes: ``rate = (numerator + k · parent_rate) / (denominator + k)``); the top level
shrinks toward the family's constant prior.

Counters (what one attempt outcome adds to a key's state) and request-time transforms live in
:mod:`payroute.features.transforms`; the arithmetic in :mod:`payroute.features.decay`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property

from payroute.contracts import (
    ISO_COUNTRIES,
    ISO_CURRENCIES,
    CardNetwork,
    CardType,
    DeclineClass,
    PaymentMethod,
    TransactionType,
    Vertical,
)

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

# Counters an outcome contributes to (see transforms.outcome_weights). "controllable" is the PSP's
# approval denominator: approvals plus soft declines, errors and timeouts. Customer-class declines
# (insufficient funds, expired card...) and hard declines (stolen card, fraud) say something about the
# card, not the PSP, so they are excluded from the PSP's approval statistics; the decline-mix
# families still count them.
COUNTERS: tuple[str, ...] = (
    "attempts",
    "controllable",
    "approved",
    "soft",
    "hard",
    "customer",
    "error_timeout",
    "latency_ms",
)


@dataclass(frozen=True)
class KeyLevel:
    """A grouping of outcomes: the PSP plus request fields, shrunk toward ``parent`` when sparse."""

    name: str
    fields: tuple[str, ...]  # request fields after the request-time transforms, PSP excluded
    parent: str | None


@dataclass(frozen=True)
class RateFamily:
    """A decayed ratio ``numerator / denominator`` at several levels and half-lives, shrunk upward.

    Emits ``{name}__{level}__{half-life}`` per (level, half-life) and, with ``volume``, the decayed
    denominator as ``volume_{denominator}__{level}__{half-life}``.
    """

    name: str
    numerator: str
    denominator: str
    levels: tuple[str, ...]
    half_lives: tuple[float, ...]  # seconds
    prior: float  # what the top level shrinks toward
    strength: float  # pseudo-count k of the shrinkage
    volume: bool = False


def half_life_label(seconds: float) -> str:
    """``900 -> '15m'``, ``3600 -> '1h'``, ``86400 -> '1d'``: the suffix used in feature names."""
    for unit, label in ((DAY, "d"), (HOUR, "h"), (MINUTE, "m")):
        if seconds >= unit and seconds % unit == 0:
            return f"{int(seconds // unit)}{label}"
    return f"{seconds:g}s"


# Request-time features (computed by transforms.request_features in both paths), in output order.
NUMERIC_REQUEST_FEATURES: tuple[str, ...] = (
    "amount_eur",
    "log_amount_eur",
    "amount_band",
    "cross_border",
    "needs_fx",
    "local_hour",
    "local_weekday",
    "three_ds",
    "first_deposit",
    "attempt",
)
CATEGORICAL_FEATURES: tuple[str, ...] = (
    "psp",
    "type",
    "country",
    "currency",
    "payment_method",
    "card_network",
    "card_type",
    "vertical",
    "previous_decline_class",
)
# Amount bands in EUR: band i covers [edges[i-1], edges[i]); the band index is both a numeric feature
# and the key of the psp × amount band level.
AMOUNT_BAND_EDGES_EUR: tuple[float, ...] = (10.0, 50.0, 200.0, 1000.0, 5000.0)


@dataclass(frozen=True)
class FeatureSpec:
    """The full declaration set. Its :attr:`version` hashes every declaration, so a model bundle can
    refuse features built under another spec."""

    levels: tuple[KeyLevel, ...]
    families: tuple[RateFamily, ...]
    amount_band_edges_eur: tuple[float, ...] = AMOUNT_BAND_EDGES_EUR
    numeric_request_features: tuple[str, ...] = NUMERIC_REQUEST_FEATURES
    categorical_features: tuple[str, ...] = CATEGORICAL_FEATURES
    name: str = "default"

    def __post_init__(self) -> None:
        names = {level.name for level in self.levels}
        for level in self.levels:
            if level.parent is not None and level.parent not in names:
                raise ValueError(f"level {level.name!r}: unknown parent {level.parent!r}")
        for family in self.families:
            for counter in (family.numerator, family.denominator):
                if counter not in COUNTERS:
                    raise ValueError(f"family {family.name!r}: unknown counter {counter!r}")
            for level in family.levels:
                if level not in names:
                    raise ValueError(f"family {family.name!r}: unknown level {level!r}")
                parent = self.level(level).parent
                if parent is not None and parent not in family.levels:
                    raise ValueError(f"family {family.name!r}: level {level!r} needs its parent {parent!r}")

    def level(self, name: str) -> KeyLevel:
        return next(level for level in self.levels if level.name == name)

    @cached_property
    def level_order(self) -> tuple[str, ...]:
        """Level names parents-first, so shrinkage can run top-down."""
        order: list[str] = []
        pending = [level.name for level in self.levels]
        while pending:
            for name in list(pending):
                parent = self.level(name).parent
                if parent is None or parent in order:
                    order.append(name)
                    pending.remove(name)
        return tuple(order)

    @cached_property
    def layouts(self) -> dict[str, tuple[tuple[str, float], ...]]:
        """Per level, the (counter, half-life) columns its keyed state holds, in a fixed order."""
        needed: dict[str, set[tuple[str, float]]] = {level.name: set() for level in self.levels}
        for family in self.families:
            for level in family.levels:
                for half_life in family.half_lives:
                    needed[level].add((family.numerator, half_life))
                    needed[level].add((family.denominator, half_life))
        return {
            name: tuple(sorted(columns, key=lambda c: (c[1], COUNTERS.index(c[0]))))
            for name, columns in needed.items()
            if columns
        }

    @cached_property
    def rate_feature_names(self) -> tuple[str, ...]:
        """Shrunk ratios: per family, per level (parents first), per half-life."""
        return tuple(
            f"{family.name}__{level}__{half_life_label(half_life)}"
            for family in self.families
            for level in self.level_order
            if level in family.levels
            for half_life in family.half_lives
        )

    @cached_property
    def volume_feature_names(self) -> tuple[str, ...]:
        """Decayed denominators of the families declared with ``volume=True``."""
        return tuple(
            f"volume_{family.denominator}__{level}__{half_life_label(half_life)}"
            for family in self.families
            if family.volume
            for level in self.level_order
            if level in family.levels
            for half_life in family.half_lives
        )

    @cached_property
    def history_feature_names(self) -> tuple[str, ...]:
        return self.rate_feature_names + self.volume_feature_names

    @cached_property
    def feature_names(self) -> tuple[str, ...]:
        """All model inputs in their fixed order: request numerics, categoricals, history features."""
        return self.numeric_request_features + self.categorical_features + self.history_feature_names

    def missing(self, feature_names: Sequence[str]) -> list[str]:
        """The names among ``feature_names`` (a model's inputs) that this spec does not compute: a model
        trained under another spec that needs any of them cannot be served by this code."""
        known = set(self.feature_names)
        return [name for name in feature_names if name not in known]

    def categories(self, psp_names: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """The fixed vocabulary of every categorical feature (codes are positions in these tuples)."""
        return {
            "psp": tuple(psp_names),
            "type": tuple(v.value for v in TransactionType),
            "country": tuple(sorted(ISO_COUNTRIES)),
            "currency": tuple(sorted(ISO_CURRENCIES)),
            "payment_method": tuple(v.value for v in PaymentMethod),
            "card_network": tuple(v.value for v in CardNetwork),
            "card_type": tuple(v.value for v in CardType),
            "vertical": tuple(v.value for v in Vertical),
            "previous_decline_class": tuple(v.value for v in DeclineClass),
        }

    @cached_property
    def version(self) -> str:
        """Short content hash of the declarations (changes whenever any declaration changes)."""
        payload = {
            "levels": [asdict(level) for level in self.levels],
            "families": [asdict(family) for family in self.families],
            "amount_band_edges_eur": self.amount_band_edges_eur,
            "request": self.numeric_request_features,
            "categorical": self.categorical_features,
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.name}-{digest[:12]}"


DEFAULT_LEVELS: tuple[KeyLevel, ...] = (
    KeyLevel("psp", (), None),
    KeyLevel("psp_country", ("country",), "psp"),
    KeyLevel("psp_method", ("payment_method",), "psp"),
    KeyLevel("psp_network_issuer", ("card_network", "issuer_country"), "psp_method"),
    KeyLevel("psp_bin", ("card_bin",), "psp_network_issuer"),
    KeyLevel("psp_amount_band", ("amount_band",), "psp"),
)

APPROVAL_LEVELS = tuple(level.name for level in DEFAULT_LEVELS)
# 1 hour and 1 day follow a PSP that changes; 180 days keeps the slow, sparse evidence: an issuer's
# affinity to a PSP is learned per BIN × PSP from tens of outcomes collected over months (median 11
# controllable attempts per BIN × PSP in the bench's 60-day history), and a 14-day half-life kept only
# about a third of them (docs/benchmarks.md).
APPROVAL_HALF_LIVES = (1 * HOUR, 1 * DAY, 180 * DAY)
HEALTH_HALF_LIVES = (15 * MINUTE,)
MIX_HALF_LIVES = (1 * DAY,)

DEFAULT_FAMILIES: tuple[RateFamily, ...] = (
    RateFamily("approval_rate", "approved", "controllable", APPROVAL_LEVELS, APPROVAL_HALF_LIVES,
               prior=0.5, strength=10.0, volume=True),
    # PSP health: minutes scale, so an outage shows within a few attempts.
    RateFamily("error_share", "error_timeout", "attempts", ("psp",), HEALTH_HALF_LIVES,
               prior=0.02, strength=5.0, volume=True),
    RateFamily("latency_ms", "latency_ms", "attempts", ("psp",), HEALTH_HALF_LIVES,
               prior=800.0, strength=5.0),
    # Decline mix per PSP and PSP × country: who the failures blame.
    RateFamily("soft_share", "soft", "attempts", ("psp", "psp_country"), MIX_HALF_LIVES,
               prior=0.1, strength=10.0),
    RateFamily("hard_share", "hard", "attempts", ("psp", "psp_country"), MIX_HALF_LIVES,
               prior=0.02, strength=10.0),
    RateFamily("customer_share", "customer", "attempts", ("psp", "psp_country"), MIX_HALF_LIVES,
               prior=0.1, strength=10.0),
)

DEFAULT_SPEC = FeatureSpec(levels=DEFAULT_LEVELS, families=DEFAULT_FAMILIES)
