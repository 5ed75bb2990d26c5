"""The PSP catalogue: what each PSP accepts, what it charges, and the one eligibility rule set.

Loaded from YAML (``payroute/defaults/catalog.yaml`` is the embedded default). Eligibility is declared
once as a list of named rules (:data:`ELIGIBILITY_RULES`) and interpreted two ways: per transaction for
the online ranker (:meth:`Catalog.eligibility`) and column-wise for simulators, feature builders and
reports (:meth:`Catalog.eligibility_matrix`). Fees come from :func:`attempt_cost`, the single fee rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from payroute.contracts import (
    HIGH_RISK_VERTICALS,
    ISO_COUNTRIES,
    ISO_CURRENCIES,
    REPORTING_CURRENCY,
    AttemptStatus,
    CardNetwork,
    PaymentMethod,
    TransactionType,
    Vertical,
)

MONEY_QUANTUM = Decimal("0.0001")
DEFAULT_CATALOG_PATH = "defaults/catalog.yaml"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountryProfile(_Config):
    """A market: its currency, its region (for cross-border acquiring) and its local methods."""

    currency: str
    region: str
    local_methods: tuple[PaymentMethod, ...] = ()


class FeeSchedule(_Config):
    """Contract fees. Fixed amounts are in EUR and converted at the catalogue's dated rates."""

    fixed_eur: Annotated[Decimal, Field(ge=0)]
    percent: Annotated[Decimal, Field(ge=0, le=1)]
    decline_fee_eur: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    fx_markup: Annotated[Decimal, Field(ge=0, le=1)] = Decimal(0)


class AmountLimits(_Config):
    min_eur: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    max_eur: Annotated[Decimal, Field(gt=0)] = Decimal(1_000_000)


