"""`payroute bench` and `payroute evaluate` end to end on tiny inputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from payroute.cli import main
from payroute.simulator.config import SimulationConfig
from payroute.simulator.history import simulate_history, write_history


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history")
    write_history(simulate_history(SimulationConfig(n_transactions=4_000, days=7), seed=5), folder)
    return folder


def test_bench_json_summary(capsys, tmp_path):
    code = main(["bench", "--scenario", "stationary", "--seeds", "2", "--txns", "600", "--no-model",
                 "--json", "--out", str(tmp_path), "--tracking-uri", "none"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    cells = {(row["policy"], row["metric"]): row for row in summary}
    assert cells[("oracle", "headroom_captured")]["mean"] == pytest.approx(1.0)
    assert cells[("static", "headroom_captured")]["mean"] == pytest.approx(0.0)
    assert cells[("rules", "first_attempt_approval")]["seeds"] == 2
    assert ("payroute", "first_attempt_approval") not in cells
    assert {p.name for p in tmp_path.iterdir()} >= {"rows.csv", "summary.csv", "tables.md"}


def test_bench_seed_offset_picks_other_seeds(capsys, tmp_path):
    code = main(["bench", "--scenario", "stationary", "--seeds", "2", "--seed-offset", "10", "--txns", "300",
                 "--policies", "static,oracle", "--quiet", "--out", str(tmp_path), "--tracking-uri", "none"])
    capsys.readouterr()
    assert code == 0
    assert sorted(set(pd.read_csv(tmp_path / "rows.csv")["seed"])) == [11, 12]


@pytest.mark.parametrize("policy", ["rules", "oracle"])
def test_evaluate_on_simulated_history_reports_truth(capsys, logs, policy):
    assert main(["evaluate", "--policy", policy, "--logs", str(logs), "--json", "--bootstrap", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["estimator"] for r in rows] == ["ips", "snips", "dr"]
    # 2,000 evaluated rounds (seed 5): SNIPS and DR within 5 % of the truth (their sd is ~1-2 %); IPS,
    # unnormalised, within 12 % (sd up to ~4 % when the candidate is far from the logging policy).
    tolerance = {"ips": 0.12, "snips": 0.05, "dr": 0.05}
    for row in rows:
        assert row["lower"] <= row["estimate"] <= row["upper"]
        assert abs(row["estimate"] - row["truth"]) / row["truth"] < tolerance[row["estimator"]]
        assert 0 < row["ess"] <= row["n"] == 2_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["evaluate", "--policy", "rules"], "--logs DIR or --state-dir DIR is required"),
     (["evaluate", "--logs", "/nonexistent-payroute"], "file not found"),
     (["bench", "--seeds", "0"], "--seeds must be >= 1"),
     (["bench", "--seed-offset", "-1"], "--seed-offset must be >= 0")],
)
def test_cli_refuses(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)
