"""What to simulate: volume, horizon, traffic mix, incidents, drift, logging policy, cascade, chargebacks.

Everything has a default that produces the full world; a config is frozen and hashable so that a run is
described by ``(config, catalog, seed)`` and nothing else.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_START = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(dt.timezone.utc)


class Incident(_Frozen):
    """A scheduled PSP incident: errors and timeouts inside ``[start, end)``.

    ``kind="outage"``: the PSP (or its path for one ``country`` / ``network``) fails almost every
    attempt. ``kind="degraded"``: a share of attempts fail and approval drops for the rest.
    """

    psp: str
    start: dt.datetime
    end: dt.datetime
    country: Optional[str] = None
    network: Optional[str] = None
    kind: Literal["outage", "degraded"] = "outage"

    @field_validator("start", "end")
    @classmethod
    def _check_utc(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> "Incident":
        if self.end <= self.start:
            raise ValueError("incident end must be after its start")
        return self


class NewPsp(_Frozen):
    """A catalogue PSP that goes live during the horizon: not routable before ``available_from``."""

    name: str
    available_from: dt.datetime

    @field_validator("available_from")
    @classmethod
    def _check_utc(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)


class TrafficMix(_Frozen):
    """Relative weights of the traffic. Keys absent from a mapping get weight 0; ``None`` = default.

    ``methods`` weights method *families*: ``card``, ``ewallet``, ``bank_transfer``, ``local``
    (the country's local method, e.g. pix in BR) and ``crypto``.
    """

    countries: Optional[dict[str, float]] = None
    methods: dict[str, float] = Field(
        default_factory=lambda: {"card": 0.70, "ewallet": 0.10, "bank_transfer": 0.05, "local": 0.12, "crypto": 0.03}
    )
    verticals: dict[str, float] = Field(
        default_factory=lambda: {"igaming": 0.40, "sports_betting": 0.20, "forex": 0.15, "crypto": 0.05, "ecommerce": 0.20}
    )
    types: dict[str, float] = Field(
        default_factory=lambda: {"deposit": 0.82, "withdrawal": 0.14, "affiliate_payout": 0.04}
    )
    three_ds_share: float = Field(0.45, ge=0, le=1)
    cross_border_card_share: float = Field(0.08, ge=0, le=1)
    merchants_per_vertical: int = Field(3, ge=1, description="Merchants m_<vertical>_<k> per vertical.")
    transactions_per_customer: float = Field(6.0, gt=0)


DEFAULT_COUNTRY_WEIGHTS: dict[str, float] = {
    "DE": 0.14, "GB": 0.13, "FR": 0.08, "ES": 0.07, "IT": 0.07, "NL": 0.05, "PL": 0.05, "SE": 0.04,
    "BR": 0.12, "MX": 0.06, "CO": 0.03, "CA": 0.05, "IN": 0.04, "TR": 0.05, "JP": 0.02,
}


class ChargebackSettings(_Frozen):
    """Chargebacks: a rate per vertical of approved payments, times a PSP factor (its fraud screening).

    Arrival delay is ``min_delay_days + Gamma(shape=2, scale=(mean_delay_days - min_delay_days)/2)``.
    ``observed_until_end``: keep only chargebacks dated before the end of the horizon (a snapshot of
    history as an operator would hold it); otherwise the full lifecycle is kept.
    """

    vertical_rates: dict[str, float] = Field(
        default_factory=lambda: {"igaming": 0.006, "sports_betting": 0.005, "forex": 0.009, "crypto": 0.007, "ecommerce": 0.003}
    )
    psp_factors: dict[str, float] = Field(
        default_factory=lambda: {
            "euroacq": 1.0, "britpay": 0.9, "latamconnect": 1.4, "globalpay": 0.8, "budgetpay": 1.8,
            "riskshield": 0.6, "walletgate": 0.5, "coinbridge": 0.3,
        }
    )
    min_delay_days: float = Field(3.0, ge=0)
    mean_delay_days: float = Field(21.0, gt=0)
    observed_until_end: bool = False


class SimulationConfig(_Frozen):
    """One simulated history: how much, when, which traffic, which incidents, which logging policy."""

    n_transactions: int = Field(100_000, ge=1)
    days: float = Field(30.0, gt=0)
    start: dt.datetime = DEFAULT_START
    traffic: TrafficMix = Field(default_factory=TrafficMix)
    incidents: Optional[tuple[Incident, ...]] = None  # None: default_incidents(start, days); () for none
    drift_strength: float = Field(0.25, ge=0, description="Std of each PSP's logit drift per 30 days.")
    seasonality_strength: float = Field(0.20, ge=0, description="Amplitude of the daily approval cycle (logit).")
    exploration_epsilon: float = Field(0.10, ge=0, le=1, description="Uniform share of the logging policy.")
    logging_temperature: float = Field(0.5, gt=0, description="Softmax temperature over the static scores.")
    max_attempts: int = Field(3, ge=1, le=20, description="Cascade length: first attempt plus retries.")
    chargebacks: ChargebackSettings = Field(default_factory=ChargebackSettings)
    new_psp: Optional[NewPsp] = None

    @field_validator("start")
    @classmethod
    def _check_utc(cls, value: dt.datetime) -> dt.datetime:
        return _utc(value)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(days=self.days)

    def resolved_incidents(self) -> tuple[Incident, ...]:
        return default_incidents(self.start, self.days) if self.incidents is None else self.incidents


def default_incidents(start: dt.datetime, days: float) -> tuple[Incident, ...]:
    """The default schedule, placed at fixed fractions of the horizon so that any horizon shows it.

    1. ``euroacq`` (the busiest EU card acquirer) fully down for 4 hours at 35 % of the horizon.
    2. ``latamconnect`` down for Brazil only for 6 hours at 65 % of the horizon.
    3. ``globalpay`` degraded for Mastercard for 8 hours at 80 % of the horizon.
    Windows shrink to a tenth of the horizon when it is shorter than 40 hours.
    """
    horizon = dt.timedelta(days=days)

    def window(fraction: float, hours: float) -> tuple[dt.datetime, dt.datetime]:
        length = min(dt.timedelta(hours=hours), horizon / 10)
        begin = start + horizon * fraction
        return begin, begin + length

    schedule = (
        ("euroacq", 0.35, 4.0, None, None, "outage"),
        ("latamconnect", 0.65, 6.0, "BR", None, "outage"),
        ("globalpay", 0.80, 8.0, None, "mastercard", "degraded"),
    )
    incidents = []
    for psp, fraction, hours, country, network, kind in schedule:
        begin, end = window(fraction, hours)
        incidents.append(Incident(psp=psp, start=begin, end=end, country=country, network=network, kind=kind))
    return tuple(incidents)
