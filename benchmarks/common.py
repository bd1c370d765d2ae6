"""Shared helpers for the benchmark scripts: CLI, timing, tables, JSON output, machine facts.

Every script measures its ratios *in one process* on the same model and inputs, timing the candidates
round-robin (:func:`compare`), so that load from other processes on the machine (e.g. a training job) slows all
candidates alike. Results go to ``benchmarks/results/<name>.json`` (or ``--out-dir``) with the machine, torch
version, thread count, sizes, seed and the exact command.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT_DIR = Path(__file__).resolve().parent / "results"
# Environment variables that change the measurements; recorded in the command of every result.
ENV_VARS = ("OMP_NUM_THREADS", "LWTA_BENCH_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
            "THP_MEM_ALLOC_ENABLE")


def default_threads() -> int:
    """``LWTA_BENCH_THREADS``, else ``OMP_NUM_THREADS``, else 1 (the machine is shared with training jobs)."""
    for var in ("LWTA_BENCH_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var])
    return 1


def setup(threads: int | None = None, seed: int = 0) -> None:
    torch.set_num_threads(threads or default_threads())
    torch.manual_seed(seed)


def parser(description: str) -> argparse.ArgumentParser:
    """Common options: ``--full`` (the real sizes), ``--threads``, ``--seed``, ``--repeat``, ``--out-dir``."""
    ap = argparse.ArgumentParser(description=description,
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the real sizes (slow; default: small sizes)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: $LWTA_BENCH_THREADS, "
                    "$OMP_NUM_THREADS, else 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=None, help="timed repetitions per candidate")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each candidate first")
    ap.add_argument("--out-dir", default=str(OUT_DIR), help="where <name>.json is written")
    ap.add_argument("--tag", default="", help="written as <name>-<tag>.json (e.g. a variant of the environment)")
    return ap


def pick(args: argparse.Namespace, name: str, small, full):
    """``args.<name>`` if given on the command line, else the ``--full`` or the small default."""
    value = getattr(args, name, None)
    if value is not None:
        return value
    return full if args.full else small


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Median and spread of wall-clock seconds over ``repeat`` runs after ``warmup`` runs."""
    return compare({"fn": fn}, repeat, warmup)["fn"]


def compare(fns: dict[str, Callable[[], object]], repeat: int = 5, warmup: int = 1) -> dict[str, dict]:
    """Time several candidates round-robin (A B C A B C ...), so that background load affects all alike.

    Returns per candidate the median, min and max wall-clock seconds and the list of times.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, repeat)):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "repeat": len(v),
                "times_s": v} for k, v in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"python": platform.python_version(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "loadavg_at_end": list(load) if load else None,
            "torchattacks": _version("torchattacks"), "pyautoattack": _version("pyautoattack"),
            "mkldnn": torch.backends.mkldnn.is_available()}


def command() -> str:
    """The command line that produced this run (with the thread environment variables that were set)."""
    env = " ".join(f"{v}={os.environ[v]}" for v in ENV_VARS if os.environ.get(v))
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
    except ValueError:
        pass
    cmd = " ".join(shlex.quote(a) for a in ["python", str(script), *sys.argv[1:]])
    return f"{env} {cmd}".strip()


def report(name: str, rows: list[dict], columns: list[str], extra: dict | None = None,
           args: argparse.Namespace | None = None) -> Path:
    """Print a table and write ``<out-dir>/<name>.json`` (rows, sizes/extra, machine, command)."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths)))
    out_dir = Path(args.out_dir) if args is not None and getattr(args, "out_dir", None) else OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = getattr(args, "tag", "") if args is not None else ""
    path = out_dir / (f"{name}-{tag}.json" if tag else f"{name}.json")
    payload = {"benchmark": name, "command": command(), "machine": machine(), "rows": rows,
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    if args is not None:
        payload["args"] = {k: v for k, v in vars(args).items() if k != "out_dir"}
        payload.setdefault("seed", getattr(args, "seed", None))
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")
    print(f"-> {path}")
    return path


def _json_default(v):
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def matmul_peak_gflops(n: int = 1024, repeat: int = 5) -> dict:
    """This machine's measured float32 matmul throughput: best of ``repeat`` ``torch.mm`` of two n x n matrices
    (2 n^3 FLOPs each), with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    t = compare({"mm": lambda: torch.mm(a, b, out=out)}, repeat=repeat, warmup=1)["mm"]
    flops = 2.0 * n ** 3
    return {"n": n, "best_gflops": flops / t["min_s"] / 1e9, "median_gflops": flops / t["median_s"] / 1e9}


def eval_model(name: str = "lwta_ibp_tanh16", dataset: str = "mnist", seed: int = 0):
    """An untrained registry model in eval mode (timings do not depend on the weights' values)."""
    from lwta_plugin.models import create_model

    torch.manual_seed(seed)
    return create_model(name, dataset).eval()


def inputs(batch: int, shape=(1, 28, 28), n_classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *shape, generator=g), torch.randint(0, n_classes, (batch,), generator=g)


def within(context: Callable[[], contextlib.AbstractContextManager], fn: Callable) -> Callable:
    """``fn`` wrapped so that every call runs inside a fresh ``context()`` (e.g. another sampler, old code)."""
    def run(*args):
        with context():
            return fn(*args)
    return run


@contextlib.contextmanager
def reference_code_sampler(model):
    """The authors' test-time sampler computed as their code writes it, for use as a benchmark peer.

    ``model.sampling("concrete")`` is our implementation of the same distribution, with the U = 2 Gumbel-softmax
    rewritten as one sigmoid of a logistic draw. The reference code instead computes, per layer
    (OFF ``distributions.py``): xi = softmax((h + G) / 0.01) over the U units with G = -log(-log(u + 1e-8) + 1e-8),
    output h * xi; and z = sigmoid((t_pi + log u - log(1 - u)) / 0.01) * 1[sigmoid(t_pi) > 0.01]. This context
    swaps those literal formulas into the layers (in our [B, K, U, ...] layout)."""
    from lwta_plugin import layers

    def literal_lwta(h, dim, mode, temperature, straight_through=False):
        if mode != "concrete":
            return original_lwta(h, dim, mode, temperature, straight_through)
        u = torch.rand_like(h)
        g = -torch.log(-torch.log(u + 1e-8) + 1e-8)
        return h * torch.softmax((h + g) / temperature, dim)

    def literal_sample(self, n, mode, sampling):
        if mode != "concrete":
            return original_sample(self, n, mode, sampling)
        t = self.t_pi
        u = torch.rand((n, *t.shape), dtype=t.dtype).clamp(1e-8, 1 - 1e-8)
        z = torch.sigmoid((t + torch.log(u) - torch.log(1 - u)) / sampling.test_temperature)
        return z * (torch.sigmoid(t) > sampling.prune_threshold).to(t.dtype)

    original_lwta, original_sample = layers.lwta, layers.IBPUtility.sample
    layers.lwta, layers.IBPUtility.sample = literal_lwta, literal_sample
    try:
        with model.sampling("concrete"):
            yield model
    finally:
        layers.lwta, layers.IBPUtility.sample = original_lwta, original_sample
