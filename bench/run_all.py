"""`make bench`: every benchmark in one run; prints JSON and writes bench/results/latest.json."""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

from bench import cold_start, package_size, queue_latency, warm_overhead


def main() -> int:
    quick = "--quick" in sys.argv
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.python_version()} cores={__import__('os').cpu_count()}",
        "cold_start": cold_start.run(runs=5 if quick else 15),
        "warm_overhead": warm_overhead.run(n=30 if quick else 200),
        "queue_latency": queue_latency.run(samples=4 if quick else 20),
        "package_size": package_size.run(),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
