"""Test-time sampler cost: exact categorical (ours, ``paper``) vs the reference code's Gumbel-softmax at
temperature 0.01 (``concrete``), per layer and for the whole model, in one process on the same inputs.

Whole model (``lwta_ibp_tanh16`` by default): a batched inference pass of n draws (``torch.inference_mode``) and
one EOT gradient of n draws (``lwta_plugin.eot.eot_gradient``, default chunking) with each sampler.

Per layer: every stochastic layer with LWTA gets the input it receives inside one batched pass of the EOT
gradient (``auto_chunk_size`` draws; captured with a hook, including the shared first layer, which convolves the
B images once for all draws of the pass) and is timed
(a) conv/matmul only (``F.conv2d``/``F.linear`` with the layer's weights, bias and padding), (b) the layer with
its activation switched off (conv/matmul + IBP utility mask), (c) the whole layer with each sampler. The LWTA
sampling share is ``(c - b) / a``; the target is <= 25 % at test time (inference). Both inference and
forward+backward (w.r.t. the input, as in an attack) are reported.

Usage: python benchmarks/bench_sampler.py [--full] [--images B] [--samples n]
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from common import compare, eval_model, inputs, parser, pick, report, setup

from lwta_plugin.eot import auto_chunk_size, eot_gradient
from lwta_plugin.layers import StochasticConv2d, StochasticLinear, stochastic_layers

SAMPLERS = ("paper", "concrete")
TARGET_SHARE = 0.25


def capture_inputs(model, x: torch.Tensor, n: int) -> dict:
    """{layer: (args, kwargs)} of every stochastic layer in one batched pass of ``n`` draws."""
    seen: dict = {}
    hooks = [layer.register_forward_pre_hook(
        lambda m, a, kw: seen.setdefault(m, (tuple(t.detach() if torch.is_tensor(t) else t for t in a), dict(kw))),
        with_kwargs=True) for layer in stochastic_layers(model)]
    try:
        with torch.inference_mode(False), torch.no_grad():
            model.forward_samples(x, n)
    finally:
        for h in hooks:
            h.remove()
    return seen


def linear_only(layer, x: torch.Tensor) -> torch.Tensor:
    """The layer's conv/matmul (with bias and padding), no IBP mask, no activation."""
    if isinstance(layer, StochasticConv2d):
        wpad, pad = layer._same(x)
        w = F.pad(layer.weight, wpad) if any(wpad) else layer.weight
        return F.conv2d(x, w, layer.bias, layer.stride, pad)
    return F.linear(x, layer.weight, layer.bias)


@contextlib.contextmanager
def activation(layer, act: str):
    old = layer.activation
    layer.activation = act
    try:
        yield
    finally:
        layer.activation = old


def time_layer(model, i: int, layer, captured, n: int, repeat: int, backward: bool) -> dict:
    """Timings of one layer on the input it received in the batched pass (see module doc)."""
    (xin, *rest), kw = captured
    xin = xin.clone().requires_grad_(backward)

    def run(fn):
        def go():
            if backward:
                out = fn()
                torch.autograd.grad(out, xin, torch.ones_like(out))
            else:
                with torch.inference_mode():
                    fn()
        return go

    def full(sampler):
        def fn():
            with model.sampling(sampler):
                return layer(xin, *rest, **kw)
        return fn

    def no_act(sampler):
        def fn():
            with model.sampling(sampler), activation(layer, "none"):
                return layer(xin, *rest, **kw)
        return fn

    # the uniform draws alone (one per block of U=2 units, per row and position): the sampler's floor
    n_rows = xin.shape[0] * (n if kw.get("shared") else 1)
    block_shape = (n_rows, layer.K, *(() if isinstance(layer, StochasticLinear) else
                                      linear_only(layer, xin[:1]).shape[2:]))
    fns = {"conv_matmul": run(lambda: linear_only(layer, xin))}
    fns.update({f"linear_ibp_{s}": run(no_act(s)) for s in SAMPLERS})
    fns.update({s: run(full(s)) for s in SAMPLERS})
    t = {k: v["median_s"] for k, v in compare(fns, repeat=repeat, warmup=1).items()}
    t["rng"] = compare({"rng": lambda: torch.rand(block_shape)}, repeat=repeat, warmup=1)["rng"]["median_s"]
    kind = "conv" if isinstance(layer, StochasticConv2d) else "dense"
    shape = "x".join(str(d) for d in xin.shape[1:])
    row = {"mode": "fwd+bwd" if backward else "inference", "layer": f"{i}:{kind} {shape}",
           "rows": int(xin.shape[0]), "out_rows": n_rows, "shared": bool(kw.get("shared", False)),
           "conv_matmul_ms": 1e3 * t["conv_matmul"], "rng_floor_ms": 1e3 * t["rng"],
           "rng_floor_share": t["rng"] / t["conv_matmul"]}
    for s in SAMPLERS:
        row[f"{s}_ibp_ms"] = 1e3 * (t[f"linear_ibp_{s}"] - t["conv_matmul"])
        row[f"{s}_layer_ms"] = 1e3 * t[s]
        row[f"{s}_lwta_ms"] = 1e3 * (t[s] - t[f"linear_ibp_{s}"])
        row[f"{s}_share"] = (t[s] - t[f"linear_ibp_{s}"]) / t["conv_matmul"]
    return row


