"""Lambda package size: `chalice package` and the size of the deployment zip it builds."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT


def run(stage: str = "local") -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="chalice-package-"))
    chalice = Path(sys.executable).parent / "chalice"
    subprocess.run([str(chalice), "package", "--stage", stage, str(out)], cwd=ROOT, check=True,
                   capture_output=True)
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
