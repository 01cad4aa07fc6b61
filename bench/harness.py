"""A local stack for benchmarks: moto server and the Pipecat Cloud emulator as separate processes (so
this process's CPU time is the gateway's own), the infra stack deployed into moto, and the app loaded
the way Lambda loads it (stage environment first, then `import app`)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.deploy import deploy, merged_stage_env  # noqa: E402
from infra.port_file import read_port  # noqa: E402

MOTO_ATOMIC = ("-m", "infra.moto_atomic")


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3),
            "mean": round(statistics.fmean(values), 3) if values else float("nan")}


def forget_app_modules() -> None:
    """A new stack needs a freshly configured app (new environment), as a new Lambda container would."""
    for name in [m for m in sys.modules if m == "app" or m.startswith("chalicelib")]:
        del sys.modules[name]


def proxy_event(method: str, path: str, *, user: str, body: Any = None, resource: str | None = None,
                path_params: dict[str, str] | None = None, query: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway (REST, Lambda proxy) event, as Lambda hands it to the API function."""
    headers = {"content-type": "application/json", "x-dev-user": user, "host": "bench.local"}
    return {
        "resource": resource or path, "path": path, "httpMethod": method,
        "headers": headers, "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query, "multiValueQueryStringParameters":
            {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_params, "stageVariables": None,
        "requestContext": {"resourcePath": resource or path, "httpMethod": method, "path": f"/api{path}",
                           "requestId": str(uuid.uuid4()), "stage": "api"},
        "body": json.dumps(body) if body is not None else None, "isBase64Encoded": False,
    }


class BenchStack:
    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        # Both on port 0: each announces the port the kernel gave it (infra/port_file.py), nothing is raced for.
        ports = Path(tempfile.mkdtemp(prefix="bench-ports-"))
        self.procs = [
            # moto's server with DynamoDB's atomic conditional writes (infra/moto_atomic.py): the queue's
            # dispatcher lease and every exactly-once transition rest on them
            subprocess.Popen([sys.executable, *MOTO_ATOMIC, "-H", "127.0.0.1", "-p", "0"], cwd=ROOT,
                             env={**os.environ, "PORT_FILE": str(ports / "moto")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "infra.pcc_emulator", "--port", "0", "--max-agents", "100000"],
                             cwd=ROOT, env={**os.environ, "PORT_FILE": str(ports / "emulator")},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        self.moto_port, self.emu_port = (read_port(ports / name, self._alive) for name in ("moto", "emulator"))
        self.moto_url = f"http://127.0.0.1:{self.moto_port}"
        self.emulator_url = f"http://127.0.0.1:{self.emu_port}"
        wait_http(f"{self.moto_url}/moto-api/")
        wait_http(f"{self.emulator_url}/_emulator/stats")
        self.keys = httpx.get(f"{self.emulator_url}/_emulator/keys").json()
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.moto_url})
        project = Path(tempfile.mkdtemp(prefix="bench-chalice-"))
        (project / ".chalice").mkdir()
        (project / ".chalice" / "config.json").write_text((ROOT / ".chalice" / "config.json").read_text())
        env = {"AWS_ENDPOINT_URL": self.moto_url, "PCC_API_URL": self.emulator_url, "AUTH_MODE": "insecure-dev",
               "PCC_AGENTS": "my-agent", "USER_SESSION_LIMIT": "3", **(extra_env or {})}
        self.outputs = deploy("local", endpoint_url=self.moto_url, config_path=project / ".chalice" / "config.json",
                              secret=self.keys, extra_env=env)
        config = json.loads((project / ".chalice" / "config.json").read_text())
        os.environ.update(merged_stage_env(config, "local"))
        # one INFO line per request would bury make bench's table; BENCH_APP_LOG_LEVEL=INFO brings them back
        os.environ["POWERTOOLS_LOG_LEVEL"] = os.environ.get("BENCH_APP_LOG_LEVEL", "WARNING")
        forget_app_modules()
        from app import app  # imported like Lambda does: after the environment is in place

        self.app = app

    def _alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with code {proc.returncode}")

    def admin(self, path: str, body: Any = None) -> Any:
        return httpx.post(f"{self.emulator_url}/_emulator/{path}", json=body or {}).json()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.emulator_url}/_emulator/stats").json())

    def invoke(self, method: str, path: str, *, user: str, body: Any = None, resource: str | None = None,
               path_params: dict[str, str] | None = None, query: dict[str, str] | None = None) -> dict[str, Any]:
        """The Lambda entry point with an API Gateway proxy event, as in production."""
        return dict(self.app(proxy_event(method, path, user=user, body=body, resource=resource,
                                         path_params=path_params, query=query), None))

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
