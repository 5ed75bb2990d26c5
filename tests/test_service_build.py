"""``bentoml build`` from the repository's ``bentofile.yaml``, as docs/serving.md says: the wheel, then
the Bento, in a copy of the checkout (nothing is written into the working tree); about 5 s."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT_AT_ROOT = {".git", ".venv", "data", "dist", "build", "models", "mlruns", "state", "notebooks"}


def _copy_checkout(target: Path) -> Path:
    """The source tree without the environment, local data or build output."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in {"__pycache__", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints"}
                   or n.endswith(".egg-info")}
        if Path(folder) == ROOT:
            skipped |= LEFT_OUT_AT_ROOT & set(names)
        return skipped

    shutil.copytree(ROOT, target, ignore=ignore)
    return target


def test_bentoml_build_from_the_repository_config(tmp_path):
    source = _copy_checkout(tmp_path / "checkout")
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q",
                            "-w", "dist"], cwd=source, env=env, capture_output=True, text=True, timeout=300)
    assert wheel.returncode == 0, wheel.stderr[-2000:]
    assert [p.name for p in (source / "dist").iterdir()] == ["payroute-0.1.0-py3-none-any.whl"]
    build = subprocess.run([sys.executable, "-m", "bentoml", "build"], cwd=source, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, (build.stdout + build.stderr)[-2000:]

    (bento,) = (tmp_path / "bentoml" / "bentos" / "payroute").glob("*/bento.yaml")
    manifest = yaml.safe_load(bento.read_text())
    assert manifest["service"] == "payroute.serving.service:PayrouteService"
    assert {route["route"] for route in manifest["schema"]["routes"]} >= {"/rank", "/rank_batch", "/feedback"}
    assert (bento.parent / "env" / "python" / "wheels" / "payroute-0.1.0-py3-none-any.whl").is_file()
