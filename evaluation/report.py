"""Bench outputs: the headline table, CSV files and figures, Markdown for docs, and the MLflow run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HEADLINE = (
    ("first_attempt_approval", "first-attempt approval", 100, 2),
    ("final_approval", "final approval", 100, 2),
    ("headroom_captured", "headroom captured", 100, 0),
    ("regret_pp", "regret (pp)", 1, 2),
    ("cost_bps", "cost (bps)", 1, 0),
    ("attempts_per_transaction", "attempts/txn", 1, 3),
    ("exploration_cost_pp", "exploration cost (pp)", 1, 2),
    ("decisions_to_drop", "decisions to <10%", 1, 0),
    ("minutes_to_drop", "minutes to <10%", 1, 0),
    ("decisions_to_return", "decisions to return", 1, 0),
)


def _cell(mean: float, lower: float, upper: float, scale: float, digits: int) -> str:
    if pd.isna(mean):
        return "–"
    if pd.isna(lower) or lower == upper:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {(upper - lower) / 2 * scale:.{digits}f}"


def headline_table(summary: pd.DataFrame, scenario: str | None = None) -> pd.DataFrame:
    """One row per scenario × policy, one column per headline metric as ``mean ± half-width`` (95 %)."""
    frame = summary if scenario is None else summary[summary["scenario"] == scenario]
    present = set(frame["metric"])
    rows = []
    for (name, policy), group in frame.groupby(["scenario", "policy"], sort=False):
        by_metric = group.set_index("metric")
        row = {"scenario": name, "policy": policy}
        for metric, label, scale, digits in HEADLINE:
            if metric in present:
                values = by_metric.loc[metric] if metric in by_metric.index else None
                row[label] = "–" if values is None else _cell(values["mean"], values["lower"], values["upper"], scale, digits)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_tables(summary: pd.DataFrame) -> str:
    """One Markdown table per scenario (columns that are empty in that scenario dropped)."""
    parts = []
    for scenario in summary["scenario"].unique():
        table = headline_table(summary, scenario).drop(columns="scenario")
        table = table.loc[:, [c for c in table.columns if c == "policy" or (table[c] != "–").any()]]
        header = "| " + " | ".join(table.columns) + " |"
        rule = "|" + "|".join("---" for _ in table.columns) + "|"
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
        parts.append(f"### {scenario}\n\n" + "\n".join([header, rule, *body]))
    return "\n\n".join(parts) + "\n"


def figures(results) -> dict[str, object]:
    """Approval over time per scenario, and traffic share by PSP for payroute (or the best policy run)."""
    from payroute.evaluation.plots import approval_over_time, traffic_share

    out = {}
    for name, result in results.items():
        if not result.series:
            continue
        out[f"{name}_approval_over_time.png"] = approval_over_time(result.series, f"{name}: first-attempt approval")
        policy = next((p for p in ("payroute", "success_rate", "oracle") if p in result.series), None)
        if policy:
            out[f"{name}_traffic_share_{policy}.png"] = traffic_share(result.series[policy],
                                                                      f"{name}: first-attempt share by PSP ({policy})")
    return out


def write_outputs(directory: str | Path, rows: pd.DataFrame, summary: pd.DataFrame, results) -> Path:
    import matplotlib.pyplot as plt

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / "rows.csv", index=False)
    summary.to_csv(folder / "summary.csv", index=False)
    (folder / "tables.md").write_text(markdown_tables(summary))
    for name, fig in figures(results).items():
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
    return folder


def log_to_mlflow(tracking_uri: str, settings, rows: pd.DataFrame, summary: pd.DataFrame, results,
                  experiment: str = "payroute-bench") -> str:
    """One MLflow run: settings as params, mean metrics per scenario/policy, tables and figures."""
    import tempfile

    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="bench") as run:
        mlflow.log_params({"n_transactions": settings.n_transactions, "seeds": ",".join(map(str, settings.seeds)),
                           "world_seed": settings.world_seed, "batch_size": settings.batch_size,
                           "policies": ",".join(settings.policies), "scenarios": ",".join(results)})
        means = summary[summary["metric"].isin(["first_attempt_approval", "final_approval", "headroom_captured",
                                                "regret_pp", "cost_bps", "decisions_to_drop"])]
        mlflow.log_metrics({f"{r.scenario}.{r.policy}.{r.metric}": float(r.mean)
                            for r in means.itertuples() if pd.notna(r.mean)})
        with tempfile.TemporaryDirectory() as folder:
            write_outputs(folder, rows, summary, results)
            mlflow.log_artifacts(folder)
        return run.info.run_id
