"""S-sample inference (the paper's S = 5) vs one forward pass, in one process on the same images.

Candidates (all under ``torch.inference_mode``, eval mode, the exact sampler):

* ``lwta_S``        ``model(x)`` with ``model.using(samples=S)``: our default inference (one batched pass of S
                    draws, chunked to ``model.max_rows`` rows, the first conv computed once for all draws);
* ``lwta_S_noshare`` the same S draws without sharing the first conv (``model.body`` on the input repeated S
                    times): what the sharing buys;
* ``lwta_S_rowsR`` / ``lwta_1_rowsR``: ``lwta_S`` / ``lwta_1`` with ``model.max_rows = R`` (``--other-rows``,
                    default 1024, the default before 2026-12-07: one pass of S x B rows; the default is now 128,
                    less memory traffic per row on this CPU);
* ``lwta_1``        ``model(x)`` with one draw (one stochastic forward pass of the same network);
* ``relu_1``        one forward pass of the ReLU baseline (``relu_tanh16``, same architecture, no LWTA, no IBP).

Target: ``lwta_S`` <= 2.5x ``lwta_1``. Every stochastic layer after the first needs S independent draws, so
only the first layer's linear part can be shared; see the README for the arithmetic.

Usage: python benchmarks/bench_inference.py [--full] [--images B] [--samples S]
"""
from __future__ import annotations

import torch
from common import compare, eval_model, inputs, parser, pick, report, setup

TARGET = 2.5


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--baseline", default="relu_tanh16")
    ap.add_argument("--other-rows", type=int, default=1024, help="max_rows of the rowsR candidates")
    ap.add_argument("--images", type=int, default=None, help="images per call (small 100, full 1000)")
    ap.add_argument("--samples", type=int, default=5, help="S, draws averaged at inference")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, S = pick(args, "images", 100, 1000), args.samples
    repeat = pick(args, "repeat", 7, 7)
    model = eval_model(args.model, seed=args.seed)
    relu = eval_model(args.baseline, seed=args.seed)
    x, _ = inputs(B, model.input_shape, model.n_classes, args.seed)

    default_rows = model.max_rows

    def lwta(samples, max_rows=default_rows):
        def fn():
            model.max_rows = max_rows
            try:
                with torch.inference_mode(), model.using(samples=samples):
                    return model(x)
            finally:
                model.max_rows = default_rows
        return fn

    from bench_sampler import linear_only

    first = next(m for m in model.modules() if hasattr(m, "_same"))

    def first_linear():
        with torch.inference_mode():
            linear_only(first, x - 0.5)

    def noshare():
        # The same S draws as lwta_S (same chunking), without the shared first conv.
        with torch.inference_mode():
            per = max(1, model.max_rows // B)
            xs = x - 0.5
            for i in range(0, S, per):
                k = min(per, S - i)
                model.decoder(model.body(xs.repeat(k, 1, 1, 1), k), "logits")

    def relu1():
        with torch.inference_mode():
            return relu(x)

    other = args.other_rows
    fns = {"lwta_S": lwta(S), "lwta_S_noshare": noshare, f"lwta_S_rows{other}": lwta(S, other), "lwta_1": lwta(1),
           f"lwta_1_rows{other}": lwta(1, other), "relu_1": relu1, "first_conv_only": first_linear}
    t = {k: v["median_s"] for k, v in compare(fns, repeat=repeat, warmup=args.warmup).items()}
    rows = [{"candidate": k.replace("_S", f"_{S}"), "seconds": v, "images_per_s": B / v,
             "vs_lwta_1": v / t["lwta_1"], "vs_relu_1": v / t["relu_1"]} for k, v in t.items()]
    # With only the first conv's linear part shared, S draws cost at least S passes minus (S-1) first convs.
    floor = S - (S - 1) * t["first_conv_only"] / t["lwta_1"]
    ratio = t["lwta_S"] / t["lwta_1"]
    targets = [{"target": f"S={S} inference / one forward pass", "goal": f"<= {TARGET}x", "measured": ratio,
                "met": ratio <= TARGET}]
    report("inference", rows, ["candidate", "seconds", "images_per_s", "vs_lwta_1", "vs_relu_1"],
           {"model": args.model, "baseline": args.baseline, "images": B, "samples": S, "repeat": repeat,
            "max_rows": model.max_rows, "targets": targets,
            "sharing_speedup": t["lwta_S_noshare"] / t["lwta_S"], "floor_with_first_conv_shared": floor,
            "other_rows": other, "ratio_at_other_rows": t[f"lwta_S_rows{other}"] / t[f"lwta_1_rows{other}"],
            "unit": "median seconds per call of B images; ratios are time ratios"}, args)
    print(f"target S={S} inference <= {TARGET}x one pass: measured {ratio:.2f}x -> "
          f"{'met' if ratio <= TARGET else 'NOT met'}; sharing the first conv: "
          f"{t['lwta_S_noshare'] / t['lwta_S']:.2f}x; floor with only the first conv shared: {floor:.2f}x")
    return {"rows": rows, "targets": targets}


if __name__ == "__main__":
    main()
