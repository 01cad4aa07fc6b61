"""Cold start.

- `run()`: wall time of a fresh interpreter importing `app` (median of many runs) minus a bare interpreter,
  measured in the same run; plus the biggest imports from `-X importtime`.
- `lambda_like()` (`python -m bench.cold_start`): what a cold Lambda container does before its first answer,
  `import app` + the first `POST /start` (Secrets Manager, DynamoDB, Pipecat Cloud: moto and the emulator),
  run from the deployment package as `make deploy` builds it, unpacked into a read-only directory with no
  bytecode cache (Lambda's /var/task), against the same run of a minimal hand-written Chalice handler that
  reads the key from Secrets Manager and forwards the body, packaged from the same dependencies, and of a floor
  handler (FLOOR_APP): the minimal one plus the least the mission asks of every start (pydantic settings and
  request validation, the user's id in the bot's body, the session recorded in DynamoDB). Printed: `over_minimal`
  (median ours / median minimal; goal <= 1.3), `floor_over_minimal` (what the mission's own requirements cost,
  measured without any gateway code), `over_floor` (ours / floor) and `without_bytecode_over_with` (the same
  package with its bytecode taken out).
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT, BenchStack, proxy_event

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


MINIMAL_APP = '''"""The smallest honest start handler: the key from Secrets Manager, the body forwarded."""
import json
import os

import boto3
import httpx
from chalice import Chalice

app = Chalice(app_name="minimal")
_key = None


@app.route("/start", methods=["POST"])
def start():
    global _key
    if _key is None:
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["PCC_SECRET_ID"])
        _key = json.loads(secret["SecretString"])["public_key"]
    agent = os.environ["PCC_AGENTS"].split(",")[0]
    answer = httpx.post(f"{os.environ['PCC_API_URL']}/v1/public/{agent}/start", json=app.current_request.json_body,
                        headers={"Authorization": f"Bearer {_key}"}, timeout=10)
    return answer.json()
'''

FLOOR_APP = '''"""The floor: the minimal handler plus the least the mission asks of every start, written by
hand (no gateway code): settings parsed from the environment into a pydantic model, the body validated by a
pydantic model, the user's id put into the bot's body, and the session recorded for its user in DynamoDB (one
write). What a gateway does beyond this (slots, rate limits, the queue, exactly-once intents, logs, metrics)
is above it."""
import json
import os
from typing import Any, Literal

import boto3
import httpx
from chalice import Chalice
from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    secret_id: str
    agent: str
    api_url: str
    table: str


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transport: Literal["daily", "webrtc", "websocket"] = "daily"
    body: dict[str, Any] | None = None


app = Chalice(app_name="floor")
settings = Settings(secret_id=os.environ["PCC_SECRET_ID"], agent=os.environ["PCC_AGENTS"].split(",")[0],
                    api_url=os.environ["PCC_API_URL"], table=os.environ["TABLE_NAME"])
_key = None


@app.route("/start", methods=["POST"])
def start():
    global _key
    request = app.current_request
    user = request.headers["x-dev-user"]
    start = StartRequest.model_validate(request.json_body)
    if _key is None:
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=settings.secret_id)
        _key = json.loads(secret["SecretString"])["public_key"]
    payload = {"createDailyRoom": start.transport == "daily", "transport": start.transport,
               "body": {**(start.body or {}), "user_id": user}}
    answer = httpx.post(f"{settings.api_url}/v1/public/{settings.agent}/start", json=payload,
                        headers={"Authorization": f"Bearer {_key}"}, timeout=10).json()
    boto3.client("dynamodb").put_item(TableName=settings.table, Item={
        "PK": {"S": f"USER#{user}"}, "SK": {"S": f"FLOOR#{answer['sessionId']}"}})
    return answer
'''

# In the fresh interpreter: from the first line to the first answer; prints milliseconds.
DRIVER = """
import json, sys, time
t0 = time.perf_counter()
import app
event = json.loads(sys.argv[1])
answer = app.app(event, None)
assert answer["statusCode"] == 200, answer
print((time.perf_counter() - t0) * 1000)
"""


def build_package(work: Path, stage: str = "dev") -> Path:
    """The deployment zip `make deploy` uploads (infra.chalice_cli: Chalice plus compiled bytecode)."""
    from infra import chalice_cli

    return chalice_cli.package_copy(ROOT, work, stage, {"OIDC_ISSUER": "https://issuer.example.com",
                                                        "OIDC_AUDIENCE": "bench"})[1]


def _unpack(package: Path, target: Path, *, bytecode: bool, replacement: str | None = None) -> Path:
    """The package unpacked read-only into `target`; `replacement`: an app.py that takes the place of ours (and
    chalicelib/), the dependencies unchanged."""
    with zipfile.ZipFile(package) as zf:
        for name in zf.namelist():
            if not bytecode and name.endswith(".pyc"):
                continue
            if replacement and (name.startswith("chalicelib/") or name in ("app.py", "__pycache__/" + Path(
                    importlib.util.cache_from_source("app.py")).name)):
                continue
            zf.extract(name, target)
    if replacement:
        (target / "app.py").write_text(replacement)
        if bytecode:
            py_compile.compile(str(target / "app.py"), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # read-only, as /var/task
    return target


# What the Lambda runtime itself provides (the package leaves them out): boto3 and what it needs.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


def runtime_dir(work: Path) -> Path:
    """The runtime's own packages, and nothing else of this machine's site-packages."""
    runtime = work / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    return runtime


def _cold(task: Path, runtime: Path, env: dict[str, str], user: str) -> float:
    event = proxy_event("POST", "/start", user=user, body={"transport": "daily"})
    env = {**env, "PYTHONPATH": f"{task}:{runtime}", "PYTHONDONTWRITEBYTECODE": "1"}
    # -S: no site-packages of this machine, only the package and the runtime's boto3, as in Lambda
    result = subprocess.run([sys.executable, "-S", "-c", DRIVER, json.dumps(event)], cwd=task, capture_output=True,
                            text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return float(result.stdout.strip().splitlines()[-1])


def lambda_like(runs: int = 9) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        package = build_package(work)
        ours = _unpack(package, work / "ours", bytecode=True)
        sources_only = _unpack(package, work / "sources-only", bytecode=False)
        minimal = _unpack(package, work / "minimal", bytecode=True, replacement=MINIMAL_APP)
        floor = _unpack(package, work / "floor", bytecode=True, replacement=FLOOR_APP)
        runtime = runtime_dir(work)
        stack = BenchStack({"USER_SESSION_LIMIT": "10"})
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            times: dict[str, list[float]] = {"ours": [], "sources_only": [], "minimal": [], "floor": []}
            for i in range(runs):  # interleaved, so machine noise hits all four alike
                times["ours"].append(_cold(ours, runtime, env, f"cold-{i}"))
                times["sources_only"].append(_cold(sources_only, runtime, env, f"cold-src-{i}"))
                times["minimal"].append(_cold(minimal, runtime, env, f"cold-min-{i}"))
                times["floor"].append(_cold(floor, runtime, env, f"cold-floor-{i}"))
        finally:
            stack.close()
        median = {name: statistics.median(values) for name, values in times.items()}
        return {
            "runs": runs,
            "import_and_first_start_ms": {name: round(value, 1) for name, value in median.items()},
            "over_minimal": round(median["ours"] / median["minimal"], 3),
            "floor_over_minimal": round(median["floor"] / median["minimal"], 3),
            "over_floor": round(median["ours"] / median["floor"], 3),
            "without_bytecode_over_with": round(median["sources_only"] / median["ours"], 3),
            "goal_over_minimal": 1.3,
        }
    finally:
        for path in [work, *work.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o200)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(lambda_like()))
