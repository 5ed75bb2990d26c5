"""The cost model: what the catalogue's rule fixes, and what is learned from history.

Rule (not learned): contract fee + FX markup per attempt, from :func:`payroute.catalog.fee_formula`
(via :func:`payroute.model_bundle.rule_cost_eur`). Learned (LightGBM regressors, one per head, on approved
attempts): ``chargeback_eur`` — the chargeback amount in EUR later disputed on an approved attempt (0 when
none); ``fee_deviation_eur`` — fee + FX cost actually charged minus what the rule says. Declined attempts'
fee deviations are not modelled (their contract cost is a small flat decline fee).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.model_bundle import COST_HEADS, rule_cost_eur


def cost_targets(history, catalog: Catalog) -> pd.DataFrame:
    """Per attempt: ``transaction_id, attempt`` and the learned heads' targets (NaN unless approved).

    ``history`` has ``transactions`` (amount, currency), ``attempts`` (status, fee_eur, fx_cost_eur) and
    ``chargebacks`` (transaction_id, amount, currency) frames, as :func:`payroute.history.read_history` gives.
    """
    attempts = history.attempts.merge(
        history.transactions[["id", "amount", "currency"]].rename(columns={"id": "transaction_id"}),
        on="transaction_id",
        how="left",
    )
    approved = (attempts["status"].astype(str) == "approved").to_numpy()
    rule = rule_cost_eur(
        catalog,
        attempts["psp"].astype(str).to_numpy(),
        attempts["amount"].to_numpy(dtype=float),
        attempts["currency"].astype(str).to_numpy(),
        approved.astype(float),
    )
    actual = attempts["fee_eur"].to_numpy(dtype=float) + attempts["fx_cost_eur"].to_numpy(dtype=float)
    chargebacks = history.chargebacks
    rates = {code: float(rate) for code, rate in catalog.fx_rates.items()}
    if len(chargebacks):
        lost = chargebacks["amount"].to_numpy(dtype=float) / chargebacks["currency"].astype(str).map(rates).to_numpy(dtype=float)
        per_transaction = pd.Series(lost, index=chargebacks["transaction_id"].to_numpy()).groupby(level=0).sum()
        charged_back = attempts["transaction_id"].map(per_transaction).fillna(0.0).to_numpy(dtype=float)
    else:
        charged_back = np.zeros(len(attempts))
    return pd.DataFrame(
        {
            "transaction_id": attempts["transaction_id"].to_numpy(),
            "attempt": attempts["attempt"].to_numpy(),
            "chargeback_eur": np.where(approved, charged_back, np.nan),
            "fee_deviation_eur": np.where(approved, actual - rule, np.nan),
        }
    )


def attach_cost_targets(table: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """The training table with the cost heads' target columns joined on ``transaction_id, attempt``."""
    table = table.drop(columns=[c for c in COST_HEADS if c in table.columns])
    return table.merge(targets, on=["transaction_id", "attempt"], how="left", validate="one_to_one")


def has_cost_targets(table: pd.DataFrame) -> bool:
    return all(head in table.columns for head in COST_HEADS)
