"""`chalice`, with compiled bytecode in every deployment package it builds (`make deploy` runs
`python -m infra.chalice_cli deploy --stage ...`; `package` works the same way).

Lambda's code directory is read-only, so a package of sources alone makes every cold container compile every
module it imports (hundreds: botocore, pydantic, httpx, powertools) before it can answer. Chalice ships no
bytecode, so the zip it builds is given one `__pycache__/*.pyc` per `.py` here, compiled by this interpreter,
which is the runtime's (Chalice picks the runtime from the Python it runs on; a mismatch is refused). The pycs
are unchecked-hash pycs: a zip keeps modification times to two seconds, so timestamp pycs could be judged
stale; these are used as they are. Measured in bench/cold_start.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any

LAMBDA_TASK_ROOT = "/var/task"  # where Lambda unpacks the code: the paths tracebacks show


def runtime_matches(python_version: str) -> bool:
    return python_version == f"python{sys.version_info.major}.{sys.version_info.minor}"


def add_bytecode(package: str | Path) -> int:
    """Rewrite the zip `package` with an unchecked-hash pyc beside every `.py` it holds (replacing any pyc
    already there); returns how many modules were compiled. Sources that do not compile on this Python (a
    vendored file for another version) are left as they are."""
    package = Path(package)
    compiled = 0
    fd, tmp_name = tempfile.mkstemp(dir=package.parent, suffix=".zip")
    os.close(fd)
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(tmp_name, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if "__pycache__/" in info.filename and info.filename.endswith(".pyc"):
                continue  # stale or foreign bytecode: written anew below
            data = source.read(info)
            target.writestr(info, data)
            if not info.filename.endswith(".py"):
                continue
            try:
                code = compile(data, f"{LAMBDA_TASK_ROOT}/{info.filename}", "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                continue
            cached = importlib.util.cache_from_source(info.filename)
            pyc = zipfile.ZipInfo(cached, date_time=info.date_time)
            pyc.compress_type = zipfile.ZIP_DEFLATED
            pyc.external_attr = info.external_attr
            target.writestr(pyc, bytes(_code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False)))
            compiled += 1
    os.replace(tmp_name, package)
    return compiled


def package_copy(root: Path, work: Path, stage: str, stage_env: dict[str, str]) -> tuple[Path, Path]:
    """A scratch copy of the app in `work`/project with the stage config `make deploy` would write (the data
    stack's outputs for `stage`, `stage_env`, one policy per function), packaged; returns (project, zip)."""
    import shutil

    from infra.deploy import example_outputs, least_privilege_policies, write_stage_config

    project = work / "project"
    project.mkdir()
    for item in ("app.py", "requirements.txt"):
        shutil.copy(root / item, project / item)
    shutil.copytree(root / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    shutil.copy(root / ".chalice" / "config.json", project / ".chalice" / "config.json")
    outputs = example_outputs(stage)
    write_stage_config(project / ".chalice" / "config.json", stage, dict(outputs), stage_env,
                       least_privilege_policies(outputs, "us-east-1", "123456789012", stage))
    return project, package(project, stage, project / "out", {"AWS_DEFAULT_REGION": "us-east-1"})


def package(project: Path, stage: str, out: Path, env: dict[str, str] | None = None) -> Path:
    """`python -m infra.chalice_cli package --stage <stage> <out>` in `project` (a copy of the app with its
    .chalice config); returns the deployment zip."""
    import subprocess

    result = subprocess.run([sys.executable, "-m", "infra.chalice_cli", "package", "--stage", stage, str(out)],
                            cwd=project, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                              **(env or {})}, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"chalice package failed: {result.stderr[-3000:]}")
    return out / "deployment.zip"


def install() -> None:
    """Make Chalice's packagers add bytecode to every package they build or update."""
    from chalice.deploy import packager

    original_create = packager.LambdaDeploymentPackager.create_deployment_package
    original_inject = packager.BaseLambdaDeploymentPackager.inject_latest_app

    def create(self: Any, project_dir: str, python_version: str) -> str:
        if not runtime_matches(python_version):
            raise SystemExit(f"the deployment targets {python_version} but this is Python "
                             f"{sys.version_info.major}.{sys.version_info.minor}: its bytecode would not load there; "
                             "run the deploy with the runtime's Python")
        filename: str = original_create(self, project_dir, python_version)
        add_bytecode(filename)
        return filename

    def inject(self: Any, deployment_package_filename: str, project_dir: str) -> None:
        original_inject(self, deployment_package_filename, project_dir)
        add_bytecode(deployment_package_filename)

    packager.LambdaDeploymentPackager.create_deployment_package = create  # type: ignore[method-assign]
    packager.BaseLambdaDeploymentPackager.inject_latest_app = inject  # type: ignore[method-assign]


def main() -> int:
    install()
    from chalice.cli import main as chalice_main

    return int(chalice_main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