def layer_rows(model, x, n, repeat, backward: bool) -> list[dict]:
    """Per-layer timings (see module doc) for inference (``backward=False``) or forward+backward."""
    captured = capture_inputs(model, x, n)
    rows = [time_layer(model, i, layer, captured[layer], n, repeat, backward)
            for i, layer in enumerate(stochastic_layers(model))
            if layer.activation == "lwta" and layer in captured]
    # all LWTA layers together
    tot = {"mode": rows[0]["mode"], "layer": "all LWTA layers", "rows": None,
           "conv_matmul_ms": sum(r["conv_matmul_ms"] for r in rows),
           "rng_floor_ms": sum(r["rng_floor_ms"] for r in rows)}
    tot["rng_floor_share"] = tot["rng_floor_ms"] / tot["conv_matmul_ms"]
    for s in SAMPLERS:
        tot[f"{s}_ibp_ms"] = sum(r[f"{s}_ibp_ms"] for r in rows)
        tot[f"{s}_layer_ms"] = sum(r[f"{s}_layer_ms"] for r in rows)
        tot[f"{s}_lwta_ms"] = sum(r[f"{s}_lwta_ms"] for r in rows)
        tot[f"{s}_share"] = tot[f"{s}_lwta_ms"] / tot["conv_matmul_ms"]
    rows.append(tot)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--images", type=int, default=None, help="images (small 10, full 100)")
    ap.add_argument("--samples", type=int, default=None, help="draws n (small and full 20)")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, n = pick(args, "images", 10, 100), pick(args, "samples", 20, 20)
    repeat = pick(args, "repeat", 7, 7)
    model = eval_model(args.model, seed=args.seed)
    x, y = inputs(B, model.input_shape, model.n_classes, args.seed)

    def infer(s):
        def fn():
            with model.sampling(s), torch.inference_mode():
                model.forward_samples_chunked(x, n)
        return fn

    def grad(s):
        def fn():
            with model.sampling(s):
                eot_gradient(model, x, y, "ce", n)
        return fn

    fns = {**{f"infer_{s}": infer(s) for s in SAMPLERS}, **{f"grad_{s}": grad(s) for s in SAMPLERS}}
    t = {k: v["median_s"] for k, v in compare(fns, repeat=repeat, warmup=args.warmup).items()}
    whole = [{"what": f"{what} ({n} draws x {B} images)", "paper_s": t[f"{key}_paper"],
              "concrete_s": t[f"{key}_concrete"], "concrete_over_paper": t[f"{key}_concrete"] / t[f"{key}_paper"]}
             for key, what in (("infer", "inference pass"), ("grad", "EOT gradient"))]
    report_cols = ["what", "paper_s", "concrete_s", "concrete_over_paper"]
    k = auto_chunk_size(n, B, x[0].numel())  # draws per pass, as eot_gradient batches them
    layers = layer_rows(model, x, k, repeat, backward=False) + layer_rows(model, x, k, repeat, backward=True)
    total_inf = next(r for r in layers if r["layer"] == "all LWTA layers" and r["mode"] == "inference")
    targets = [{"target": "LWTA sampling (exact, test time) / conv+matmul, all LWTA layers", "goal": f"<= "
                f"{TARGET_SHARE}", "measured": total_inf["paper_share"], "met": total_inf["paper_share"] <= TARGET_SHARE}]
    for r in layers:
        if r["mode"] == "inference" and r["layer"] != "all LWTA layers":
            targets.append({"target": f"LWTA sampling share, layer {r['layer']}", "goal": f"<= {TARGET_SHARE}",
                            "measured": r["paper_share"], "met": r["paper_share"] <= TARGET_SHARE})
    layer_cols = ["mode", "layer", "rows", "out_rows", "conv_matmul_ms", "paper_ibp_ms", "paper_lwta_ms",
                  "concrete_lwta_ms", "paper_share", "concrete_share", "rng_floor_share"]
    print("whole model:")
    for r in whole:
        print("  ", {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    report("sampler", layers, layer_cols, {"whole_model": whole, "whole_model_columns": report_cols,
                                           "model": args.model, "images": B, "samples": n, "repeat": repeat,
                                           "draws_per_pass_in_layer_table": k,
                                           "targets": targets,
                                           "unit": "median milliseconds; share = sampling time / conv+matmul "
                                                   "time of the same layer"}, args)
    for tg in targets[:1]:
        print(f"target {tg['target']} {tg['goal']}: measured {tg['measured']:.3f} -> "
              f"{'met' if tg['met'] else 'NOT met'}")
    return {"whole": whole, "layers": layers, "targets": targets}


if __name__ == "__main__":
    main()
