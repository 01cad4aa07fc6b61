"""Lambda package size: `chalice package --stage dev` in a scratch copy of the project (with the config
`infra.deploy` would write) and the size of the deployment zip it builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT
from infra.deploy import example_outputs, least_privilege_policies, write_stage_config


def run(stage: str = "dev") -> dict[str, Any]:
    project = Path(tempfile.mkdtemp(prefix="chalice-project-"))
    for item in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / item, project / item)
    shutil.copytree(ROOT / "chalicelib", project / "chalicelib", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    shutil.copy(ROOT / ".chalice" / "config.json", project / ".chalice" / "config.json")
    outputs = example_outputs(stage)
    write_stage_config(project / ".chalice" / "config.json", stage, outputs,
                       {"OIDC_ISSUER": "https://issuer.example.com", "OIDC_AUDIENCE": "bench"},
                       least_privilege_policies(outputs, "us-east-1", "123456789012", stage))
    out = project / "out"
    chalice = Path(sys.executable).parent / "chalice"
    subprocess.run([str(chalice), "package", "--stage", stage, str(out)], cwd=project, check=True,
                   capture_output=True, env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"})
    package = out / "deployment.zip"
    with zipfile.ZipFile(package) as zf:
        unzipped = sum(i.file_size for i in zf.infolist())
        tops: dict[str, int] = {}
        for info in zf.infolist():
            top = info.filename.split("/")[0]
            tops[top] = tops.get(top, 0) + info.compress_size
    biggest = sorted(tops.items(), key=lambda kv: -kv[1])[:8]
    return {
        "zip_mb": round(package.stat().st_size / 1e6, 2),
        "unzipped_mb": round(unzipped / 1e6, 2),
        "biggest_entries_zipped_mb": {k: round(v / 1e6, 2) for k, v in biggest},
        "target_zip_mb": 10,
        "output_dir": str(out),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
