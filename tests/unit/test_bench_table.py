"""`make bench` ends with a readable table of every figure (bench/run_all.py)."""

from __future__ import annotations

from bench.run_all import table


def test_table_has_a_block_per_benchmark_and_a_row_per_figure() -> None:
    text = table({"date": "2026-11-23", "machine": "x86_64 3.11.7 cores=2",
                  "cold_start": {"import_app_ms": 176.0, "biggest_imports": {"pydantic": 22}},
                  "queue_latency": [{"freed_to_served_s": {"p50": 0.9}}],
                  "package_size": {"zip_mb": 9.4, "output_dir": "/tmp/x"}})
    lines = text.splitlines()
    assert lines[0] == "pipecat-gateway benchmarks, 2026-11-23, x86_64 3.11.7 cores=2"
    assert "cold_start" in lines and "package_size" in lines
    assert any(line.split() == ["import_app_ms", "176.0"] for line in lines)
    assert any(line.split() == ["biggest_imports.pydantic", "22"] for line in lines)
    assert not any("output_dir" in line for line in lines)
    assert "queue_latency" not in lines  # only dict results are tabulated; lists stay in the JSON
