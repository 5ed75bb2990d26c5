"""The operations notebook runs top to bottom on small data, with the venv's kernel."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from payroute.catalog import load_catalog
from payroute.reporting.example import write_example_history

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "operations_report.ipynb"


def test_notebook_runs_on_a_history_folder(tmp_path, monkeypatch):
    history = write_example_history(tmp_path / "history", copies=5, catalog=load_catalog())
    monkeypatch.setenv("PAYROUTE_REPORT_HISTORY", str(history))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # The kernel is the interpreter running the tests (the project's venv).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "30 payments, 45 attempts" in printed
    assert "britpay" in printed
