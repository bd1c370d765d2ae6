"""Shared helpers for the benchmark scripts: timing, tables, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT_DIR = Path(__file__).resolve().parent / "results"


def setup(threads: int | None = None, seed: int = 0) -> None:
    torch.set_num_threads(threads or int(os.environ.get("LWTA_BENCH_THREADS", "2")))
    torch.manual_seed(seed)


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Median and spread of wall-clock seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeat": repeat}


def machine() -> dict:
    return {"python": platform.python_version(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown", "cpus": os.cpu_count()}


def report(name: str, rows: list[dict], columns: list[str], extra: dict | None = None) -> Path:
    """Print a table and write ``benchmarks/results/<name>.json``."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {"benchmark": name, "command": "python " + " ".join(sys.argv), "machine": machine(), "rows": rows,
               **(extra or {})}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"-> {path}")
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
