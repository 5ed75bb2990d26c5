"""Run the real scoring service (``payroute serve``) as a child process: start, wait ready, kill, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """``payroute serve`` on 127.0.0.1 with its own state folder. Without a champion in ``models_dir``
    it starts degraded (static order), or with ``train`` first trains the service's default model there."""

    def __init__(self, state_dir: str | Path, models_dir: str | Path | None = None, port: int | None = None,
                 train: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.models_dir = Path(models_dir) if models_dir else self.state_dir / "models"
        self.port = port or free_port()
        self.train = train
        self.process: subprocess.Popen | None = None
        self.log_path = self.state_dir / "service.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str | None:
        path = self.state_dir / "api_key"
        return path.read_text().strip() if path.exists() else None

    @property
    def outcomes_path(self) -> Path:
        return self.state_dir / "outcomes.sqlite"

    @property
    def has_model(self) -> bool:
        from payroute.serving.cli import has_champion

        return has_champion(self.models_dir)

    def start(self, timeout_s: float = 60.0, training_timeout_s: float = 900.0) -> "ServiceProcess":
        """Start and wait until ready (``training_timeout_s`` when a default model is trained first)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        training = self.train and not self.has_model
        command = [sys.executable, "-m", "payroute.cli", "serve", "--port", str(self.port),
                   "--state-dir", str(self.state_dir), "--models-dir", str(self.models_dir)]
        command += [] if training else ["--no-train"]
        timeout_s = training_timeout_s if training else timeout_s
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYROUTE_API_KEYS")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"scoring service exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"scoring service not ready in {timeout_s}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the service and every descendant: BentoML starts its workers in sessions of their own,
        so killing the process group alone would leave them running (and answering)."""
        import psutil  # installed with BentoML

        if self.process is None:
            return
        try:
            root = psutil.Process(self.process.pid)
            family = [*root.children(recursive=True), root]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            try:
                member.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)
        self.process.wait(timeout=10)
        self.process = None
