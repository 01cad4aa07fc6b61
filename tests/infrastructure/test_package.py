"""`chalice package --stage dev` (the deploy path) produces a template that passes cfn-lint, a zip well
under Lambda's limits, and IAM policies limited to the resources the code uses."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import chalice_cli
from infra.deploy import (
    FUNCTION_PERMISSIONS,
    example_outputs,
    function_name,
)

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = example_outputs("dev")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # what `make deploy STAGE=dev` writes after the infra stack is up, packaged the deploy path's way: Chalice
    # with compiled bytecode added (infra/chalice_cli.py)
    project, zipped = chalice_cli.package_copy(
        ROOT, tmp_path_factory.mktemp("pkg"), "dev",
        {"OIDC_ISSUER": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example",
         "OIDC_AUDIENCE": "example-client-id"})
    out = zipped.parent
    return {"out": out, "template": json.loads((out / "sam.json").read_text()), "project": project}


@pytest.mark.timeout(900)
def test_packaged_template_passes_cfn_lint(packaged: dict[str, Any]) -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(packaged["out"] / "sam.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_well_under_the_lambda_limit(packaged: dict[str, Any]) -> None:
    package = packaged["out"] / "deployment.zip"
    assert package.stat().st_size < 20 * 1024 * 1024  # Lambda takes 50 MB zipped; the bytecode is ~4 MB of it
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
    assert "app.py" in names and "chalicelib/start/service.py" in names
    assert not any(n.startswith(("boto3/", "botocore/", "moto/", "pytest")) for n in names)  # runtime-provided / dev


def test_package_ships_bytecode_the_runtime_loads_from_a_read_only_directory(
        packaged: dict[str, Any], tmp_path: Path) -> None:
    """Lambda's code directory is read-only: without bytecode in the zip, every cold container compiles every
    module. Every module has an unchecked-hash pyc for the runtime's Python, and a read-only copy of the package
    imports the app from them (Python's own verbose import log says where each code object came from)."""
    functions = [r for r in packaged["template"]["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert {f["Properties"]["Runtime"] for f in functions} == {runtime}
    package = packaged["out"] / "deployment.zip"
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        sources = sorted(n for n in names if n.endswith(".py"))
        assert len(sources) > 300
        missing = [n for n in sources if importlib.util.cache_from_source(n) not in names]
        assert missing == []
        header = zf.read(importlib.util.cache_from_source("chalicelib/start/dispatcher.py"))[:8]
        zf.extractall(tmp_path / "task")
    assert header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0b01  # unchecked
    task = tmp_path / "task"
    for path in [task, *task.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # as Lambda's /var/task
    try:
        env = {**os.environ, "PYTHONPATH": str(task), "PYTHONDONTWRITEBYTECODE": "1", "STAGE": "dev",
               "AUTH_MODE": "insecure-dev", "PCC_AGENTS": "my-agent", "PCC_SECRET_ID": "s", "TABLE_NAME": "t"}
        result = subprocess.run([sys.executable, "-v", "-c", "import app, chalicelib.start.dispatcher"], cwd=task,
                                env=env, capture_output=True, text=True, timeout=60)
    finally:
        for path in [task, *task.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert result.returncode == 0, result.stderr[-3000:]
    for module in ("app", "chalicelib/start/dispatcher", "chalicelib/platform/settings"):
        cached = task / importlib.util.cache_from_source(f"{module}.py")
        assert f"code object from '{cached}'" in result.stderr, module


def test_each_function_has_its_own_role_with_its_own_policy(packaged: dict[str, Any]) -> None:
    """The packaged template attaches to each function exactly the policy infra.deploy wrote for it."""
    resources = packaged["template"]["Resources"]
    functions = {k: v for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    logical = {"api_handler": "APIHandler", "retry_worker": "RetryWorker", "reconcile_sessions": "ReconcileSessions",
               "deliver_events": "DeliverEvents", "detect_ended": "DetectEnded"}
    assert set(logical) == set(FUNCTION_PERMISSIONS) and set(logical.values()) <= set(functions)
    roles = set()
    for function, name in logical.items():
        role_ref = functions[name]["Properties"]["Role"]["Fn::GetAtt"][0]
        roles.add(role_ref)
        policies = resources[role_ref]["Properties"]["Policies"]
        written = json.loads((packaged["project"] / ".chalice" / f"policy-dev-{function}.json").read_text())
        assert [p["PolicyDocument"] for p in policies] == [written], function
        granted = [r for st in written["Statement"] for r in st["Resource"]]
        assert "*" not in granted and all(OUTPUTS["TableArn"] in r or "pipecat-gateway" in r for r in granted)
        log_groups = {r for st in written["Statement"] if st["Sid"] == "OwnLogGroup" for r in st["Resource"]}
        own = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/" + function_name("pipecat-gateway", "dev",
                                                                                        function)
        assert log_groups == {own, own + ":*"}  # not pipecat-gateway-*: never another stage's
    assert len(roles) == len(FUNCTION_PERMISSIONS) == 5  # one role per function
    env = functions["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert env["TABLE_NAME"] == OUTPUTS["TableName"] and env["PCC_SECRET_ID"] == OUTPUTS["SecretName"]
    assert not any(k.startswith("AWS_") for k in env)  # reserved in Lambda; only the local stage sets them
    worker_events = functions["RetryWorker"]["Properties"]["Events"]
    assert any(e["Properties"].get("BatchSize") == 1 for e in worker_events.values())
