"""Shared benchmark plumbing: pin to one core, time best-of-N, record results, refresh README.

Every benchmark writes its figures under its own key in bench/results.json; `update_readme`
rewrites the table between the README's bench markers from that file, so README and results
never disagree.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def pin_one_core() -> None:
    """Measure per core: the figures are per-core rates, comparable across machines."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def record(key: str, rows: list[dict]) -> None:
    """rows: {"benchmark", "figure", "value", "unit", "baseline", "ratio", "goal"}."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                            f"python {platform.python_version()}", "rows": rows}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    update_readme(data)


def update_readme(data: dict) -> None:
    if not README.exists() or START not in README.read_text():
        return
    lines = ["| benchmark | figure | value | baseline (same run) | ratio | goal |",
             "|---|---|---|---|---|---|"]
    for key in sorted(data):
        for r in data[key]["rows"]:
            value = f"{r['value']:,.0f}" if abs(r["value"]) >= 100 else f"{r['value']:.3g}"
            lines.append(f"| {r['benchmark']} | {r['figure']} | {value} {r['unit']} | "
                         f"{r['baseline']} | {r['ratio']:.2f}x | {r['goal']} |")
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)
