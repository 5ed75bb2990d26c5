"""Benchmark metrics: per run (one policy, one stream), outage reaction, and means with CIs over seeds.

Approval figures are realised outcomes (common random numbers make differences between policies
low-variance); ``expected_*`` and regret use the world's TRUE probabilities of the choices made.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from payroute.evaluation.harness import RunRecord
from payroute.evaluation.stream import Stream
from payroute.simulator.config import Incident

REACTION_WINDOW = 20  # affected decisions over which the share of the failed PSP is measured
REACTION_SHARE = 0.10  # "traffic to the failed PSP below 10 %"
RECOVERY_FRACTION = 0.5  # "returns": back to half its pre-incident share


def run_metrics(record: RunRecord) -> dict[str, float]:
    """Approval (first attempt, final), regret and exploration cost (pp), cost (bps), attempts."""
    approved_volume = float(record.approved_eur.sum())
    return {
        "first_attempt_approval": float(record.first_approved.mean()),
        "final_approval": float(record.approved.mean()),
        "expected_first_attempt_approval": float(record.first_p.mean()),
        "regret_pp": 100 * float((record.oracle_p - record.first_p).mean()),
        "exploration_cost_pp": 100 * float((record.exploit_p - record.first_p).mean()),
        "cost_bps": 1e4 * float(record.cost_eur.sum()) / approved_volume if approved_volume else math.nan,
        "attempts_per_transaction": float(record.attempts.mean()),
    }


def headroom_captured(policy: float, static: float, oracle: float) -> float:
    """Share of the static→oracle gap a policy closes (1 = oracle, 0 = static)."""
    gap = oracle - static
    return math.nan if gap <= 0 else (policy - static) / gap


def affected_rows(stream: Stream, incident: Incident) -> np.ndarray:
    """Stream rows where the incident's PSP was eligible, had an eligible alternative, and the
    incident's country/network filter matches (rows with no alternative cannot be moved away)."""
    mask = stream.eligible[:, stream.psps.index(incident.psp)] & (stream.eligible.sum(axis=1) >= 2)
    frame = stream.transactions
    if incident.country is not None:
        mask &= (frame["country"].astype(str) == incident.country).to_numpy()
    if incident.network is not None:
        mask &= (frame["card_network"].astype(object) == incident.network).to_numpy()
    return np.flatnonzero(mask)


def _first_below(chosen: np.ndarray, threshold: float, above: bool = False) -> int | None:
    """First index whose forward window of REACTION_WINDOW decisions has share < threshold (>= if above)."""
    if len(chosen) == 0:
        return None
    window = min(REACTION_WINDOW, len(chosen))
    sums = np.convolve(chosen.astype(float), np.ones(window), mode="valid") / window
    hits = np.flatnonzero(sums >= threshold if above else sums < threshold)
    return int(hits[0]) if len(hits) else None


def outage_reaction(record: RunRecord, stream: Stream, incident: Incident) -> dict[str, float]:
    """Affected decisions and minutes until the failed PSP's first-choice share falls below 10 %, and
    after the incident until it is back to half its pre-incident share (NaN: never / not applicable)."""
    rows = affected_rows(stream, incident)
    j = stream.psps.index(incident.psp)
    times = stream.transactions["timestamp"].iloc[rows]
    begin, end = pd.Timestamp(incident.start), pd.Timestamp(incident.end)
    before, during, after = (times < begin).to_numpy(), ((times >= begin) & (times < end)).to_numpy(), (times >= end).to_numpy()
    chosen = record.first_psp[rows] == j
    pre_share = float(chosen[before][-200:].mean()) if before.any() else math.nan
    out = {"pre_incident_share": pre_share, "decisions_to_drop": math.nan, "minutes_to_drop": math.nan,
           "decisions_to_return": math.nan, "minutes_to_return": math.nan,
           "affected_first_attempt_approval": float(record.first_approved[rows[during]].mean()) if during.any() else math.nan}
    drop = _first_below(chosen[during], REACTION_SHARE)
    if drop is not None:
        out["decisions_to_drop"] = drop
        out["minutes_to_drop"] = (times[during].iloc[drop] - begin).total_seconds() / 60
    if pre_share >= REACTION_SHARE:
        back = _first_below(chosen[after], RECOVERY_FRACTION * pre_share, above=True)
        if back is not None:
            out["decisions_to_return"] = back
            out["minutes_to_return"] = (times[after].iloc[back] - end).total_seconds() / 60
    return out


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t interval over seeds (NaNs dropped; one value gives a zero-width interval)."""
    from scipy import stats

    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) == 1:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data)))
    return mean, mean - half, mean + half


def summarize(rows: Sequence[Mapping[str, float | str]]) -> pd.DataFrame:
    """Per scenario × policy: mean, lower, upper of every numeric metric over seeds (long frame)."""
    frame = pd.DataFrame(rows)
    metrics = [c for c in frame.columns if c not in ("scenario", "policy", "seed")]
    out = []
    for (scenario, policy), group in frame.groupby(["scenario", "policy"], sort=False):
        for metric in metrics:
            mean, lower, upper = mean_interval(group[metric].astype(float).tolist())
            out.append({"scenario": scenario, "policy": policy, "metric": metric, "mean": mean,
                        "lower": lower, "upper": upper, "seeds": int(group[metric].notna().sum())})
    return pd.DataFrame(out)


def time_series(record: RunRecord, stream: Stream, rows: np.ndarray, minutes: float = 15.0) -> pd.DataFrame:
    """First-attempt approval and first-choice share per PSP in ``minutes`` bins over ``rows``."""
    bins = np.floor(stream.minutes[rows] / minutes) * minutes
    frame = pd.DataFrame({"minute": bins, "approved": record.first_approved[rows],
                          "psp": np.asarray(stream.psps, dtype=object)[record.first_psp[rows]]})
    approval = frame.groupby("minute")["approved"].mean().rename("first_attempt_approval")
    share = pd.crosstab(frame["minute"], frame["psp"], normalize="index")
    return pd.concat([approval, share], axis=1).reset_index()
