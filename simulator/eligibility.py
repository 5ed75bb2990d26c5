"""Eligibility of simulated traffic, computed by the catalogue's own rules once per distinct profile."""

from __future__ import annotations

import numpy as np
import pandas as pd

from payroute.catalog import Catalog

_ELIGIBILITY_FIELDS = ["type", "country", "currency", "payment_method", "card_network", "vertical"]


def eligibility_by_profile(catalog: Catalog, transactions: pd.DataFrame) -> np.ndarray:
    """``catalog.eligibility_matrix(transactions)[0]``, computed once per distinct eligibility profile.

    Rows that agree on the rule fields and sit on the same side of every PSP amount limit (in EUR, the
    catalogue's own arithmetic) get the same answer, so the catalogue's rules run on one representative
    row per profile instead of on every row: the rules stay defined in one place only.
    """
    if len(transactions) == 0:
        return np.zeros((0, len(catalog.psps)), bool)
    rates = {code: float(rate) for code, rate in catalog.fx_rates.items()}
    rate = transactions["currency"].astype(str).map(rates).to_numpy(dtype=float, na_value=np.nan)
    amount_eur = transactions["amount"].astype(float).to_numpy() / rate
    limits = np.unique([float(v) for p in catalog.psps for v in (p.amount_limits.min_eur, p.amount_limits.max_eur)])
    keys = transactions[_ELIGIBILITY_FIELDS].assign(
        _below=np.searchsorted(limits, amount_eur, side="left"),
        _above=np.searchsorted(limits, amount_eur, side="right"),
        _nan=np.isnan(amount_eur),
    )
    group = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().to_numpy()
    _, representative = np.unique(group, return_index=True)
    return catalog.eligibility_matrix(transactions.iloc[representative])[0][group]