class PspProfile(_Config):
    """One PSP as the operator's contract with it describes it."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9_\-]+$")]
    display_name: str
    enabled: bool = True
    acquiring_regions: tuple[str, ...]
    countries: tuple[str, ...]  # ("*",) for every country in the catalogue
    currencies: tuple[str, ...]
    settlement_currencies: tuple[str, ...]
    methods: tuple[PaymentMethod, ...]
    networks: tuple[CardNetwork, ...] = ()
    transaction_types: tuple[TransactionType, ...]
    verticals: tuple[Vertical, ...]
    amount_limits: AmountLimits = AmountLimits()
    fees: FeeSchedule
    static_priority: int = Field(ge=0, description="Position in the fail-open static order (0 first).")

    @property
    def accepts_high_risk(self) -> bool:
        return bool(HIGH_RISK_VERTICALS & set(self.verticals))


class Catalog(_Config):
    """Countries, dated FX rates and PSPs. Immutable; build a new one to change it."""

    version: str
    reporting_currency: str = REPORTING_CURRENCY
    fx_rates_date: dt.date
    fx_rates: dict[str, Decimal]  # units of currency per 1 EUR
    countries: dict[str, CountryProfile]
    psps: tuple[PspProfile, ...]

    @field_validator("fx_rates")
    @classmethod
    def _rates_known(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in rates.items():
            if code not in ISO_CURRENCIES or rate <= 0:
                raise ValueError(f"fx_rates: bad entry for {code!r}")
        if rates.get(REPORTING_CURRENCY) != Decimal(1):
            raise ValueError("fx_rates: EUR must be 1 (rates are units per EUR)")
        return rates

    @model_validator(mode="after")
    def _consistent(self) -> "Catalog":
        for code, country in self.countries.items():
            if code not in ISO_COUNTRIES:
                raise ValueError(f"countries: unknown country code {code!r}")
            if country.currency not in self.fx_rates:
                raise ValueError(f"countries.{code}: no FX rate for {country.currency}")
        names = [p.name for p in self.psps]
        if len(set(names)) != len(names):
            raise ValueError("psps: names must be unique")
        for psp in self.psps:
            for code in psp.countries:
                if code != "*" and code not in self.countries:
                    raise ValueError(f"psps.{psp.name}.countries: {code!r} not in catalogue countries")
            for code in (*psp.currencies, *psp.settlement_currencies):
                if code not in self.fx_rates:
                    raise ValueError(f"psps.{psp.name}: no FX rate for currency {code!r}")
        return self

    # ---------------------------------------------------------------- lookups

    @cached_property
    def psp_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.psps)

    @cached_property
    def by_name(self) -> dict[str, PspProfile]:
        return {p.name: p for p in self.psps}

    @cached_property
    def static_order(self) -> tuple[str, ...]:
        """PSP names in fail-open priority order."""
        return tuple(p.name for p in sorted(self.psps, key=lambda p: (p.static_priority, p.name)))

    def region_of(self, country: str | None) -> str | None:
        profile = self.countries.get(country) if country else None
        return profile.region if profile else None

    def fx_rate(self, currency: str) -> Decimal:
        """Units of ``currency`` per 1 EUR, as of :attr:`fx_rates_date`."""
        try:
            return self.fx_rates[currency]
        except KeyError:
            raise KeyError(f"no FX rate for currency {currency!r} in catalogue {self.version}") from None

    def to_eur(self, amount: Decimal, currency: str) -> Decimal:
        return (Decimal(amount) / self.fx_rate(currency)).quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)

    def is_cross_border(self, psp: str, issuer_country: str | None) -> bool:
        """True when the card's (or customer's) region is outside every acquiring region of the PSP."""
        region = self.region_of(issuer_country)
        return region is not None and region not in self.by_name[psp].acquiring_regions

    def needs_fx(self, psp: str, currency: str) -> bool:
        return currency not in self.by_name[psp].settlement_currencies

    # ---------------------------------------------------------------- eligibility

    @cached_property
    def _rule_sets(self) -> dict[str, dict[str, frozenset[str] | None]]:
        """Per rule, per PSP: the allowed values (None = anything), precomputed once."""
        return {
            rule.reason: {p.name: rule.allowed(p) for p in self.psps} for rule in ELIGIBILITY_RULES
        }

    @cached_property
    def _psp_checks(self) -> tuple[tuple[str, bool, tuple[tuple["MembershipRule", frozenset[str]], ...], float, float], ...]:
        """Per PSP, in catalogue order: (name, enabled, the rules that restrict it, min and max EUR)."""
        return tuple(
            (
                p.name,
                p.enabled,
                tuple((rule, self._rule_sets[rule.reason][p.name]) for rule in ELIGIBILITY_RULES
                      if self._rule_sets[rule.reason][p.name] is not None),
                float(p.amount_limits.min_eur),
                float(p.amount_limits.max_eur),
            )
            for p in self.psps
        )

    @cached_property
    def _float_rates(self) -> dict[str, float]:
        return {code: float(rate) for code, rate in self.fx_rates.items()}

    @cached_property
    def _amount_limit_pairs(self) -> tuple[tuple[float, float], ...]:
        return tuple((check[3], check[4]) for check in self._psp_checks)

    def amount_band(self, currency: Any, amount: Any) -> bytes:
        """Per PSP, where the amount sits against its limits: 0 within, 1 below, 2 above (EUR floats,
        compared as :meth:`eligibility` compares them); empty for a currency without a rate.

        Two transactions equal in every other eligibility field and in this band get the same
        :meth:`eligibility` report, so a caller may cache reports by (other fields, band)."""
        rate = self._float_rates.get(_as_key(currency))
        if rate is None:
            return b""
        amount_eur = float(amount) / rate
        # a Python loop over the few PSPs: numpy's per-call overhead costs more than the comparisons
        return bytes([(amount_eur < low) + 2 * (amount_eur > high) for low, high in self._amount_limit_pairs])

    def eligibility(self, transaction: Mapping[str, Any] | Any) -> "EligibilityReport":
        """Which PSPs may take this transaction, and for the others the first rule that excluded them.

        Amounts are compared in EUR as floats, exactly as :meth:`eligibility_matrix` does, so both
        interpreters agree at the limits.
        """
        fields = _transaction_fields(transaction)
        keys = {rule.field: _as_key(fields.get(rule.field)) for rule in ELIGIBILITY_RULES}
        skipped = {rule.reason for rule in ELIGIBILITY_RULES if rule.applies is not None and not rule.applies(fields)}
        rate = self._float_rates.get(keys["currency"])
        amount_eur = None if rate is None else float(fields["amount"]) / rate
        eligible: list[str] = []
        excluded: dict[str, str] = {}
        for name, enabled, checks, min_eur, max_eur in self._psp_checks:
            reason = None
            if not enabled:
                reason = "psp_disabled"
            else:
                for rule, allowed in checks:
                    if rule.reason not in skipped and keys[rule.field] not in allowed:
                        reason = rule.reason
                        break
                else:
                    if amount_eur is None:
                        reason = "currency_not_supported"
                    elif amount_eur < min_eur:
                        reason = "amount_below_minimum"
                    elif amount_eur > max_eur:
                        reason = "amount_above_maximum"
            if reason is None:
                eligible.append(name)
            else:
                excluded[name] = reason
        return EligibilityReport(eligible=tuple(eligible), excluded=excluded)

    def eligibility_matrix(self, transactions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Column-wise eligibility for a frame of transactions.

        Returns ``(eligible, reason)``, both of shape (n_transactions, n_psps) in :attr:`psp_names`
        order: a boolean mask, and the excluding rule's reason ('' where eligible). Same rules, same
        precedence as :meth:`eligibility`.
        """
        n = len(transactions)
        reason = np.full((n, len(self.psps)), "", dtype=object)
        rates = {code: float(rate) for code, rate in self.fx_rates.items()}
        rate = transactions["currency"].astype(str).map(rates).to_numpy(dtype=float, na_value=np.nan)
        amount_eur = transactions["amount"].astype(float).to_numpy() / rate
        columns = {
            rule.field: transactions[rule.field].astype(object).where(transactions[rule.field].notna(), None)
            .map(_as_key).to_numpy()
            for rule in ELIGIBILITY_RULES
        }
        applies = {
            rule.reason: (np.ones(n, bool) if rule.applies_column is None else rule.applies_column(transactions))
            for rule in ELIGIBILITY_RULES
        }
        for j, psp in enumerate(self.psps):
            open_ = np.ones(n, bool)
            if not psp.enabled:
                reason[:, j] = "psp_disabled"
                continue
            for rule in ELIGIBILITY_RULES:
                allowed = self._rule_sets[rule.reason][psp.name]
                if allowed is None:
                    continue
                fails = open_ & applies[rule.reason] & ~np.isin(columns[rule.field], list(allowed))
                reason[fails, j] = rule.reason
                open_ &= ~fails
            limits = psp.amount_limits
            for fails, code in (
                (np.isnan(amount_eur), "currency_not_supported"),
                (amount_eur < float(limits.min_eur), "amount_below_minimum"),
                (amount_eur > float(limits.max_eur), "amount_above_maximum"),
            ):
                fails = open_ & fails
                reason[fails, j] = code
                open_ &= ~fails
        return reason == "", reason


