"""`make bench`: every benchmark in one run; writes bench/results/latest.json and prints a table.

Whatever the benchmarks print meanwhile (the app's logs, its EMF metric lines, one per request) goes to
bench/results/latest.log, so the terminal shows progress lines and the table.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested results -> (dotted.name, value) rows."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, inner in value.items():
            rows.extend(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value))]
    return [(prefix, str(value))]


def table(results: dict[str, Any]) -> str:
    """A plain-text table: one block per benchmark, a row per figure."""
    lines = [f"pipecat-gateway benchmarks, {results['date']}, {results['machine']}"]
    for bench_name, figures in results.items():
        if not isinstance(figures, dict):
            continue
        rows = [(k, v) for k, v in flatten(figures) if "output_dir" not in k]
        width = max((len(k) for k, _ in rows), default=10)
        lines += ["", bench_name, "-" * (width + 24)]
        lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main() -> int:
    from bench import (
        cold_start,
        crash_recovery,
        end_detection,
        package_size,
        probe_frontier,
        queue_latency,
        queue_storm,
        warm_overhead,
    )

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    quick = "--quick" in sys.argv
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.python_version()} cores={os.cpu_count()}",
    }
    benchmarks: dict[str, Callable[[], Any]] = {"cold_start": lambda: cold_start.run(runs=5 if quick else 15),
                  "warm_overhead": lambda: warm_overhead.run(n=30 if quick else 200),
                  "queue_latency": lambda: queue_latency.run(samples=4 if quick else 20),
                  "queue_storm": lambda: queue_storm.run(starts=60, users=20, late_arrivals=10) if quick
                  else queue_storm.run(),
                  "crash_recovery": lambda: crash_recovery.run(samples=5 if quick else 20),
                  "end_detection": lambda: end_detection.run(sessions=40, users=20, period=2, spread=10) if quick
                  else end_detection.run(latency=0.5),
                  "package_size": package_size.run,
                  "probe_frontier": probe_frontier.summary}
    terminal = sys.stdout
    with (out / "latest.log").open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for name, bench in benchmarks.items():
            print(f"[bench] {name} ...", file=terminal, flush=True)
            results[name] = bench()
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results))
    print(f"\n(all figures: {out / 'latest.json'}; what the benchmarks printed: {out / 'latest.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
