"""Cold start: wall time of a fresh interpreter importing `app` (median of many runs) minus a bare
interpreter, measured in the same run; plus the biggest imports from `-X importtime`."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.harness import ROOT

LAMBDA_ENV = {"STAGE": "local", "AUTH_MODE": "insecure-dev", "PCC_AGENTS": "my-agent", "PCC_SECRET_ID": "s",
              "TABLE_NAME": "t", "POWERTOOLS_METRICS_NAMESPACE": "Bench"}


def _time(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    return (time.perf_counter() - t0) * 1000


def biggest_imports(env: dict[str, str], top: int = 10) -> list[dict[str, Any]]:
    """Top-level packages by cumulative import time while importing app (from -X importtime)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True).stderr
    best: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s+(\S+)", line)
        if m and m.group(3) != "app":
            package = m.group(3).split(".")[0]
            best[package] = max(best.get(package, 0.0), int(m.group(2)) / 1000)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:top]
    return [{"package": name, "cumulative_ms": round(ms, 1)} for name, ms in ranked]


def run(runs: int = 15) -> dict[str, Any]:
    env = {**os.environ, **LAMBDA_ENV}
    for key in ("AWS_ENDPOINT_URL",):
        env.pop(key, None)
    bare, with_app, with_first_start_modules = [], [], []
    for _ in range(runs):  # interleaved, so machine noise hits both alike
        bare.append(_time("pass", env))
        with_app.append(_time("import app", env))
        with_first_start_modules.append(_time("import app, httpx, boto3", env))
    bare_ms, app_ms = statistics.median(bare), statistics.median(with_app)
    return {
        "runs": runs,
        "bare_interpreter_ms": round(bare_ms, 1),
        "import_app_ms": round(app_ms, 1),
        "import_app_minus_bare_ms": round(app_ms - bare_ms, 1),
        "deferred_to_first_start_ms (httpx + boto3)": round(statistics.median(with_first_start_modules) - app_ms, 1),
        "biggest_imports": biggest_imports(env),
        "target_ms": 250,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
