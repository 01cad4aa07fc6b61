"""`make dev`: the whole gateway on this machine.

Starts a moto server (local AWS), the Pipecat Cloud emulator, deploys infra/ into moto, seeds the
secret with the emulator's keys, then runs `chalice local --stage local`, the local event sources (the
SQS poller and the reconcile schedule, which `chalice local` does not run) and the demo page server.

Nothing tracked is written: the stage config `chalice local` reads (with this run's ports and moto's
resource names) is generated into `.local/dev-<pid>/` (git-ignored), a project dir whose `app.py` and
`chalicelib/*.py` link to the real files. Ctrl-C or SIGTERM stops everything it started and removes that
dir; the children also get SIGTERM from the kernel if this launcher is killed outright (`kill -9`), and
the next run removes dirs left by launchers that no longer run.

With real Pipecat Cloud keys in the environment (PCC_PUBLIC_KEY, PCC_PRIVATE_KEY and PCC_AGENTS,
optionally PCC_API_URL) the secret gets those keys and the gateway talks to the real Pipecat Cloud
instead of the emulator (the emulator is not started).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from infra.deploy import DEFAULT_CONFIG, deploy

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / ".local"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PR_SET_PDEATHSIG = 1


class ComponentFailed(RuntimeError):
    pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the launcher dies, however it dies (kill -9 included)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class Stack:
    components: list[Component] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Component:
        print(f"[make dev] starting {name}: {' '.join(cmd)}", flush=True)
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
        component = Component(name, proc)
        self.components.append(component)
        return component

    def check_alive(self) -> None:
        for component in self.components:
            code = component.proc.poll()
            if code is not None:
                raise ComponentFailed(f"{component.name} exited with code {code} (its output is above)")

    def stop(self) -> None:
        for component in reversed(self.components):
            if component.proc.poll() is None:
                component.proc.send_signal(signal.SIGINT)
        for component in self.components:
            try:
                component.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                component.proc.kill()
                component.proc.wait()


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def taken_ports(ports: dict[str, tuple[int, str]]) -> list[str]:
    """One line per port that something else already holds."""
    return [f"port {port} ({var}, for the {what}) is already in use: stop what holds it "
            f"(`ss -ltnp 'sport = :{port}'`) or choose another, e.g. `{var}={port + 1} make dev`"
            for var, (port, what) in ports.items() if port_in_use(port)]


def wait_http(url: str, stack: Stack, component: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise ComponentFailed(f"{component} did not answer {url} within {timeout:.0f} s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_runs(runs: Path = RUNS) -> None:
    """Generated project dirs of launchers that are gone (killed with -9, say)."""
    for run in runs.glob("dev-*"):
        pid = run.name.removeprefix("dev-")
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(run, ignore_errors=True)


def generated_project(run_dir: Path, config: Path = DEFAULT_CONFIG) -> Path:
    """A Chalice project dir for this run: its own .chalice/config.json, the real code linked in.
    `chalicelib` is a real dir of per-file links so `chalice local --autoreload` (which does not follow
    linked dirs) still sees edits, and it watches only these files, never .venv or node_modules."""
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / ".chalice").mkdir(parents=True)
    (run_dir / "chalicelib").mkdir()
    shutil.copy(config, run_dir / ".chalice" / "config.json")
    (run_dir / "app.py").symlink_to(ROOT / "app.py")
    for source in sorted((ROOT / "chalicelib").glob("*.py")):
        (run_dir / "chalicelib" / source.name).symlink_to(source)
    return run_dir


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # stop exactly as on Ctrl-C


def main() -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    moto_port = int(os.environ.get("MOTO_PORT", "5000"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8790"))
    api_port = int(os.environ.get("API_PORT", "8000"))
    demo_port = int(os.environ.get("DEMO_PORT", "8080"))
    real_keys = bool(os.environ.get("PCC_PUBLIC_KEY"))
    demo_dir = ROOT / "infra" / "demo"
    demo_built = (demo_dir / "dist" / "demo.js").exists()

    ports = {"MOTO_PORT": (moto_port, "moto server"), "API_PORT": (api_port, "chalice local")}
    if not real_keys:
        ports["EMULATOR_PORT"] = (emulator_port, "Pipecat Cloud emulator")
    if demo_built:
        ports["DEMO_PORT"] = (demo_port, "demo page server")
    problems = taken_ports(ports)
    if problems:
        for line in problems:
            print(f"[make dev] {line}", file=sys.stderr, flush=True)
        return 2

    remove_stale_runs()
    run_dir = RUNS / f"dev-{os.getpid()}"
    stack = Stack()
    moto_url = f"http://127.0.0.1:{moto_port}"
    try:
        project = generated_project(run_dir)
        stack.start("moto server", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)])
        wait_http(f"{moto_url}/moto-api/", stack, "moto server")
        extra_env: dict[str, str] = {"AWS_ENDPOINT_URL": moto_url}
        if real_keys:
            secret = {"public_key": os.environ["PCC_PUBLIC_KEY"]}
            if os.environ.get("PCC_PRIVATE_KEY"):
                secret["private_key"] = os.environ["PCC_PRIVATE_KEY"]
            extra_env["PCC_API_URL"] = os.environ.get("PCC_API_URL", "https://api.pipecat.daily.co")
            extra_env["PCC_AGENTS"] = os.environ.get("PCC_AGENTS", "my-agent")
            print("[make dev] real Pipecat Cloud keys found: using", extra_env["PCC_API_URL"], flush=True)
        else:
            stack.start("Pipecat Cloud emulator",
                        [PYTHON, "-m", "infra.pcc_emulator", "--port", str(emulator_port), "--agent", "my-agent",
                         "--max-agents", os.environ.get("EMULATOR_MAX_AGENTS", "5")])
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            wait_http(f"{emulator_url}/_emulator/stats", stack, "Pipecat Cloud emulator")
            with urllib.request.urlopen(f"{emulator_url}/_emulator/keys") as response:
                secret = json.loads(response.read())
            extra_env["PCC_API_URL"] = emulator_url
        outputs = deploy("local", endpoint_url=moto_url, secret=secret, extra_env=extra_env,
                         config_path=project / ".chalice" / "config.json")
        print(f"[make dev] infra deployed into moto: table={outputs['TableName']}", flush=True)
        reload_flag = "--autoreload" if os.environ.get("CHALICE_AUTORELOAD", "0") == "1" else "--no-autoreload"
        stack.start("chalice local", [PYTHON, "-m", "infra.chalice_local", "--project-dir", str(project), "local",
                                      "--stage", "local", "--port", str(api_port), reload_flag])
        stack.start("local event sources (SQS poller + schedule)",
                    [PYTHON, "-m", "infra.sqs_poller", "--stage", "local", "--project-dir", str(project)])
        if demo_built:
            stack.start("demo page server", [PYTHON, "-m", "http.server", str(demo_port), "--bind", "127.0.0.1",
                                             "--directory", str(demo_dir)])
            print(f"[make dev] demo page: http://127.0.0.1:{demo_port}/index.html?api=http://127.0.0.1:{api_port}",
                  flush=True)
        else:
            print("[make dev] demo page not built (make demo)", flush=True)
        wait_http(f"http://127.0.0.1:{api_port}/health", stack, "chalice local", timeout=90)
        print(f"[make dev] ready: http://127.0.0.1:{api_port}/health  (Ctrl-C to stop)", flush=True)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except ComponentFailed as exc:
        print(f"[make dev] {exc}; stopping", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        print("[make dev] stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
