"""Peak memory of an EOT gradient at n = 50 draws, with and without chunking.

Method: each configuration runs in a fresh subprocess (same model, seed and images), which reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size; KiB on Linux) after building the model and
inputs and again after one EOT gradient; the difference is the peak memory the gradient added. tracemalloc does
not see torch's CPU allocations, hence RSS. RSS includes memory the allocator keeps after freeing, so it is an
upper bound on live tensors, measured the same way for every configuration.

Configurations: ``eot_gradient`` with the automatic chunk size (ours, default) and with one pass of all n draws
(no chunking); the ``EOT`` module (forward + backward, as AutoAttack/torchattacks call it) with its defaults
(auto chunks, activation checkpointing decided from a probe), with checkpointing forced on, and unchunked; the
peer loop (torchattacks' EOTPGD: one draw per pass, one backward each).

Usage: python benchmarks/bench_memory.py [--full] [--images B] [--samples n]
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import eval_model, inputs, parser, pick, report, setup

CONFIGS = {
    "eot_gradient auto chunk (default)": ("grad", None, None),
    "eot_gradient no chunking": ("grad", "n", None),
    "EOT module default (auto chunk, auto checkpoint)": ("module", None, None),
    "EOT module checkpoint=True": ("module", None, True),
    "EOT module no chunking": ("module", "n", False),
    "peer loop (torchattacks EOTPGD)": ("loop", None, None),
}


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(config: str, model_name: str, B: int, n: int, seed: int, threads: int) -> dict:
    from lwta_plugin.eot import EOT, auto_chunk_size, eot_gradient

    setup(threads, seed)
    model = eval_model(model_name, seed=seed)
    x, y = inputs(B, model.input_shape, model.n_classes, seed)
    kind, chunk, ckpt = CONFIGS[config]
    chunk = n if chunk == "n" else chunk
    before = _maxrss_mib()
    if kind == "grad":
        eot_gradient(model, x, y, "ce", n, chunk)
    elif kind == "module":
        xg = x.clone().requires_grad_()
        out = EOT(model, n, chunk_size=chunk, checkpoint=ckpt)(xg)
        torch.autograd.grad(F.cross_entropy(out, y), xg)
    else:
        xg = x.clone().requires_grad_()
        for _ in range(n):
            torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
    after = _maxrss_mib()
    return {"before_mib": before, "peak_mib": after, "added_mib": after - before,
            "chunk": chunk or (auto_chunk_size(n, B, x[0].numel()) if kind != "loop" else 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--images", type=int, default=None, help="images (small 10, full 50: the unchunked pass of "
                    "50 x 50 rows already needs several GB)")
    ap.add_argument("--samples", type=int, default=50, help="EOT draws n")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--child", default=None, help=argparse_suppress())
    args = ap.parse_args(argv)
    B, n = pick(args, "images", 10, 50), args.samples
    threads = args.threads or int(os.environ.get("LWTA_BENCH_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1)
    if args.child:
        print(json.dumps(child(args.child, args.model, B, n, args.seed, threads)))
        return {}
    setup(threads, args.seed)
    rows = []
    for config in args.configs:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--model", args.model,
               "--images", str(B), "--samples", str(n), "--seed", str(args.seed), "--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({"config": config, **out})
        print(rows[-1], flush=True)
    report("memory", rows, ["config", "chunk", "before_mib", "peak_mib", "added_mib"],
           {"model": args.model, "images": B, "samples": n,
            "method": "ru_maxrss (peak RSS, MiB) of a fresh subprocess per configuration, before and after one "
                      "EOT gradient; added = after - before"}, args)
    return {"rows": rows}


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
