"""Simulated history: the logging policy routes the world's traffic, with cascades and chargebacks.

:func:`simulate_history` is pure (config, catalogue, seed in; frames out); :func:`write_history` is the
thin I/O shell that writes them under the contract's Parquet schemas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from payroute.catalog import Catalog, dump_catalog, load_catalog
from payroute.history import CATALOG_FILE, write_table
from payroute.simulator.config import ChargebackSettings, SimulationConfig
from payroute.simulator.logging_policy import LoggingPolicy, choose
from payroute.simulator.frames import string_column
from payroute.simulator.world import World

ATTEMPT_COLUMNS = (
    "transaction_id", "attempt", "psp", "timestamp", "status", "decline_code", "decline_reason", "decline_class",
    "latency_ms", "fee", "fx_cost", "fee_eur", "fx_cost_eur", "propensity",
)
CHARGEBACK_REASONS = {
    "fraud_card_absent": 0.45, "not_recognised": 0.20, "services_not_provided": 0.15,
    "duplicate_processing": 0.08, "credit_not_processed": 0.12,
}
TRUTH_DIR = "truth"


@dataclass(frozen=True)
class SimulatedHistory:
    """One simulated history and the truth behind it.

    ``transactions``: one row per transaction, contract columns plus hidden ``_customer``, ``_issuer``,
    ``_customer_risk`` (never written to the public files).
    ``attempts``: one row per attempt, the contract's ``attempts.parquet`` columns; ``propensity`` is
    the logging policy's probability of the PSP it chose (conditional on the untried PSPs for retries).
    ``chargebacks``: one row per chargeback.
    ``true_approval``: ``transaction_id, psp, p_approve`` for every eligible PSP at the first attempt.
    ``logging_probabilities``: ``transaction_id, psp, propensity`` — the logging policy's full
    first-attempt distribution over the eligible PSPs (rows of one transaction sum to 1), same row order
    as ``true_approval``.
    ``world``: the :class:`World` that produced it (oracle for benchmarks and tests).
    """

    transactions: pd.DataFrame
    attempts: pd.DataFrame
    chargebacks: pd.DataFrame
    true_approval: pd.DataFrame
    logging_probabilities: pd.DataFrame
    world: World | None = field(default=None, repr=False, compare=False)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="simulate", unit="step")


def _long(transaction_ids: pd.array, psps: tuple[str, ...], mask: np.ndarray, values: np.ndarray, name: str) -> pd.DataFrame:
    """One row per (transaction, PSP) where ``mask`` holds, in transaction then catalogue order."""
    rows, cols = np.nonzero(mask)
    return pd.DataFrame(
        {"transaction_id": transaction_ids.take(rows), "psp": string_column(cols, psps), name: values[rows, cols]}
    )


def simulate_history(
    config: SimulationConfig | None = None, catalog: Catalog | None = None, seed: int = 0, progress: bool = False
) -> SimulatedHistory:
    """Simulate ``config.n_transactions`` transactions routed by the exploring logging policy.

    Deterministic in ``(config, catalog, seed)``. Vectorised: the only loops are over attempt numbers
    and PSPs.
    """
    config = config if config is not None else SimulationConfig()
    catalog = catalog if catalog is not None else load_catalog()
    bar = _progress(progress, 3 + config.max_attempts)
    world = World(catalog, seed, config)
    rng = np.random.default_rng([seed, 0xA11])
    transactions, eligible = world.sample_routable(config.n_transactions, rng=rng)
    encoded = world.encode(transactions)
    at_first = transactions["timestamp"].dt.as_unit("us").astype("int64").to_numpy()
    _tick(bar)

    policy = LoggingPolicy.from_catalog(catalog, config.exploration_epsilon, config.logging_temperature,
                                        np.random.default_rng([seed, 0x10C]))
    country_row = np.minimum(encoded.country, len(policy.countries) - 1)
    probabilities = policy.probabilities(country_row, eligible)
    truth = world.approval_matrix(encoded, at=at_first)
    ids = transactions["id"].array
    true_approval = _long(ids, world.psps, eligible, truth, "p_approve")
    logging_probabilities = _long(ids, world.psps, eligible, probabilities, "propensity")
    _tick(bar)

    attempts, rows = _cascade(world, encoded, eligible, probabilities, at_first, config.max_attempts, rng, bar,
                              transactions["id"].array)
    chargebacks = _chargebacks(transactions, attempts, rows, config, rng)
    _tick(bar)
    if bar is not None:
        bar.close()
    return SimulatedHistory(transactions, attempts, chargebacks, true_approval, logging_probabilities, world)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def _cascade(world: World, encoded, eligible: np.ndarray, probabilities: np.ndarray, at_first: np.ndarray,
             max_attempts: int, rng: np.random.Generator, bar, transaction_ids: pd.array) -> tuple[pd.DataFrame, np.ndarray]:
    """First attempts for every transaction, then retries on the next PSP after soft failures.
    Returns the attempts and, per attempt, the position of its transaction."""
    n = encoded.n
    psp_names = np.asarray(world.psps, dtype=object)
    active = np.arange(n)
    tried = np.zeros_like(eligible)
    at = at_first.copy()
    frames = []
    for attempt in range(1, max_attempts + 1):
        if len(active) == 0:
            break
        remaining = eligible[active] & ~tried[active]
        weights = np.where(remaining, probabilities[active], 0.0)
        conditional = weights / weights.sum(axis=1, keepdims=True)
        pick = choose(conditional, rng.random(len(active)))
        propensity = conditional[np.arange(len(active)), pick]
        tried[active, pick] = True
        subset = encoded.take(active)
        names = psp_names[pick]
        draws = world.uniforms(subset.ids, names)
        outcome = world.attempt(subset, names, at=at[active], attempt=attempt, uniforms=draws)
        outcome.insert(0, "_row", active)
        outcome.insert(1, "attempt", attempt)
        outcome.insert(2, "_psp", pick)
        outcome.insert(3, "timestamp", at[active])
        outcome["propensity"] = propensity
        frames.append(outcome)
        _tick(bar)
        # Retry on soft failures (soft declines, errors, timeouts) while an untried eligible PSP is left.
        retry = (outcome["decline_class"] == "soft").to_numpy() & (eligible[active] & ~tried[active]).any(axis=1)
        gap_us = (outcome["latency_ms"].to_numpy() * 1e3 + rng.uniform(2e5, 2e6, len(active))).astype(np.int64)
        at[active] = at[active] + gap_us
        active = active[retry]
    attempts = pd.concat(frames, ignore_index=True).sort_values(["_row", "attempt"], kind="stable")
    attempts = attempts.reset_index(drop=True)
    attempts["transaction_id"] = transaction_ids.take(attempts["_row"].to_numpy())
    attempts["psp"] = string_column(attempts["_psp"].to_numpy(), world.psps)
    attempts["timestamp"] = pd.to_datetime(attempts["timestamp"].to_numpy(), unit="us", utc=True)
    return attempts[list(ATTEMPT_COLUMNS)], attempts["_row"].to_numpy()


def chargeback_probability(paid: pd.DataFrame, psp: np.ndarray, settings: ChargebackSettings) -> np.ndarray:
    """Probability that each approved payment is disputed: vertical rate × PSP factor × customer-risk
    factor (mean one), × 0.3 for non-card methods. ``paid``: transactions (with ``_customer_risk`` if
    known); ``psp``: the approving PSP per row."""
    risk = paid["_customer_risk"].to_numpy(dtype=float) if "_customer_risk" in paid else np.zeros(len(paid))
    rate = (
        paid["vertical"].map(settings.vertical_rates).fillna(0.004).to_numpy(dtype=float)
        * pd.Series(np.asarray(psp, dtype=object)).map(settings.psp_factors).fillna(1.0).to_numpy(dtype=float)
        * np.exp(0.7 * risk - 0.5 * (0.7 * 0.6) ** 2)  # mean one over the customer-risk distribution
        * np.where(paid["payment_method"].to_numpy() == "card", 1.0, 0.3)
    )
    return np.clip(rate, 0.0, 1.0)


def _chargebacks(transactions: pd.DataFrame, attempts: pd.DataFrame, rows: np.ndarray, config: SimulationConfig,
                 rng: np.random.Generator) -> pd.DataFrame:
    """Chargebacks on approved payments: rate by vertical × PSP factor × customer risk, days later.
    ``rows``: per attempt, the position of its transaction in ``transactions``."""
    settings = config.chargebacks
    approved = (attempts["status"] == "approved").to_numpy()
    paid = transactions.iloc[rows[approved]]
    rate = chargeback_probability(paid, attempts["psp"].to_numpy()[approved], settings)
    hit = rng.random(len(paid)) < rate
    disputed = paid[hit]
    paid_at = attempts["timestamp"][approved][hit]
    spread = max(settings.mean_delay_days - settings.min_delay_days, 1e-6)
    delay_days = settings.min_delay_days + rng.gamma(2.0, spread / 2.0, len(disputed))
    arrival = paid_at + pd.to_timedelta(np.round(delay_days * 86_400e6).astype(np.int64), unit="us")
    reasons = list(CHARGEBACK_REASONS)
    shares = np.array(list(CHARGEBACK_REASONS.values()))
    frame = pd.DataFrame(
        {
            "transaction_id": disputed["id"].to_numpy(),
            "date": arrival.dt.date.to_numpy(),
            "amount": disputed["amount"].to_numpy(dtype=float),
            "currency": disputed["currency"].to_numpy(),
            "reason": np.asarray(reasons, dtype=object)[rng.choice(len(reasons), len(disputed), p=shares / shares.sum())],
            "_arrival": arrival.dt.as_unit("us").astype("int64").to_numpy(),
        }
    )
    if settings.observed_until_end:
        frame = frame[frame["_arrival"] < pd.Timestamp(config.end).value // 1000]
    return frame.sort_values(["_arrival", "transaction_id"], kind="stable").drop(columns="_arrival").reset_index(drop=True)


def write_history(history: SimulatedHistory, directory: str | Path, catalog: Catalog | None = None) -> dict[str, Path]:
    """Write the public history files (contract schemas, no hidden columns), the catalogue used, and
    the truth (``truth/true_approval.parquet``) for oracles."""
    catalog = catalog if catalog is not None else (history.world.catalog if history.world else load_catalog())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: write_table(frame, name, directory)
        for name, frame in (("transactions", history.transactions), ("attempts", history.attempts),
                            ("chargebacks", history.chargebacks))
    }
    paths["catalog"] = directory / CATALOG_FILE
    dump_catalog(catalog, paths["catalog"])
    truth_dir = directory / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    truth = history.true_approval.assign(propensity=history.logging_probabilities["propensity"].to_numpy())
    paths["true_approval"] = truth_dir / "true_approval.parquet"
    pq.write_table(pa.Table.from_pandas(truth, preserve_index=False), paths["true_approval"], compression="zstd")
    return paths


def approval_summary(attempts: pd.DataFrame) -> pd.DataFrame:
    """Attempts and approval rate per PSP (for the CLI summary and quick looks)."""
    grouped = attempts.assign(approved=attempts["status"] == "approved").groupby("psp")
    return pd.DataFrame({"attempts": grouped.size(), "approval_rate": grouped["approved"].mean()}).sort_values(
        "attempts", ascending=False
    )


__all__ = ["SimulatedHistory", "approval_summary", "chargeback_probability", "simulate_history", "write_history"]
