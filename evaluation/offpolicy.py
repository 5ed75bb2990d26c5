"""Off-policy evaluation on a logged history: candidate policies' action distributions, a reward model
for DR, the simulator's ground truth when it exists, and the validation loop over seeds.

Logs are split by time: the first ``fit_fraction`` fits what needs fitting (rules, the reward model);
the estimate is over the remaining first attempts, so nothing is scored on what it was fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from payroute.catalog import Catalog
from payroute.evaluation.logged import LoggedFeedback, feedback_from_history
from payroute.evaluation.ope import ESTIMATORS, PolicyEstimate
from payroute.evaluation.policies import CountryMethodRules, DecisionBatch, StaticPriority
from payroute.evaluation.stream import segment_keys

OPE_POLICIES = ("static", "rules", "uniform", "logging", "oracle")
TRUTH_FILE = Path("truth") / "true_approval.parquet"


@dataclass(frozen=True)
class LoggedSplit:
    """What the estimators need: the evaluation feedback, and the fit part of the history."""

    feedback: LoggedFeedback
    fit_transactions: pd.DataFrame
    fit_attempts: pd.DataFrame
    priorities: np.ndarray


def split_logs(transactions: pd.DataFrame, attempts: pd.DataFrame, catalog: Catalog,
               fit_fraction: float = 0.5) -> LoggedSplit:
    """Time-split a history; the later part becomes :class:`LoggedFeedback` over the catalogue's PSPs."""
    ordered = transactions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * fit_fraction)
    fit, evaluate = ordered.iloc[:cut], ordered.iloc[cut:].reset_index(drop=True)
    eligible, _ = catalog.eligibility_matrix(evaluate)
    feedback = feedback_from_history(evaluate, attempts, eligible, catalog.psp_names)
    fit_attempts = attempts[attempts["transaction_id"].isin(fit["id"])]
    priorities = np.array([catalog.by_name[name].static_priority for name in catalog.psp_names])
    return LoggedSplit(feedback, fit, fit_attempts, priorities)


def _one_hot(rankings: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(rankings), k))
    out[np.arange(len(rankings)), rankings[:, 0]] = 1.0
    return out


def _batch(feedback: LoggedFeedback) -> DecisionBatch:
    n = feedback.n_rounds
    return DecisionBatch(np.arange(n), feedback.transactions, feedback.eligible,
                         segment_keys(feedback.transactions), np.zeros(n))


def action_distribution(name: str, split: LoggedSplit, truth: np.ndarray | None = None,
                        logging: np.ndarray | None = None) -> np.ndarray:
    """The candidate's probability of putting each PSP first, (n, k), on the evaluation contexts."""
    feedback = split.feedback
    k = len(feedback.psps)
    eligible = feedback.eligible
    if name == "uniform":
        return eligible / eligible.sum(axis=1, keepdims=True)
    if name == "static":
        return _one_hot(StaticPriority(feedback.psps, split.priorities).select(_batch(feedback)).rankings, k)
    if name == "rules":
        rules = CountryMethodRules(feedback.psps, split.priorities).fit(split.fit_transactions, split.fit_attempts)
        return _one_hot(rules.select(_batch(feedback)).rankings, k)
    if name in ("oracle", "logging"):
        table = truth if name == "oracle" else logging
        if table is None:
            raise ValueError(f"policy {name!r} needs the simulator's truth file ({TRUTH_FILE})")
        if name == "logging":
            return table
        scores = np.where(eligible, table, -np.inf)
        return _one_hot(np.argsort(-scores, axis=1, kind="stable"), k)
    raise ValueError(f"unknown policy {name!r}; expected one of {OPE_POLICIES}")


