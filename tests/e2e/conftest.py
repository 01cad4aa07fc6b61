"""A running local stack (`make dev`'s orchestrator, its servers on ports the kernel picks: port 0, each announced
once it listens, so no port is picked free, released and then raced for) for tests that need real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ignore_sigint() -> None:  # as `nohup make dev &` leaves it: background jobs start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalStack:
    def __init__(self, ports: tuple[int, int, int, int] | None = None, ignore_sigint: bool = False,
                 **env: str) -> None:
        self.api, self.moto, self.emu, self.demo = ports or (0, 0, 0, 0)  # 0: what the stack announces when ready
        self.log_dir = Path(tempfile.mkdtemp(prefix="make-dev-logs-"))  # its own: stacks may run side by side
        full_env = {**os.environ, "DEV_LOG_DIR": str(self.log_dir), "API_PORT": str(self.api),
                    "MOTO_PORT": str(self.moto), "EMULATOR_PORT": str(self.emu), "DEMO_PORT": str(self.demo),
                    "SITEVERIFY_PORT": "0", "CHALICE_AUTORELOAD": "0", **env}
        for key in ("PCC_PUBLIC_KEY", "AWS_ENDPOINT_URL"):
            full_env.pop(key, None)
        # output goes to a file: an unread pipe would fill up and block every process of the stack
        self._log = tempfile.NamedTemporaryFile(prefix="local-stack-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", "infra.local_stack"], cwd=ROOT, env=full_env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_ignore_sigint if ignore_sigint else None)
        self.output = ""
        self.stop_seconds = 0.0

    @property
    def ports(self) -> tuple[int, ...]:
        return self.api, self.moto, self.emu, self.demo

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emu}"

    @property
    def demo_url(self) -> str:
        return f"http://127.0.0.1:{self.demo}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        announced = self.log_dir / "ports.json"
        while time.monotonic() < deadline and self.proc.poll() is None and not announced.exists():
            time.sleep(0.2)
        if announced.exists():
            ports = json.loads(announced.read_text())
            self.api, self.moto, self.emu, self.demo = ports["api"], ports["moto"], ports["emulator"], ports["demo"]
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                httpx.get(f"{self.api_url}/health", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError(f"local stack did not come up:\n{self.stop()[-3000:]}")

    def gateway_log_tail(self, lines: int = 40) -> str:
        """The last warnings and errors the gateway logged (its JSON lines, metrics left out)."""
        log = self.log_dir / "gateway.log"
        kept = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                if '"_aws"' not in line and ('"WARNING"' in line or '"ERROR"' in line)]
        return "\n".join(kept[-lines:])

    def stop(self, sig: int = signal.SIGINT) -> str:
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stop_seconds = time.monotonic() - started
        self._log.close()
        self.output = Path(self._log.name).read_text(errors="replace")
        return self.output


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    stack = LocalStack()
    stack.wait_ready()
    yield stack
    stack.stop()
