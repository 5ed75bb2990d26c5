"""Logged bandit feedback: what a logging policy chose, with the propensity it recorded at decision time.

A typed, frozen record instead of Open Bandit Pipeline's plain dict, so that shapes are checked once
(:func:`LoggedFeedback.__post_init__`) and every estimator can trust them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LoggedFeedback:
    """First-attempt decisions of a logging policy over ``n`` transactions and ``k`` PSPs.

    Attributes
    ----------
    psps : tuple[str, ...], length k
        Column order of every ``(n, k)`` array.
    actions : int array, shape (n,)
        Index into ``psps`` of the PSP the logging policy tried first.
    rewards : float array, shape (n,)
        1.0 when that attempt was approved, else 0.0 (any value in [0, 1] is accepted).
    propensities : float array, shape (n,)
        Probability the logging policy gave ``actions[i]``, recorded when it decided; in (0, 1].
    eligible : bool array, shape (n, k)
        Which PSPs the catalogue allowed for each transaction; the logged action is always eligible.
    transactions : DataFrame with n rows, optional
        The contexts (contract columns), in the same order; candidate policies read them.
    """

    psps: tuple[str, ...]
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    eligible: np.ndarray
    transactions: pd.DataFrame | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.actions)
        k = len(self.psps)
        if self.rewards.shape != (n,) or self.propensities.shape != (n,):
            raise ValueError("actions, rewards and propensities must be 1-d arrays of one length")
        if self.eligible.shape != (n, k):
            raise ValueError(f"eligible must have shape (n, k) = ({n}, {k})")
        if n == 0:
            raise ValueError("logged feedback is empty")
        if not np.issubdtype(self.actions.dtype, np.integer) or self.actions.min() < 0 or self.actions.max() >= k:
            raise ValueError("actions must be integer indices into psps")
        if not np.all((self.propensities > 0) & (self.propensities <= 1)):
            raise ValueError("propensities must lie in (0, 1]")
        if not np.all((self.rewards >= 0) & (self.rewards <= 1)):
            raise ValueError("rewards must lie in [0, 1]")
        if not self.eligible[np.arange(n), self.actions].all():
            raise ValueError("a logged action is not eligible for its transaction")
        if self.transactions is not None and len(self.transactions) != n:
            raise ValueError("transactions must have one row per logged decision")

    @property
    def n_rounds(self) -> int:
        return len(self.actions)


def feedback_from_history(transactions: pd.DataFrame, attempts: pd.DataFrame, eligible: np.ndarray,
                          psps: tuple[str, ...]) -> LoggedFeedback:
    """First attempts of a history (contract columns) as logged feedback.

    ``eligible`` is ``(len(transactions), k)`` in the order of ``transactions``; transactions without a
    first attempt carrying a propensity are dropped (with their eligibility row).
    """
    first = attempts[(attempts["attempt"] == 1) & attempts["propensity"].notna()]
    first = first.drop_duplicates("transaction_id").set_index("transaction_id")
    keep = transactions["id"].isin(first.index).to_numpy()
    contexts = transactions[keep].reset_index(drop=True)
    rows = first.loc[contexts["id"]]
    index = {name: j for j, name in enumerate(psps)}
    unknown = set(rows["psp"]) - set(index)
    if unknown:
        raise ValueError(f"attempts name PSP(s) not in the catalogue: {', '.join(sorted(unknown))}")
    return LoggedFeedback(
        psps=tuple(psps),
        actions=rows["psp"].map(index).to_numpy(dtype=np.int64),
        rewards=(rows["status"].astype(str) == "approved").to_numpy(dtype=float),
        propensities=rows["propensity"].to_numpy(dtype=float),
        eligible=np.asarray(eligible, bool)[keep],
        transactions=contexts,
    )