def segment_reward_model(split: LoggedSplit, strength: float = 20.0) -> np.ndarray:
    """q̂(x, a): first-attempt approval per country × method × PSP on the fit part, shrunk toward the
    PSP's overall rate with ``strength`` pseudo-observations; shape (n, k) on the evaluation contexts."""
    first = split.fit_attempts[split.fit_attempts["attempt"] == 1]
    joined = first.merge(split.fit_transactions[["id", "country", "payment_method"]], left_on="transaction_id",
                         right_on="id")
    joined["approved"] = (joined["status"].astype(str) == "approved").astype(float)
    overall = joined.groupby("psp")["approved"].mean()
    cells = joined.groupby(["country", "payment_method", "psp"])["approved"].agg(["sum", "size"])
    feedback = split.feedback
    frame = feedback.transactions
    out = np.empty(feedback.eligible.shape)
    base = float(joined["approved"].mean()) if len(joined) else 0.5
    for j, psp in enumerate(feedback.psps):
        prior = float(overall.get(psp, base))
        keys = pd.MultiIndex.from_arrays([frame["country"].astype(str), frame["payment_method"].astype(str),
                                          np.full(len(frame), psp)])
        stats = cells.reindex(keys)
        successes, size = stats["sum"].fillna(0).to_numpy(), stats["size"].fillna(0).to_numpy()
        out[:, j] = (successes + strength * prior) / (size + strength)
    return np.clip(out, 0.0, 1.0) * feedback.eligible


def truth_matrix(truth: pd.DataFrame, feedback: LoggedFeedback, column: str) -> np.ndarray:
    """A long ``transaction_id, psp, <column>`` table as (n, k) on the evaluation contexts (0 elsewhere)."""
    wide = truth.pivot_table(index="transaction_id", columns="psp", values=column, aggfunc="first")
    wide = wide.reindex(index=feedback.transactions["id"], columns=list(feedback.psps))
    return wide.fillna(0.0).to_numpy()


def true_value(action_dist: np.ndarray, truth: np.ndarray) -> float:
    """The candidate's expected first-attempt approval on these contexts under the true probabilities."""
    return float(np.mean(np.sum(action_dist * truth, axis=1)))


def evaluate_policy(name: str, split: LoggedSplit, *, rng: np.random.Generator, estimators=("ips", "snips", "dr"),
                    truth: np.ndarray | None = None, logging: np.ndarray | None = None,
                    n_bootstrap: int = 200) -> tuple[list[PolicyEstimate], float | None]:
    """Estimates of one candidate (and its true value when the truth is known)."""
    action_dist = action_distribution(name, split, truth, logging)
    reward_model = segment_reward_model(split)
    results = [ESTIMATORS[e]().evaluate(split.feedback, action_dist, reward_model, rng=rng, n_bootstrap=n_bootstrap)
               for e in estimators]
    return results, (None if truth is None else true_value(action_dist, truth))


def validate(seeds, n_transactions: int, policies=("static", "rules", "uniform", "oracle"), days: float = 14.0,
             n_bootstrap: int = 200) -> pd.DataFrame:
    """OPE against the simulator's ground truth, one simulated history per seed: one row per
    (seed, policy, estimator) with estimate, interval, truth, relative error, coverage and ESS."""
    from payroute.simulator.config import SimulationConfig
    from payroute.simulator.history import simulate_history

    rows = []
    for seed in seeds:
        history = simulate_history(SimulationConfig(n_transactions=n_transactions, days=days), seed=seed)
        catalog = history.world.catalog
        split = split_logs(history.transactions, history.attempts, catalog)
        truth = truth_matrix(history.true_approval, split.feedback, "p_approve")
        logging = truth_matrix(history.logging_probabilities, split.feedback, "propensity")
        rng = np.random.default_rng([seed, 0x0BE])
        for name in policies:
            estimates, value = evaluate_policy(name, split, rng=rng, truth=truth, logging=logging,
                                               n_bootstrap=n_bootstrap)
            for estimate in estimates:
                rows.append({"seed": seed, "policy": name, "estimator": estimate.estimator, "estimate": estimate.value,
                             "lower": estimate.lower, "upper": estimate.upper, "truth": value,
                             "relative_error": abs(estimate.value - value) / value,
                             "covered": estimate.lower <= value <= estimate.upper,
                             "ess": estimate.effective_sample_size, "n": estimate.n_rounds})
    return pd.DataFrame(rows)


def validation_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per policy × estimator: mean and max relative error, coverage of the 95 % interval, mean ESS."""
    grouped = rows.groupby(["policy", "estimator"], sort=False)
    return pd.DataFrame({
        "seeds": grouped.size(), "truth": grouped["truth"].mean(), "estimate": grouped["estimate"].mean(),
        "mean_relative_error": grouped["relative_error"].mean(), "max_relative_error": grouped["relative_error"].max(),
        "coverage": grouped["covered"].mean(), "ess": grouped["ess"].mean(), "n": grouped["n"].mean(),
    }).reset_index()
