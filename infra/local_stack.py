"""`make dev`: the whole gateway on this machine.

Starts a moto server (local AWS), the Pipecat Cloud emulator, deploys infra/ into moto, seeds the
secret with the emulator's keys, then runs `chalice local --stage local` and the local SQS poller.
Ctrl-C stops everything it started.

With real Pipecat Cloud keys in the environment (PCC_PUBLIC_KEY, PCC_PRIVATE_KEY and PCC_AGENTS,
optionally PCC_API_URL) the secret gets those keys and the gateway talks to the real Pipecat Cloud
instead of the emulator (the emulator is not started). The local stage config is restored on exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra.deploy import DEFAULT_CONFIG, deploy

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


def main() -> int:
    moto_port = int(os.environ.get("MOTO_PORT", "5000"))
    emulator_port = int(os.environ.get("EMULATOR_PORT", "8790"))
    api_port = int(os.environ.get("API_PORT", "8000"))
    demo_port = int(os.environ.get("DEMO_PORT", "8080"))
    moto_url = f"http://127.0.0.1:{moto_port}"
    real_keys = bool(os.environ.get("PCC_PUBLIC_KEY"))
    procs: list[subprocess.Popen[bytes]] = []
    original_config = DEFAULT_CONFIG.read_text()

    def start(cmd: list[str], name: str, env: dict[str, str] | None = None) -> None:
        print(f"[make dev] starting {name}: {' '.join(cmd)}", flush=True)
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}))

    try:
        start([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], "moto server")
        _wait_http(f"{moto_url}/moto-api/")
        extra_env: dict[str, str] = {"AWS_ENDPOINT_URL": moto_url}
        if real_keys:
            secret = {"public_key": os.environ["PCC_PUBLIC_KEY"]}
            if os.environ.get("PCC_PRIVATE_KEY"):
                secret["private_key"] = os.environ["PCC_PRIVATE_KEY"]
            extra_env["PCC_API_URL"] = os.environ.get("PCC_API_URL", "https://api.pipecat.daily.co")
            extra_env["PCC_AGENTS"] = os.environ.get("PCC_AGENTS", "my-agent")
            print("[make dev] real Pipecat Cloud keys found: using", extra_env["PCC_API_URL"], flush=True)
        else:
            start([PYTHON, "-m", "infra.pcc_emulator", "--port", str(emulator_port),
                   "--agent", "my-agent", "--max-agents", os.environ.get("EMULATOR_MAX_AGENTS", "5")],
                  "Pipecat Cloud emulator")
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            _wait_http(f"{emulator_url}/_emulator/stats")
            with urllib.request.urlopen(f"{emulator_url}/_emulator/keys") as response:
                secret = json.loads(response.read())
            extra_env["PCC_API_URL"] = emulator_url
        outputs = deploy("local", endpoint_url=moto_url, secret=secret, extra_env=extra_env)
        print(f"[make dev] infra deployed into moto: table={outputs['TableName']}", flush=True)
        reload_flag = "--no-autoreload" if os.environ.get("CHALICE_AUTORELOAD", "1") == "0" else "--autoreload"
        start([str(BIN / "chalice"), "local", "--stage", "local", "--port", str(api_port), reload_flag],
              "chalice local")
        start([PYTHON, "-m", "infra.sqs_poller", "--stage", "local"], "local SQS poller")
        demo_dir = ROOT / "infra" / "demo"
        if (demo_dir / "dist" / "demo.js").exists():
            start([PYTHON, "-m", "http.server", str(demo_port), "--bind", "127.0.0.1", "--directory",
                   str(demo_dir)], "demo page server")
            print(f"[make dev] demo page: http://127.0.0.1:{demo_port}/index.html?api=http://127.0.0.1:{api_port}",
                  flush=True)
        else:
            print("[make dev] demo page not built (make demo)", flush=True)
        _wait_http(f"http://127.0.0.1:{api_port}/health", timeout=60)
        print(f"[make dev] ready: http://127.0.0.1:{api_port}/health  (Ctrl-C to stop)", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("[make dev] a component exited; stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if DEFAULT_CONFIG.read_text() != original_config:
            DEFAULT_CONFIG.write_text(original_config)
        print("[make dev] stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
