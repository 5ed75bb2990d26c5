"""The world: the hidden truth that answers payment attempts.

An attempt of transaction *i* at PSP *j* at time *t* goes through four gates, in this order:

1. **system** — the PSP errors or times out with probability ``q_sys(j, t)`` (base rates; incidents);
2. **fraud** — a hard decline (stolen card, fraud) with probability ``q_hard(i)``, the same at every PSP;
3. **customer** — a customer decline (insufficient funds, expired card...) with probability
   ``q_cust(i)``, the same at every PSP;
4. **acquiring path** — approval with probability ``sigmoid(logit(i, j, t))`` (PSP profile, issuer ×
   PSP affinity, seasonality, drift, incident degradation), otherwise a soft decline.

So ``P(approve) = (1 - q_sys)(1 - q_hard)(1 - q_cust) · sigmoid(logit)``. Gates 2 and 3 use per-
transaction draws (:mod:`draws`), which is why a customer decline repeats at any other PSP, while gates 1
and 4 use per-(transaction, PSP) draws, which a retry elsewhere can escape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, ndtri

from payroute.catalog import Catalog, fee_formula, load_catalog
from payroute.contracts import DECLINE_CLASS, HIGH_RISK_VERTICALS, CardNetwork, DeclineReason, PaymentMethod, Vertical
from payroute.simulator.config import DEFAULT_COUNTRY_WEIGHTS, SimulationConfig
from payroute.simulator.declines import (
    CUSTOMER_TABLES,
    HARD_TABLES,
    REASON_INDEX,
    REASONS,
    reason_from_table,
    soft_reason,
)
from payroute.simulator.draws import U_APPROVE, U_CUSTOMER, U_HARD, U_LATENCY, U_REASON, U_SYSTEM, attempt_draws
from payroute.simulator.eligibility import eligibility_by_profile
from payroute.simulator.frames import string_column
from payroute.simulator.issuers import IssuerBook, build_issuers
from payroute.simulator.profiles import DEFAULT_PROFILES, PspTruth, decline_vocabulary, generic_profile
from payroute.simulator.traffic import sample_transactions

NETWORKS = tuple(n.value for n in CardNetwork)
METHODS = tuple(m.value for m in PaymentMethod)
VERTICALS = tuple(v.value for v in Vertical)
STATUSES = ("approved", "declined", "error", "timeout")
RETRY_PENALTY = -0.25  # logit per extra attempt: issuers grow wary of a repeated authorisation


@dataclass(frozen=True)
class Encoded:
    """A transaction frame as integer codes and floats, ready for table look-ups (one entry per row)."""

    n: int
    country: np.ndarray
    region: np.ndarray  # region of the card issuer (or of the customer for non-card methods)
    network: np.ndarray  # index into NETWORKS, len(NETWORKS) when there is no card
    method: np.ndarray
    vertical: np.ndarray
    currency: np.ndarray
    fx_rate: np.ndarray
    amount: np.ndarray
    amount_eur: np.ndarray
    is_card: np.ndarray
    three_ds: np.ndarray
    issuer: np.ndarray  # -1 when unknown / not a card
    q_hard: np.ndarray
    q_customer: np.ndarray
    hard_table: np.ndarray  # 0 card, 1 other
    customer_table: np.ndarray  # 0 card, 1 other method, 2 payout / withdrawal
    ids: np.ndarray

    def take(self, rows: np.ndarray) -> "Encoded":
        """The encoded subset at ``rows`` (indices or a boolean mask)."""
        values = {name: getattr(self, name)[rows] for name in self.__dataclass_fields__ if name != "n"}
        return Encoded(n=len(values["ids"]), **values)


def _lookup(values: pd.Series, vocabulary: Sequence[str], missing: int) -> np.ndarray:
    codes = pd.Categorical(values.astype(object).where(values.notna(), None), categories=list(vocabulary)).codes
    return np.where(codes < 0, missing, codes).astype(np.int64)


def _timestamps_us(at, n: int) -> np.ndarray:
    """Microseconds since the epoch (UTC) for one timestamp or one per row."""
    if isinstance(at, (dt.datetime, pd.Timestamp, str)):
        return np.full(n, pd.Timestamp(at).value // 1000, dtype=np.int64)
    values = pd.to_datetime(pd.Series(np.asarray(at) if not isinstance(at, pd.Series) else at), utc=True)
    return values.dt.as_unit("us").astype("int64").to_numpy()


def _round_money(x: np.ndarray) -> np.ndarray:
    """Round to 4 decimals half-to-even as ``Decimal.quantize`` would on the exact decimal value."""
    scaled = np.asarray(x, dtype=float) * 1e4
    floor = np.floor(scaled)
    frac = scaled - floor
    tie = np.abs(frac - 0.5) < 1e-6
    rounded = np.where(tie, floor + (floor % 2 == 1), np.round(scaled))
    return rounded / 1e4


class World:
    """The hidden truth of a payment world: PSP profiles, issuers, time effects, incidents, fees."""

    def __init__(self, catalog: Catalog | None = None, seed: int = 0, config: SimulationConfig | None = None):
        self.catalog = catalog if catalog is not None else load_catalog()
        self.config = config if config is not None else SimulationConfig()
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 0x3D])
        self.psps: tuple[str, ...] = self.catalog.psp_names
        self.profiles: dict[str, PspTruth] = {
            name: DEFAULT_PROFILES.get(name) or generic_profile(name, rng) for name in self.psps
        }
        weights = self.config.traffic.countries or DEFAULT_COUNTRY_WEIGHTS
        self.issuers: IssuerBook = build_issuers(self.catalog, weights, rng)
        self._bin_issuer = self.issuers.bin_to_issuer
        self.incidents = self.config.resolved_incidents()
        # Slow drift: a logit slope per PSP (per 30 days) and per PSP x region; a daily phase per PSP.
        self.regions: tuple[str, ...] = tuple(sorted({c.region for c in self.catalog.countries.values()}))
        self.drift = rng.normal(0.0, self.config.drift_strength, len(self.psps))
        self.region_drift = rng.normal(0.0, self.config.drift_strength / 2, (len(self.psps), len(self.regions)))
        self.seasonal_phase_hours = rng.normal(0.0, 1.5, len(self.psps))
        self._start_us = pd.Timestamp(self.config.start).value // 1000  # .value is always nanoseconds
        self._build_tables()

    # ------------------------------------------------------------------ tables

    def _build_tables(self) -> None:
        countries = list(self.catalog.countries)
        self.countries = tuple(countries)
        self.currencies = tuple(self.catalog.fx_rates)
        self._fx = np.array([float(self.catalog.fx_rates[c]) for c in self.currencies])
        self._country_region = np.array([self.regions.index(self.catalog.countries[c].region) for c in countries])
        p = len(self.psps)
        profiles = [self.profiles[name] for name in self.psps]
        self._base = np.array([pr.base for pr in profiles])
        self._cross = np.array([pr.cross_border_penalty for pr in profiles])
        self._three_ds = np.array([pr.three_ds_effect for pr in profiles])
        self._amount_sens = np.array([pr.amount_sensitivity for pr in profiles])
        self._error = np.array([pr.error_rate for pr in profiles])
        self._timeout = np.array([pr.timeout_rate for pr in profiles])
        self._latency = np.array([pr.latency_median_ms for pr in profiles])
        self._latency_sigma = np.array([pr.latency_sigma for pr in profiles])
        self._timeout_ms = np.array([pr.timeout_ms for pr in profiles])

        def table(attribute: str, vocabulary: Sequence[str]) -> np.ndarray:
            out = np.zeros((p, len(vocabulary) + 1))  # last column: missing value
            for j, pr in enumerate(profiles):
                for key, effect in getattr(pr, attribute).items():
                    if key in vocabulary:
                        out[j, list(vocabulary).index(key)] = effect
            return out

        self._country_effect = table("country", countries)
        self._network_effect = table("network", NETWORKS)
        self._method_effect = table("method", METHODS)
        self._vertical_effect = table("vertical", VERTICALS)
        self._home = np.array(
            [[region in self.catalog.by_name[name].acquiring_regions for region in self.regions] for name in self.psps]
        )
        self._needs_fx = np.array(
            [[self.catalog.needs_fx(name, c) for c in self.currencies] for name in self.psps]
        )
        self.decline_codes: dict[str, dict[str, DeclineReason]] = {}
        codes = np.empty((p, len(REASONS)), dtype=object)
        for j, name in enumerate(self.psps):
            vocabulary, primary = decline_vocabulary(self.profiles[name].code_style)
            self.decline_codes[name] = vocabulary
            codes[j] = [primary[r] for r in REASONS]
        self._codes = codes
        self._reason_values = np.array([r.value for r in REASONS] + [None], dtype=object)
        self._class_values = np.array([DECLINE_CLASS[r].value for r in REASONS] + [None], dtype=object)

    def psp_index(self, psp: np.ndarray | Sequence[str] | str, n: int) -> np.ndarray:
        """PSP names to indices in catalogue order (one name for all rows, or one per row)."""
        if isinstance(psp, str):
            return np.full(n, self.psps.index(psp), dtype=np.int64)
        index = pd.Categorical(np.asarray(psp, dtype=object), categories=list(self.psps)).codes
        if (index < 0).any():
            raise KeyError("unknown PSP name(s) for this catalogue")
        return index.astype(np.int64)

    # ------------------------------------------------------------------ transactions

    def sample_transactions(
        self, n: int, start: dt.datetime | None = None, days: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> pd.DataFrame:
        """``n`` routable transactions (at least one eligible PSP), contract columns plus hidden
        ``_customer``, ``_issuer`` and ``_customer_risk``."""
        return self.sample_routable(n, start, days, rng)[0]

    def sample_routable(
        self, n: int, start: dt.datetime | None = None, days: float | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Like :meth:`sample_transactions`, with the :meth:`routable` matrix of the rows returned."""
        rng = rng if rng is not None else np.random.default_rng([self.seed, 0x7A])
        return sample_transactions(
            n, start or self.config.start, days or self.config.days, self.catalog, self.issuers,
            self.config.traffic, rng, self.seed, eligibility=self.routable,
        )

    def routable(self, transactions: pd.DataFrame) -> np.ndarray:
        """Eligibility (n, n_psps) per the catalogue, minus a new PSP before it goes live."""
        eligible = eligibility_by_profile(self.catalog, transactions)
        launch = self.config.new_psp
        if launch is not None and launch.name in self.psps:
            before = (transactions["timestamp"] < pd.Timestamp(launch.available_from)).to_numpy()
            eligible[:, self.psps.index(launch.name)] &= ~before
        return eligible

    def encode(self, transactions: pd.DataFrame) -> Encoded:
        """Codes and the per-transaction (PSP-independent) fraud and customer decline probabilities."""
        n = len(transactions)
        optional = {"issuer_country": None, "card_network": None, "card_type": None, "first_deposit": False,
                    "three_ds": False}
        frame = transactions.assign(**{k: v for k, v in optional.items() if k not in transactions})
        country = _lookup(frame["country"], self.countries, len(self.countries))
        issuer_country = frame["issuer_country"].where(frame["issuer_country"].notna(), frame["country"])
        card_country = _lookup(issuer_country, self.countries, len(self.countries))
        region = np.where(card_country < len(self.countries),
                          np.append(self._country_region, -1)[card_country], -1)
        currency = _lookup(frame["currency"], self.currencies, 0)
        fx_rate = self._fx[currency]
        amount = frame["amount"].astype(float).to_numpy()
        amount_eur = amount / fx_rate
        method = _lookup(frame["payment_method"], METHODS, len(METHODS))
        is_card = method == METHODS.index("card")
        if "_issuer" in frame:
            issuer = frame["_issuer"].to_numpy(dtype=np.int64)
        else:
            issuer = frame["card_bin"].map(self._bin_issuer).fillna(-1).to_numpy(dtype=np.int64)
        risk = frame["_customer_risk"].to_numpy(dtype=float) if "_customer_risk" in frame else np.zeros(n)
        three_ds = frame["three_ds"].to_numpy(dtype=bool)
        first = frame["first_deposit"].to_numpy(dtype=bool)
        vertical = _lookup(frame["vertical"], VERTICALS, len(VERTICALS))
        high_risk = np.isin(vertical, [VERTICALS.index(v.value) for v in HIGH_RISK_VERTICALS])
        log_amount = np.log(np.maximum(amount_eur, 0.01) / 50.0)
        deposit = (frame["type"].astype(str) == "deposit").to_numpy()
        card_type = frame["card_type"].astype(str).to_numpy()
        q_hard = expit(-4.6 + np.where(is_card, 0.0, -0.5) + 0.8 * risk + 0.5 * first - 0.9 * three_ds
                       + 0.3 * high_risk + 0.15 * np.clip(log_amount, -2, 4))
        q_customer = np.where(
            deposit,
            expit(-2.7 + 0.9 * risk + 0.5 * (card_type == "prepaid") + 0.15 * (card_type == "debit")
                  + 0.3 * np.clip(log_amount, -3, 5) + 0.2 * first),
            expit(-4.0 + 0.5 * risk),
        )
        return Encoded(
            n=n, country=country, region=region, network=_lookup(frame["card_network"], NETWORKS, len(NETWORKS)),
            method=method, vertical=vertical, currency=currency, fx_rate=fx_rate, amount=amount,
            amount_eur=amount_eur, is_card=is_card, three_ds=three_ds, issuer=issuer, q_hard=q_hard,
            q_customer=q_customer, hard_table=np.where(is_card, 0, 1),
            customer_table=np.where(~deposit, 2, np.where(is_card, 0, 1)),
            ids=frame["id"].to_numpy(dtype=object),
        )

    # ------------------------------------------------------------------ the truth

    def _path(self, enc: Encoded, psp: np.ndarray, at_us: np.ndarray, attempt) -> dict[str, np.ndarray]:
        """PSP-dependent parts: system-failure probability, timeout share, approval logit, cross-border."""
        home = np.where(enc.region >= 0, self._home[psp, np.maximum(enc.region, 0)], True)
        cross = ~home
        issuer = enc.issuer
        known = issuer >= 0
        affinity = np.where(known, self.issuers.affinity[np.maximum(issuer, 0), psp], 0.0)
        quality = np.where(known, self.issuers.issuers["quality"].to_numpy()[np.maximum(issuer, 0)], 0.0)
        days = (at_us - self._start_us) / 86_400e6
        hour = (at_us // 1_000_000 % 86_400) / 3_600.0
        seasonal = self.config.seasonality_strength * np.cos(
            2 * np.pi * (hour - 15.0 - self.seasonal_phase_hours[psp]) / 24.0
        )
        region_drift = np.where(enc.region >= 0, self.region_drift[psp, np.maximum(enc.region, 0)], 0.0)
        logit = (
            self._base[psp] + self._cross[psp] * cross + self._country_effect[psp, enc.country]
            + self._network_effect[psp, enc.network] + self._method_effect[psp, enc.method]
            + self._vertical_effect[psp, enc.vertical] + self._three_ds[psp] * enc.three_ds
            + self._amount_sens[psp] * np.log(np.maximum(enc.amount_eur, 0.01) / 50.0)
            + affinity + quality + seasonal + (self.drift[psp] + region_drift) * days / 30.0
            + RETRY_PENALTY * (np.asarray(attempt) - 1)
        )
        q_system = self._error[psp] + self._timeout[psp]
        timeout_share = self._timeout[psp] / q_system
        slow = np.ones(enc.n)
        for incident in self.incidents:
            if incident.psp not in self.psps:
                continue
            hit = (psp == self.psps.index(incident.psp)) & (at_us >= pd.Timestamp(incident.start).value // 1000) \
                & (at_us < pd.Timestamp(incident.end).value // 1000)
            if incident.country is not None:
                hit &= enc.country == (self.countries.index(incident.country) if incident.country in self.countries else -2)
            if incident.network is not None:
                hit &= enc.network == (NETWORKS.index(incident.network) if incident.network in NETWORKS else -2)
            if incident.kind == "outage":
                q_system = np.where(hit, 0.97, q_system)
                timeout_share = np.where(hit, 0.5, timeout_share)
            else:
                q_system = np.where(hit, q_system + 0.35 * (1 - q_system), q_system)
                timeout_share = np.where(hit, 0.6, timeout_share)
                logit = np.where(hit, logit - 0.6, logit)
                slow = np.where(hit, 2.0, slow)
        return {"q_system": q_system, "timeout_share": timeout_share, "logit": logit, "cross": cross, "slow": slow}

    def approval_probability(self, transactions: pd.DataFrame | Encoded, psp, at=None, attempt=1) -> np.ndarray:
        """The TRUE probability that ``psp`` approves each transaction at time ``at`` (default: its own
        timestamp). ``psp``: one name or one per row. The oracle for benchmarks and tests."""
        enc = transactions if isinstance(transactions, Encoded) else self.encode(transactions)
        psp_index = self.psp_index(psp, enc.n)
        at_us = self._at(transactions, at, enc.n)
        path = self._path(enc, psp_index, at_us, attempt)
        return (1 - path["q_system"]) * (1 - enc.q_hard) * (1 - enc.q_customer) * expit(path["logit"])

    def approval_matrix(self, transactions: pd.DataFrame | Encoded, at=None, attempt=1) -> np.ndarray:
        """True approval probability of every catalogue PSP, shape (n, n_psps), catalogue order."""
        enc = transactions if isinstance(transactions, Encoded) else self.encode(transactions)
        return np.column_stack([self.approval_probability(enc, name, self._at(transactions, at, enc.n), attempt)
                                for name in self.psps]) if enc.n else np.zeros((0, len(self.psps)))

    def _at(self, transactions, at, n: int) -> np.ndarray:
        if at is None:
            if isinstance(transactions, Encoded):
                raise ValueError("pass 'at' with encoded transactions")
            return _timestamps_us(transactions["timestamp"], n)
        if isinstance(at, np.ndarray) and at.dtype == np.int64:
            return at
        return _timestamps_us(at, n)

    def uniforms(self, transaction_ids, psps, seed: int | None = None, attempt=None) -> np.ndarray:
        """Reproducible draws (n, 6) per (transaction, PSP): common random numbers across policies.
        See :func:`payroute.simulator.draws.attempt_draws`; ``seed`` defaults to the world's."""
        return attempt_draws(transaction_ids, psps, self.seed if seed is None else seed, attempt)

    def attempt(self, transactions: pd.DataFrame | Encoded, psp, at=None, attempt=1,
                uniforms: np.ndarray | None = None) -> pd.DataFrame:
        """Outcomes of attempting each transaction at ``psp`` (one name or one per row) at ``at``.

        ``uniforms`` (n, 6) from :meth:`uniforms` (default: the world's draws for these transactions and
        PSPs). Returns ``status, decline_code, decline_reason, decline_class, latency_ms, fee, fx_cost,
        fee_eur, fx_cost_eur`` (money rounded to 4 decimals, fees by :func:`payroute.catalog.fee_formula`).
        """
        enc = transactions if isinstance(transactions, Encoded) else self.encode(transactions)
        n = enc.n
        psp_index = self.psp_index(psp, n)
        at_us = self._at(transactions, at, n)
        u = uniforms if uniforms is not None else self.uniforms(enc.ids, np.asarray(self.psps, dtype=object)[psp_index])
        path = self._path(enc, psp_index, at_us, attempt)
        q_sys, q_hard, q_cust = path["q_system"], enc.q_hard, enc.q_customer
        system = u[:, U_SYSTEM] < q_sys
        timeout = system & (u[:, U_SYSTEM] < q_sys * path["timeout_share"])
        hard = ~system & (u[:, U_HARD] < q_hard)
        customer = ~system & ~hard & (u[:, U_CUSTOMER] < q_cust)
        approved = ~system & ~hard & ~customer & (u[:, U_APPROVE] < expit(path["logit"]))
        soft = ~system & ~hard & ~customer & ~approved

        reason = np.full(n, len(REASONS), dtype=np.int64)  # index len(REASONS) = no reason
        reason[system & ~timeout] = REASON_INDEX[DeclineReason.psp_error]
        reason[timeout] = REASON_INDEX[DeclineReason.psp_timeout]
        v_hard = np.clip(u[:, U_HARD] / np.maximum(q_hard, 1e-12), 0, 1 - 1e-12)
        hard_reason = np.choose(enc.hard_table, [reason_from_table(v_hard, t) for t in HARD_TABLES])
        reason[hard] = hard_reason[hard]
        v_cust = np.clip(u[:, U_CUSTOMER] / np.maximum(q_cust, 1e-12), 0, 1 - 1e-12)
        customer_reason = np.choose(enc.customer_table, [reason_from_table(v_cust, t) for t in CUSTOMER_TABLES])
        reason[customer] = customer_reason[customer]
        hour = (at_us // 1_000_000 % 86_400) / 3_600.0
        europe = np.isin(enc.region, [self.regions.index(r) for r in ("EU", "UK") if r in self.regions])
        soft_pick = soft_reason(u[:, U_REASON], path["cross"], europe & enc.is_card & ~enc.three_ds, hour)
        reason[soft] = soft_pick[soft]

        status = np.select([approved, timeout, system], [0, 3, 2], 1)
        has_reason = reason < len(REASONS)
        z = ndtri(u[:, U_LATENCY])
        latency = self._latency[psp_index] * np.exp(self._latency_sigma[psp_index] * z) * path["slow"]
        latency = np.where(system & ~timeout, 0.2 * self._latency[psp_index] * np.exp(0.3 * z), latency)
        latency = np.where(timeout, self._timeout_ms[psp_index] * (1 + 0.1 * u[:, U_LATENCY]), latency)

        out = pd.DataFrame(
            {
                "status": string_column(status, STATUSES),
                "decline_code": string_column(np.where(has_reason, psp_index * len(REASONS) + reason, -1),
                                              self._codes.ravel()),
                "decline_reason": string_column(np.where(has_reason, reason, -1), self._reason_values[:-1]),
                "decline_class": string_column(np.where(has_reason, reason, -1), self._class_values[:-1]),
                "latency_ms": np.round(np.clip(latency, 1.0, 600_000.0), 1),
            }
        )
        for column, values in self.costs(enc, psp_index, approved).items():
            out[column] = values
        return out

    def costs(self, enc: Encoded, psp_index: np.ndarray, approved: np.ndarray) -> dict[str, np.ndarray]:
        """Fee and FX cost per attempt in the transaction currency and in EUR (the catalogue's fee rule)."""
        fee = np.zeros(enc.n)
        fx_cost = np.zeros(enc.n)
        needs_fx = self._needs_fx[psp_index, enc.currency].astype(float)
        for j, name in enumerate(self.psps):
            rows = psp_index == j
            if rows.any():
                fee[rows], fx_cost[rows] = fee_formula(
                    enc.amount[rows], enc.fx_rate[rows], self.catalog.by_name[name].fees,
                    approved[rows].astype(float), needs_fx[rows],
                )
        fee, fx_cost = _round_money(fee), _round_money(fx_cost)
        return {"fee": fee, "fx_cost": fx_cost, "fee_eur": _round_money(fee / enc.fx_rate),
                "fx_cost_eur": _round_money(fx_cost / enc.fx_rate)}
