"""Cost of payments: fees and FX in EUR, in basis points of approved volume, and the saving left on the table.

The counterfactual uses the catalogue's one fee rule (:func:`payroute.catalog.fee_formula`) and its one
eligibility rule set (:meth:`payroute.catalog.Catalog.eligibility_matrix`): for every approved payment,
the cost had it been approved at the first attempt by the cheapest eligible PSP. The saving is the
recorded cost of the whole cascade (decline fees included) minus that. It holds approval equal, so it
is an upper bound on what cheaper routing could have saved, not a forecast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from payroute.catalog import Catalog, fee_formula
from payroute.contracts import AttemptStatus

from payroute.reporting.frames import MONEY_SCALE, ReportData

ALL = "all"


def cost_by_psp(data: ReportData) -> pd.DataFrame:
    """Per PSP and overall: fees, FX, total in EUR and in bps of the volume the PSP approved."""
    attempts = data.attempts
    approved = attempts["status"] == AttemptStatus.approved.value
    frame = pd.DataFrame(
        {
            "psp": attempts["psp"],
            "attempts": 1,
            "approved": approved.astype(int),
            "approved_volume_u": np.where(approved, attempts["amount_eur_u"], 0),
            "fees_u": attempts["fee_eur_u"],
            "fx_u": attempts["fx_eur_u"],
        }
    )
    sums = frame.groupby("psp").sum()
    sums.loc[ALL] = sums.sum()
    total = sums["fees_u"] + sums["fx_u"]
    volume = sums["approved_volume_u"]
    table = pd.DataFrame(
        {
            "attempts": sums["attempts"],
            "approved": sums["approved"],
            "approved_volume_eur": volume / MONEY_SCALE,
            "fees_eur": sums["fees_u"] / MONEY_SCALE,
            "fx_eur": sums["fx_u"] / MONEY_SCALE,
            "total_cost_eur": total / MONEY_SCALE,
            "cost_bps": total / volume.where(volume > 0) * 1e4,
        }
    )
    table.index.name = "psp"
    return table.reset_index()


def cheapest_eligible_cost(payments: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """For each approved payment: the cheapest eligible PSP and its contract cost in EUR (units).

    Returns ``id``, ``approving_psp``, ``cost_eur_u`` (recorded), ``cheapest_psp``,
    ``cheapest_cost_eur_u``. PSPs outside the catalogue or payments with no eligible PSP keep their
    recorded cost as the cheapest.
    """
    approved = payments.loc[payments["approved"]].reset_index(drop=True)
    eligible = _eligibility(approved, catalog)
    rates = approved["currency"].astype(str).map({c: float(r) for c, r in catalog.fx_rates.items()}).to_numpy(float)
    amount = approved["amount"].to_numpy(float)
    costs = np.full((len(approved), len(catalog.psps)), np.inf)
    for j, psp in enumerate(catalog.psps):
        needs_fx = (~approved["currency"].isin(psp.settlement_currencies)).to_numpy(float)
        fee, fx_cost = fee_formula(amount, rates, psp.fees, 1.0, needs_fx)
        # Same rounding as attempt_cost: 4 decimals in the payment currency, then 4 in EUR.
        fee_eur = np.rint(np.round(fee, 4) / rates * MONEY_SCALE)
        fx_eur = np.rint(np.round(fx_cost, 4) / rates * MONEY_SCALE)
        costs[:, j] = np.where(eligible[:, j], fee_eur + fx_eur, np.inf)
    best = costs.argmin(axis=1)
    best_cost = costs[np.arange(len(approved)), best]
    none_eligible = ~np.isfinite(best_cost)
    recorded = approved["cost_eur_u"].to_numpy()
    cheapest_psp = np.asarray(catalog.psp_names, dtype=object)[best]
    cheapest_psp[none_eligible] = approved["approving_psp"].to_numpy()[none_eligible]
    return pd.DataFrame(
        {
            "id": approved["id"],
            "approving_psp": approved["approving_psp"],
            "cost_eur_u": recorded,
            "cheapest_psp": cheapest_psp,
            "cheapest_cost_eur_u": np.where(none_eligible, recorded, best_cost).astype("int64"),
        }
    )


def savings_by_psp(data: ReportData, catalog: Catalog) -> pd.DataFrame:
    """Per approving PSP and overall: recorded cost, cheapest-eligible cost, saving (EUR and bps)."""
    cheapest = cheapest_eligible_cost(data.payments, catalog)
    volume = data.payments.set_index("id")["amount_eur_u"]
    cheapest["volume_u"] = volume.reindex(cheapest["id"]).to_numpy()
    cheapest["payments"] = 1
    cheapest["routed_to_cheapest"] = (cheapest["cheapest_psp"] == cheapest["approving_psp"]).astype(int)
    sums = cheapest.groupby("approving_psp")[["payments", "routed_to_cheapest", "volume_u", "cost_eur_u", "cheapest_cost_eur_u"]].sum()
    sums.loc[ALL] = sums.sum()
    saving = sums["cost_eur_u"] - sums["cheapest_cost_eur_u"]
    table = pd.DataFrame(
        {
            "approved_payments": sums["payments"],
            "share_at_cheapest_psp": sums["routed_to_cheapest"] / sums["payments"],
            "approved_volume_eur": sums["volume_u"] / MONEY_SCALE,
            "recorded_cost_eur": sums["cost_eur_u"] / MONEY_SCALE,
            "cheapest_eligible_cost_eur": sums["cheapest_cost_eur_u"] / MONEY_SCALE,
            "saving_eur": saving / MONEY_SCALE,
            "saving_bps": saving / sums["volume_u"].where(sums["volume_u"] > 0) * 1e4,
        }
    )
    table.index.name = "psp"
    return table.reset_index()


def _eligibility(payments: pd.DataFrame, catalog: Catalog) -> np.ndarray:
    """Eligibility of each payment, computed once per distinct (rule fields, amount-limit band).

    Rows that agree on every field the rules read and fall on the same side of every PSP's amount
    limits have the same eligibility, so the catalogue's matrix is evaluated on one representative.
    """
    if payments.empty:
        return np.zeros((0, len(catalog.psps)), bool)
    fields = ["type", "country", "currency", "payment_method", "card_network", "vertical"]
    rates = payments["currency"].astype(str).map({c: float(r) for c, r in catalog.fx_rates.items()}).to_numpy(float)
    amount_eur = payments["amount"].to_numpy(float) / rates
    band = np.zeros(len(payments), dtype="int64")
    for j, psp in enumerate(catalog.psps):
        band |= (amount_eur < float(psp.amount_limits.min_eur)).astype("int64") << (2 * j)
        band |= (amount_eur > float(psp.amount_limits.max_eur)).astype("int64") << (2 * j + 1)
    keys = payments[fields].astype(str).assign(band=band)
    group = keys.groupby(fields + ["band"], sort=False, dropna=False).ngroup().to_numpy()
    _, representative = np.unique(group, return_index=True)
    matrix, _ = catalog.eligibility_matrix(payments.iloc[representative].reset_index(drop=True))
    order = np.empty(group.max() + 1, dtype="int64")
    order[group[representative]] = np.arange(len(representative))
    return matrix[order[group]]
