"""`make dev`: the whole gateway on this machine.

Starts a moto server (local AWS), the Pipecat Cloud emulator, deploys infra/ into moto, seeds the
secret with the emulator's keys, then runs `chalice local --stage local`, the local event sources (the
SQS poller and the reconcile schedule, which `chalice local` does not run) and the demo page server.

Guest access is on (docs/guests.md): a fake human-check provider (infra/fake_siteverify.py) answers the siteverify
calls, pages from the demo server's origin may ask for guest tokens, and the guest token key is new each run.

Each server is started on the port asked for (API_PORT, MOTO_PORT, EMULATOR_PORT, DEMO_PORT, SITEVERIFY_PORT; 0: any
free one) and
announces the port it got once it listens (infra/port_file.py); the launcher prints them and writes them to
`ports.json` in the log dir. With EVENTS_WEBHOOK_URL set, lifecycle events are signed (EVENTS_WEBHOOK_SECRET, else
LOCAL_EVENTS_SECRET) and sent there.

Nothing tracked is written: the stage config `chalice local` reads (with this run's ports and moto's
resource names) is generated into `.local/dev-<pid>/` (git-ignored), a project dir whose `app.py` and
`chalicelib/**/*.py` link to the real files. Ctrl-C or SIGTERM stops everything it started and removes that
dir; the children also get SIGTERM from the kernel if this launcher is killed outright (`kill -9`), and
the next run removes dirs left by launchers that no longer run.

With real Pipecat Cloud keys in the environment (PCC_PUBLIC_KEY, PCC_PRIVATE_KEY and PCC_AGENTS,
optionally PCC_API_URL) the secret gets those keys and the gateway talks to the real Pipecat Cloud
instead of the emulator (the emulator is not started).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from infra.deploy import DEFAULT_CONFIG, deploy
from infra.fake_siteverify import ACTION, HOSTNAME, SECRET
from infra.port_file import read_port

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / ".local"
# Each component's whole output, one file each, overwritten by the next run (DEV_LOG_DIR: elsewhere).
LOGS = Path(os.environ.get("DEV_LOG_DIR") or RUNS / "logs")
PYTHON = sys.executable
PR_SET_PDEATHSIG = 1
# The local stage's events signing secret when EVENTS_WEBHOOK_URL is set and EVENTS_WEBHOOK_SECRET is not: a fixed,
# published value (local use only; a deployed stage's secret is yours, in Secrets Manager).
LOCAL_EVENTS_SECRET = "whsec_bG9jYWwtb25seTogcGlwZWNhdC1nYXRld2F5IGV2ZW50cw=="


class ComponentFailed(RuntimeError):
    pass


STOP_SIGNAL = signal.SIGTERM  # every component's default action on it is to exit at once
STOP_GRACE_SECONDS = 3.0  # then what is left is killed: the whole stack stops in well under 5 s


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Default signal dispositions (a launcher started with `nohup ... &` has SIGINT ignored, and a child
    would inherit that through exec), and, on Linux, SIGTERM when the launcher dies, however it dies
    (kill -9 included)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None


# The keys of the gateway's JSON log lines the console shows (the log file keeps every key).
SHOWN_KEYS = ("user_id", "session_id", "request_id", "agent", "transport", "code", "status", "provider", "seq",
              "attempt", "reason", "error")


_METRIC_START = '{"_aws"'
_decoder = json.JSONDecoder()


def _without_metric_records(text: str) -> str:
    """The text with every EMF metric record in it cut out, also one glued to another thread's output on the
    same line (Powertools prints a record and its newline as two writes, so under concurrent requests another
    line can land between them)."""
    at = text.find(_METRIC_START)
    while at != -1:
        try:
            record, end = _decoder.raw_decode(text, at)
        except ValueError:
            at = text.find(_METRIC_START, at + 1)
            continue
        if isinstance(record, dict) and "_aws" in record:
            text = text[:at] + text[end:]
            at = text.find(_METRIC_START, at)
        else:
            at = text.find(_METRIC_START, at + 1)
    return text


def readable(line: str) -> str | None:
    """A line of the gateway's output as the console shows it: its JSON log records as one short line of
    text (time, level, message, the keys that say what happened), EMF metric records not at all (they are in
    the log file), anything else as it is."""
    raw = line.rstrip("\r\n")
    text = _without_metric_records(raw)
    if not text.strip() and raw:
        return None
    if not text.startswith("{"):
        return text
    try:
        record = json.loads(text)
    except ValueError:
        return text
    if not isinstance(record, dict):
        return text
    if "_aws" in record:
        return None
    if "level" not in record or "message" not in record:
        return text
    shown = " ".join(f"{key}={record[key]}" for key in SHOWN_KEYS if record.get(key) not in (None, ""))
    out = f"{str(record.get('timestamp', ''))[11:19]} {record['level']:<7} {record['message']}"
    out += f"  {shown}" if shown else ""
    if record.get("exception"):
        out += "\n" + str(record["exception"])
    return out


_console_lock = threading.Lock()


def _pump(source: Any, log: Path, console: Any) -> None:
    """Copy one of a component's output streams into its log file, and the readable form of each line to the
    console (stdout and stderr have a pump each, so a line of one never splits a line of the other; the lock
    keeps the pumps' console lines and log writes whole)."""
    for raw in iter(source.readline, b""):
        shown = readable(raw.decode("utf-8", "replace"))
        with _console_lock:
            with log.open("ab") as sink:
                sink.write(raw)
            if shown is not None:
                console.write(shown + "\n")
                console.flush()


@dataclass
class Stack:
    components: list[Component] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, *, log: str,
              console: bool = False) -> Component:
        """Start a component; its whole output goes to `.local/logs/<log>.log`, and with `console` also,
        readably, to the console (the gateway's own lines); without it only the file has it (moto's access
        lines, the emulator's)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        path = LOGS / f"{log}.log"
        path.write_bytes(b"")
        where = "" if console else f" (output: {_shown(path)})"
        print(f"[make dev] starting {name}{where}: {' '.join(cmd)}", flush=True)
        full_env = {**os.environ, **(env or {})}
        if console:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, preexec_fn=_child_setup, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            for stream in (proc.stdout, proc.stderr):
                threading.Thread(target=_pump, args=(stream, path, sys.stdout), daemon=True).start()
        else:
            with path.open("ab") as sink:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, preexec_fn=_child_setup, stdout=sink,
                                        stderr=subprocess.STDOUT)
        component = Component(name, proc, path)
        self.components.append(component)
        return component

    def check_alive(self) -> None:
        for component in self.components:
            code = component.proc.poll()
            if code is not None:
                where = f"its output: {_shown(component.log)}" if component.log else "its output is above"
                tail = _tail(component.log) if component.log else ""
                raise ComponentFailed(f"{component.name} exited with code {code} ({where}){tail}")

    def stop(self) -> list[str]:
        """STOP_SIGNAL to every component at once, STOP_GRACE_SECONDS for all of them together, then kill what is
        left. Returns the names of the components that had to be killed (none: every one stopped on its signal)."""
        for component in reversed(self.components):
            if component.proc.poll() is None:
                component.proc.send_signal(STOP_SIGNAL)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        killed = []
        for component in self.components:
            try:
                component.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                component.proc.kill()
                component.proc.wait()
                killed.append(component.name)
        return killed


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        last = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  | {line}" for line in last)


def port_in_use(port: int) -> bool:
    """Whether a server could not bind `port`, tried the way the servers bind (SO_REUSEADDR, as moto's
    werkzeug, `http.server` and the emulator do): sockets of a stack that just stopped, left in TIME_WAIT,
    do not count; a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    `chalicelib` is a tree of real dirs holding per-file links (its packages included) so `chalice local
    --autoreload` (which does not follow linked dirs) still sees edits, and it watches only these files,
    never .venv or node_modules."""
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / ".chalice").mkdir(parents=True)
    shutil.copy(config, run_dir / ".chalice" / "config.json")
    (run_dir / "app.py").symlink_to(ROOT / "app.py")
    for source in sorted((ROOT / "chalicelib").rglob("*.py")):
        if "__pycache__" in source.parts:
            continue
        link = run_dir / source.relative_to(ROOT)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    return run_dir


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # stop exactly as on Ctrl-C


@dataclass
class Ports:
    """The port of each server of the stack: asked for (API_PORT, MOTO_PORT, EMULATOR_PORT, DEMO_PORT; 0 takes a
    free one), then as each server announced it once it listened (infra/port_file.py)."""

    api: int
    moto: int
    emulator: int
    demo: int
    siteverify: int = 0

    @classmethod
    def from_env(cls) -> Ports:
        return cls(api=int(os.environ.get("API_PORT", "8000")), moto=int(os.environ.get("MOTO_PORT", "5000")),
                   emulator=int(os.environ.get("EMULATOR_PORT", "8790")),
                   demo=int(os.environ.get("DEMO_PORT", "8080")),
                   siteverify=int(os.environ.get("SITEVERIFY_PORT", "8791")))


def start_server(stack: Stack, ports_dir: Path, key: str, name: str, cmd: list[str], *, log: str,
                 console: bool = False) -> int:
    """Start a server component and return the port it announced (it listens by then)."""
    port_file = ports_dir / key
    component = stack.start(name, cmd, {"PORT_FILE": str(port_file)}, log=log, console=console)
    try:
        return read_port(port_file, stack.check_alive)
    except TimeoutError as exc:
        raise ComponentFailed(f"{component.name} did not start listening: {exc}") from None


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even when started ignoring it
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    asked = Ports.from_env()
    real_keys = bool(os.environ.get("PCC_PUBLIC_KEY"))
    demo_dir = ROOT / "infra" / "demo"
    demo_built = (demo_dir / "dist" / "demo.js").exists()

    wanted = {"MOTO_PORT": (asked.moto, "moto server"), "API_PORT": (asked.api, "chalice local")}
    if not real_keys:
        wanted["EMULATOR_PORT"] = (asked.emulator, "Pipecat Cloud emulator")
    if demo_built:
        wanted["DEMO_PORT"] = (asked.demo, "demo page server")
    wanted["SITEVERIFY_PORT"] = (asked.siteverify, "fake human-check siteverify")
    problems = taken_ports({var: (port, what) for var, (port, what) in wanted.items() if port})
    if problems:
        for line in problems:
            print(f"[make dev] {line}", file=sys.stderr, flush=True)
        return 2

    remove_stale_runs()
    run_dir = RUNS / f"dev-{os.getpid()}"
    stack = Stack()
    killed: list[str] = []
    try:
        project = generated_project(run_dir)
        ports_dir = run_dir / "ports"
        ports_dir.mkdir()
        got = Ports(api=0, moto=0, emulator=0, demo=0, siteverify=0)
        # moto with DynamoDB's atomic conditional writes (infra/moto_atomic.py), as the tests and benchmarks run it
        got.moto = start_server(stack, ports_dir, "moto", "moto server",
                                [PYTHON, "-m", "infra.moto_atomic", "-H", "127.0.0.1", "-p", str(asked.moto)],
                                log="moto")
        moto_url = f"http://127.0.0.1:{got.moto}"
        wait_http(f"{moto_url}/moto-api/", stack, "moto server")
        extra_env, secret = backend(stack, ports_dir, asked, got, real_keys)
        if demo_built:  # before the gateway: guest access allows the demo page's origin
            got.demo = start_server(stack, ports_dir, "demo", "demo page server",
                                    [PYTHON, "-m", "infra.demo_server", "--port", str(asked.demo), "--bind",
                                     "127.0.0.1", "--directory", str(demo_dir)], log="demo")
        guest_env, guest_secret = guest_access(stack, ports_dir, asked, got)
        extra_env.update(guest_env)
        secret.update(guest_secret)
        outputs = deploy("local", endpoint_url=moto_url, secret=secret, extra_env={"AWS_ENDPOINT_URL": moto_url,
                                                                                   **extra_env},
                         config_path=project / ".chalice" / "config.json")
        print(f"[make dev] infra deployed into moto: table={outputs['TableName']}", flush=True)
        reload_flag = "--autoreload" if os.environ.get("CHALICE_AUTORELOAD", "0") == "1" else "--no-autoreload"
        got.api = start_server(stack, ports_dir, "api", "chalice local",
                               [PYTHON, "-m", "infra.chalice_local", "--project-dir", str(project), "local",
                                "--stage", "local", "--port", str(asked.api), reload_flag], log="gateway",
                               console=True)
        stack.start("local event sources (SQS poller + schedule)",
                    [PYTHON, "-m", "infra.sqs_poller", "--stage", "local", "--project-dir", str(project)],
                    log="events", console=True)
        if demo_built:
            print(f"[make dev] demo page: http://127.0.0.1:{got.demo}/index.html?api=http://127.0.0.1:{got.api}",
                  flush=True)
        else:
            print("[make dev] demo page not built (make demo)", flush=True)
        wait_http(f"http://127.0.0.1:{got.api}/health", stack, "chalice local", timeout=90)
        if got.emulator:  # the emulator's organisation webhooks go to the gateway, signed with the run's secret
            send_webhooks(f"http://127.0.0.1:{got.emulator}", f"http://127.0.0.1:{got.api}/pcc/webhooks",
                          secret["pcc_webhook_secret"])
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / "ports.json").write_text(json.dumps(asdict(got)))
        print(f"[make dev] ports: api={got.api} moto={got.moto} emulator={got.emulator or '-'} "
              f"demo={got.demo or '-'} siteverify={got.siteverify} (also in {_shown(LOGS / 'ports.json')})",
              flush=True)
        print(f"[make dev] ready: http://127.0.0.1:{got.api}/health  (Ctrl-C to stop)", flush=True)
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
        killed = stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        (LOGS / "ports.json").unlink(missing_ok=True)
        if killed:
            print(f"[make dev] killed after {STOP_GRACE_SECONDS:.0f} s: {', '.join(killed)}", flush=True)
        print("[make dev] stopped", flush=True)


def guest_access(stack: Stack, ports_dir: Path, asked: Ports, got: Ports) -> tuple[dict[str, str], dict[str, str]]:
    """Guest access for the local stage: the fake siteverify started, the demo page's origin allowed, a guest token
    key made for this run (stage environment, secret fields)."""
    got.siteverify = start_server(stack, ports_dir, "siteverify", "fake human-check siteverify",
                                  [PYTHON, "-m", "infra.fake_siteverify", "--port", str(asked.siteverify)],
                                  log="siteverify")
    origins = [f"http://{host}:{got.demo}" for host in ("127.0.0.1", "localhost")] if got.demo else []
    env = {"GUEST_ACCESS": "true", "GUEST_HUMAN_CHECK": "turnstile",
           "GUEST_SITEVERIFY_URL": f"http://127.0.0.1:{got.siteverify}/siteverify",
           "GUEST_ALLOWED_HOSTNAMES": HOSTNAME, "GUEST_ACTION": ACTION,
           "GUEST_ALLOWED_ORIGINS": ",".join(origins or ["http://127.0.0.1:8080"])}
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return env, {"human_check_secret": SECRET, "guest_token_keys": f"local:{key}"}


def send_webhooks(emulator_url: str, url: str, secret: str) -> None:
    """Point the emulator's organisation webhooks (session.started, spend, suspension) at the gateway."""
    request = urllib.request.Request(f"{emulator_url}/_emulator/webhooks", method="POST",
                                     data=json.dumps({"url": url, "secret": secret}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass
    print(f"[make dev] the emulator's webhooks go to {url}", flush=True)


def backend(stack: Stack, ports_dir: Path, asked: Ports, got: Ports,
            real_keys: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The Pipecat Cloud the gateway talks to (the emulator, started here, or the real one with the keys in the
    environment) and the local secret: (stage environment, secret)."""
    extra_env: dict[str, str] = {}
    if real_keys:
        secret = {"public_key": os.environ["PCC_PUBLIC_KEY"]}
        if os.environ.get("PCC_PRIVATE_KEY"):
            secret["private_key"] = os.environ["PCC_PRIVATE_KEY"]
        extra_env["PCC_API_URL"] = os.environ.get("PCC_API_URL", "https://api.pipecat.daily.co")
        extra_env["PCC_AGENTS"] = os.environ.get("PCC_AGENTS", "my-agent")
        print("[make dev] real Pipecat Cloud keys found: using", extra_env["PCC_API_URL"], flush=True)
    else:
        got.emulator = start_server(stack, ports_dir, "emulator", "Pipecat Cloud emulator",
                                    [PYTHON, "-m", "infra.pcc_emulator", "--port", str(asked.emulator), "--agent",
                                     "my-agent", "--max-agents", os.environ.get("EMULATOR_MAX_AGENTS", "5")],
                                    log="emulator")
        emulator_url = f"http://127.0.0.1:{got.emulator}"
        wait_http(f"{emulator_url}/_emulator/stats", stack, "Pipecat Cloud emulator")
        with urllib.request.urlopen(f"{emulator_url}/_emulator/keys") as response:
            secret = json.loads(response.read())
        extra_env["PCC_API_URL"] = emulator_url
        secret["pcc_webhook_secret"] = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    if os.environ.get("EVENTS_WEBHOOK_URL"):  # lifecycle events to a local receiver, signed (docs/events.md)
        extra_env["EVENTS_WEBHOOK_URL"] = os.environ["EVENTS_WEBHOOK_URL"]
        yours = os.environ.get("EVENTS_WEBHOOK_SECRET")
        secret["events_webhook_secret"] = yours or LOCAL_EVENTS_SECRET
        signed = "your EVENTS_WEBHOOK_SECRET" if yours else f"EVENTS_WEBHOOK_SECRET={LOCAL_EVENTS_SECRET}"
        print(f"[make dev] events go to {extra_env['EVENTS_WEBHOOK_URL']}, signed with {signed}", flush=True)
    return extra_env, secret


if __name__ == "__main__":
    sys.exit(main())
