"""Achieved GFLOP/s of the attack inner loop as a fraction of this machine's measured matmul peak.

The inner loop of EOT-PGD is one EOT gradient: n draws of the model on B images, forward and backward w.r.t.
the input (``lwta_plugin.eot.eot_gradient``, default chunking). Its conv/matmul FLOPs are counted with
the formulas of ``torch.utils.flop_counter`` (FlopCounterMode's) (2 FLOPs per multiply-add, forward and backward, as executed:
the shared first conv counts once per pass, the SAME-padded stride-2 kernels with their zero row/column;
"useful" FLOPs leave out the multiplications by that zero row/column).
The peak is the best of a few ``torch.mm`` of two 1024 x 1024 float32 matrices in the same process and thread
count. The same is reported for the peer loop (torchattacks' EOTPGD inner loop: n single passes, one
backward each) and for one batched inference pass.

Usage: python benchmarks/bench_flops.py [--full] [--images B] [--samples n]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from common import compare, eval_model, inputs, matmul_peak_gflops, parser, pick, report, setup
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from lwta_plugin.eot import eot_gradient


class _FlopCount(TorchDispatchMode):
    """FlopCounterMode's per-op formulas without its module tracker (whose hooks reject ``autograd.grad`` on a
    leaf input, which is what attacks call)."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.useful = 0  # without the multiplications by the zero row/column of SAME-padded kernels

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = flop_registry.get(packet)
        if formula is not None:
            flops = int(formula(*args, **kwargs, out_val=out))
            self.total += flops
            weight = {torch.ops.aten.convolution: 1, torch.ops.aten.convolution_backward: 2}.get(packet)
            self.useful += flops * (_nonzero_kernel_fraction(args[weight]) if weight is not None else 1.0)
        return out


def _nonzero_kernel_fraction(w: torch.Tensor) -> float:
    """Fraction of a conv kernel's taps left after dropping an all-zero leading row and column."""
    if w.dim() != 4:
        return 1.0
    kh, kw = w.shape[-2:]
    zh = kh > 1 and not w[..., 0, :].any()
    zw = kw > 1 and not w[..., :, 0].any()
    return (kh - zh) * (kw - zw) / (kh * kw)


def count_flops(fn) -> tuple[int, int]:
    """(executed, useful) conv/matmul FLOPs of ``fn()``."""
    with _FlopCount() as fc:
        fn()
    return fc.total, int(fc.useful)


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--images", type=int, default=None, help="images (small 10, full 100)")
    ap.add_argument("--samples", type=int, default=20, help="EOT draws n")
    ap.add_argument("--mm", type=int, default=1024, help="matrix size of the peak measurement")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, n = pick(args, "images", 10, 100), args.samples
    repeat = pick(args, "repeat", 5, 5)
    model = eval_model(args.model, seed=args.seed)
    x, y = inputs(B, model.input_shape, model.n_classes, args.seed)

    def ours():
        eot_gradient(model, x, y, "ce", n)

    def peer_loop():  # torchattacks.EOTPGD's inner loop
        xg = x.clone().requires_grad_()
        for _ in range(n):
            out = model(xg)
            torch.autograd.grad(F.cross_entropy(out, y), xg)

    def infer():
        with torch.inference_mode():
            model.forward_samples_chunked(x, n)

    fns = {"eot_gradient (ours)": ours, "peer loop (torchattacks EOTPGD)": peer_loop, "inference pass": infer}
    def infer_counted():  # inference_mode tensors bypass the Python dispatch mode; no_grad runs the same ops
        with torch.no_grad():
            model.forward_samples_chunked(x, n)

    flops = {k: count_flops(infer_counted if f is infer else f) for k, f in fns.items()}
    peak = matmul_peak_gflops(args.mm)
    t = {k: v["median_s"] for k, v in compare(fns, repeat=repeat, warmup=args.warmup).items()}
    peak_after = matmul_peak_gflops(args.mm)  # load may change while the benchmark runs
    best_peak = max(peak["best_gflops"], peak_after["best_gflops"])
    rows = []
    for k in fns:
        gf, useful = flops[k][0] / t[k] / 1e9, flops[k][1] / t[k] / 1e9
        rows.append({"what": k, "gflop": flops[k][0] / 1e9, "useful_gflop": flops[k][1] / 1e9, "seconds": t[k],
                     "gflops": gf, "fraction_of_peak": gf / best_peak, "useful_gflops": useful,
                     "useful_fraction_of_peak": useful / best_peak})
    rows.append({"what": f"torch.mm {args.mm}x{args.mm} (peak)", "gflop": 2 * args.mm ** 3 / 1e9,
                 "gflops": best_peak, "fraction_of_peak": 1.0})
    report("flops", rows, ["what", "gflop", "useful_gflop", "seconds", "gflops", "fraction_of_peak",
                           "useful_fraction_of_peak"],
           {"model": args.model, "images": B, "samples": n, "repeat": repeat, "peak_before": peak,
            "peak_after": peak_after,
            "unit": "FLOPs counted by FlopCounterMode (conv/matmul, fwd+bwd as executed); GFLOP/s = FLOPs / "
                    "median seconds; peak = best torch.mm in this process"}, args)
    return {"rows": rows}


if __name__ == "__main__":
    main()