@dataclass(frozen=True)
class EligibilityReport:
    eligible: tuple[str, ...]
    excluded: dict[str, str]


@dataclass(frozen=True)
class MembershipRule:
    """A PSP is eligible only if the transaction's ``field`` is among the values ``allowed`` gives."""

    reason: str
    field: str
    allowed: Callable[[PspProfile], frozenset[str] | None]
    applies: Callable[[Mapping[str, Any]], bool] | None = None
    applies_column: Callable[[pd.DataFrame], np.ndarray] | None = None


def _all_or(values: Sequence[Any]) -> frozenset[str] | None:
    keys = frozenset(_as_key(v) for v in values)
    return None if "*" in keys else keys


def _is_card(fields: Mapping[str, Any]) -> bool:
    return _as_key(fields.get("payment_method")) == PaymentMethod.card.value


def _is_card_column(frame: pd.DataFrame) -> np.ndarray:
    return (frame["payment_method"].astype(str) == PaymentMethod.card.value).to_numpy()


# The eligibility rules, in precedence order: the first failing rule is the reason reported.
# Amount limits (in EUR at the catalogue's rates) are checked after these.
ELIGIBILITY_RULES: tuple[MembershipRule, ...] = (
    MembershipRule("type_not_supported", "type", lambda p: _all_or(p.transaction_types)),
    MembershipRule("country_not_supported", "country", lambda p: _all_or(p.countries)),
    MembershipRule("currency_not_supported", "currency", lambda p: _all_or(p.currencies)),
    MembershipRule("method_not_supported", "payment_method", lambda p: _all_or(p.methods)),
    MembershipRule(
        "network_not_supported", "card_network", lambda p: _all_or(p.networks),
        applies=_is_card, applies_column=_is_card_column,
    ),
    MembershipRule("vertical_not_accepted", "vertical", lambda p: _all_or(p.verticals)),
)


