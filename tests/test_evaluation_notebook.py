"""The policy-comparison notebook runs end to end on small data and shows every baseline."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "policy_comparison.ipynb"


def test_policy_comparison_notebook_runs_small(monkeypatch, tmp_path):
    monkeypatch.setenv("PAYROUTE_NOTEBOOK_SMALL", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    table_cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.rstrip().endswith("table"))
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) for o in table_cell.outputs)
    for policy in ("uniform", "static", "rules", "success_rate", "thompson", "oracle"):
        assert policy in shown
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
