"""The objective: expected value of routing one payment to each PSP, as a pure function of P(approve).

``expected_value``  p · V − E[cost],  E[cost] = p · (fee + FX + chargeback) + (1 − p) · decline fee,
                    V = value of an approved payment (a margin fraction of the EUR amount).
``approval_first``  p, with cost only as a tie-break (1e-6 × E[cost] / amount).
``least_cost``      −E[cost] / max(p, p_min): the expected cost per completed payment when a failure
                    is retried; the default for withdrawals and affiliate payouts.

Fees come from :func:`payroute.catalog.fee_formula`, the one fee rule. It is affine in the amount, so
:class:`FeeTable` evaluates it once per (catalogue, currency) at two amounts and ranks with the
resulting coefficients (a parity test ties them to :func:`payroute.catalog.attempt_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from payroute.catalog import Catalog, fee_formula

APPROVAL_FIRST_TIE_BREAK = 1e-6
GATHERED_CACHE_SIZE = 4096  # (currency, eligible PSP positions) pairs kept by FeeTable.components


@dataclass(frozen=True)
class CostTerms:
    """EUR cost components of one transaction at m PSPs; every array has shape (m,).

    For a batch of n transactions the arrays have shape (n, m) and ``value_if_approved`` and
    ``amount_eur`` shape (n, 1): :func:`expected_cost` and :func:`score` broadcast, element by element.
    """

    fee_if_approved: np.ndarray
    fx_if_approved: np.ndarray
    fee_if_declined: np.ndarray
    chargeback_if_approved: np.ndarray
    value_if_approved: float | np.ndarray
    amount_eur: float | np.ndarray

    @property
    def cost_if_approved(self) -> np.ndarray:
        return self.fee_if_approved + self.fx_if_approved + self.chargeback_if_approved

    def take(self, index: np.ndarray) -> "CostTerms":
        """The terms of a subset of the PSPs (positions ``index``)."""
        return CostTerms(
            self.fee_if_approved[index], self.fx_if_approved[index], self.fee_if_declined[index],
            self.chargeback_if_approved[index], self.value_if_approved, self.amount_eur,
        )


def expected_cost(approval: np.ndarray, terms: CostTerms) -> np.ndarray:
    """E[cost] in EUR; ``approval`` has shape (m,) or (K, m)."""
    cost = approval * terms.cost_if_approved
    declined = (1.0 - approval) * terms.fee_if_declined
    if cost.shape != declined.shape:  # the terms broadcast differently: no in-place sum
        return cost + declined
    cost += declined  # in place, the same bits as ``p·C + (1 − p)·D``
    return cost


def score(objective: str, approval: np.ndarray, terms: CostTerms, *, min_probability: float = 0.05) -> np.ndarray:
    """Objective value per PSP (higher is better); broadcasts over a leading sample axis."""
    cost = expected_cost(approval, terms)
    if objective == "expected_value":
        value = approval * terms.value_if_approved
        if value.shape != cost.shape:  # e.g. a scalar value against per-PSP costs: no in-place difference
            return value - cost
        value -= cost  # in place (a batch scores (rows, K, width) draws): the bits of ``p·V − cost``
        return value
    if objective == "approval_first":
        return approval - APPROVAL_FIRST_TIE_BREAK * cost / np.maximum(terms.amount_eur, 1e-9)
    if objective == "least_cost":
        return -cost / np.maximum(approval, min_probability)
    raise ValueError(f"unknown objective {objective!r}")


class FeeTable:
    """Contract fee coefficients per currency for every catalogue PSP, computed once through ``fee_formula``.

    For a currency, each component (fee if approved, FX if approved, fee if declined) in EUR is
    ``intercept + slope × amount`` with arrays of shape (n_psps,) in ``catalog.psp_names`` order.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._by_currency: dict[str, tuple[np.ndarray, ...]] = {}
        self._gathered: dict[tuple[str, bytes], tuple[np.ndarray, np.ndarray]] = {}  # (currency, PSP positions)

    def coefficients(self, currency: str) -> tuple[np.ndarray, ...]:
        cached = self._by_currency.get(currency)
        if cached is None:
            cached = self._by_currency[currency] = self._compute(currency)
        return cached

    def _compute(self, currency: str) -> tuple[np.ndarray, ...]:
        rate = float(self.catalog.fx_rate(currency))
        rows = []
        for psp in self.catalog.psps:
            needs_fx = float(self.catalog.needs_fx(psp.name, currency))
            at = {
                amount: (fee_formula(amount, rate, psp.fees, 1.0, needs_fx), fee_formula(amount, rate, psp.fees, 0.0, needs_fx))
                for amount in (0.0, 1.0)
            }
            values = []
            for amount in (0.0, 1.0):
                (fee_ok, fx_ok), (fee_no, _) = at[amount]
                values.append((fee_ok / rate, fx_ok / rate, fee_no / rate))
            intercept, at_one = np.array(values[0]), np.array(values[1])
            rows.append(np.concatenate([intercept, at_one - intercept]))
        table = np.array(rows)  # (n_psps, 6): intercepts then slopes
        return tuple(np.ascontiguousarray(table[:, j]) for j in range(6))

    def components(self, currency: str, amount: float, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fee if approved, FX if approved, fee if declined) in EUR at PSP positions ``index``: each
        ``intercept + slope × amount``, the three at once on the coefficients gathered once per
        (currency, positions)."""
        key = (currency, index.tobytes())
        gathered = self._gathered.get(key)
        if gathered is None:
            a_fee, a_fx, a_dec, b_fee, b_fx, b_dec = self.coefficients(currency)
            if len(self._gathered) >= GATHERED_CACHE_SIZE:
                self._gathered.clear()
            gathered = self._gathered[key] = (
                np.stack([a_fee[index], a_fx[index], a_dec[index]]), np.stack([b_fee[index], b_fx[index], b_dec[index]])
            )
        intercepts, slopes = gathered
        fee, fx, declined = intercepts + slopes * amount
        return fee, fx, declined