def _as_key(value: Any) -> str | None:
    if value is None:
        return None
    return value.value if hasattr(value, "value") else str(value)


_ELIGIBILITY_FIELDS = ("amount", *dict.fromkeys(rule.field for rule in ELIGIBILITY_RULES))


def _transaction_fields(transaction: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    if isinstance(transaction, Mapping):
        return transaction
    return {name: getattr(transaction, name, None) for name in _ELIGIBILITY_FIELDS}


# --------------------------------------------------------------------------------------------------
# Fees: the one fee rule
# --------------------------------------------------------------------------------------------------


def fee_formula(amount, fx_rate, fees: FeeSchedule, approved, needs_fx):
    """Fee and FX cost in the transaction currency; works on Decimals and on numpy float arrays.

    On approval: ``fixed_eur × rate + percent × amount`` and, when the PSP does not settle the
    currency, ``fx_markup × amount``. Otherwise (declined, error, timeout): ``decline_fee_eur × rate``.
    """
    cast = (lambda x: x) if isinstance(amount, Decimal) else float
    fixed, percent = cast(fees.fixed_eur), cast(fees.percent)
    decline, markup = cast(fees.decline_fee_eur), cast(fees.fx_markup)
    fee = approved * (fixed * fx_rate + percent * amount) + (1 - approved) * decline * fx_rate
    fx_cost = approved * needs_fx * markup * amount
    return fee, fx_cost


@dataclass(frozen=True)
class AttemptCost:
    fee: Decimal
    fx_cost: Decimal
    fee_eur: Decimal
    fx_cost_eur: Decimal

    @property
    def total_eur(self) -> Decimal:
        return self.fee_eur + self.fx_cost_eur


def attempt_cost(catalog: Catalog, psp: str, amount: Decimal, currency: str, status: AttemptStatus | str) -> AttemptCost:
    """What the contract says one attempt costs, in the transaction currency and in EUR."""
    profile = catalog.by_name[psp]
    rate = catalog.fx_rate(currency)
    approved = int(AttemptStatus(status) == AttemptStatus.approved)
    fee, fx_cost = fee_formula(
        Decimal(amount), rate, profile.fees, Decimal(approved), Decimal(int(catalog.needs_fx(psp, currency)))
    )
    fee = fee.quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)
    fx_cost = fx_cost.quantize(MONEY_QUANTUM, ROUND_HALF_EVEN)
    return AttemptCost(fee, fx_cost, catalog.to_eur(fee, currency), catalog.to_eur(fx_cost, currency))


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalogue YAML; with no path, the embedded default."""
    if path is None:
        text = resources.files("payroute").joinpath(DEFAULT_CATALOG_PATH).read_text()
        source = "embedded default"
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise FileNotFoundError(f"catalogue file not readable: {path}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"catalogue {source} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"catalogue {source} must be a mapping")
    return Catalog.model_validate(data)


def dump_catalog(catalog: Catalog, path: str | Path) -> None:
    """Write a catalogue as YAML (decimals as strings, so nothing is lost)."""
    data = catalog.model_dump(mode="json")
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
