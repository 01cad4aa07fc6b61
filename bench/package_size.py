"""Lambda package size: the deployment zip `make deploy` builds (`python -m infra.chalice_cli package`, Chalice plus
compiled bytecode) in a scratch copy of the project, with the config `infra.deploy` would write."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def run(stage: str = "dev") -> dict[str, Any]:
    from bench.cold_start import build_package  # the package `make deploy` uploads, bytecode included

    work = Path(tempfile.mkdtemp(prefix="chalice-project-"))
    package = build_package(work, stage)
    out = package.parent
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
        "target_zip_mb": 20,
        "output_dir": str(out),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
