"""Test-time sampler cost: exact categorical vs the reference code's Gumbel-softmax (temperature 0.01).

Measures, on MNIST Tanh16 LWTA & IBP, in one process:
* one forward pass (inference) with each sampler;
* one EOT gradient (20 samples, 100 images) with each sampler;
* the share of LWTA sampling in the layer cost, from the PyTorch profiler (target: sampling <= 25% of conv/matmul).

Usage: python benchmarks/bench_sampler.py [--images 100] [--samples 20]
"""
from __future__ import annotations

import argparse

import torch
from common import report, setup, timeit

from lwta_plugin.layers import lwta
from lwta_plugin.models import create_model


def eot_grad(model, x, y, n):
    x = x.clone().requires_grad_(True)
    out = model.forward_samples(x, n)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.repeat(n))
    loss.backward()
    return x.grad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    args = ap.parse_args()
    setup()
    model = create_model(args.model).eval()
    x, y = torch.rand(args.images, 1, 28, 28), torch.randint(0, 10, (args.images,))
    rows = []
    for preset in ("paper", "concrete"):
        with model.sampling(preset):
            with torch.inference_mode():
                fwd = timeit(lambda: model(x), repeat=7)
            grad = timeit(lambda: eot_grad(model, x, y, args.samples), repeat=3)
        rows.append({"sampler": preset, "forward_s": fwd["median_s"], "eot_grad_s": grad["median_s"]})
    ratio_f = rows[1]["forward_s"] / rows[0]["forward_s"]
    ratio_g = rows[1]["eot_grad_s"] / rows[0]["eot_grad_s"]
    rows.append({"sampler": "concrete/paper ratio", "forward_s": ratio_f, "eot_grad_s": ratio_g})

    # Sampling share of a conv layer's cost (the 64->64 3x3 conv of the MNIST network at 14x14).
    h = torch.randn(args.images * 5, 32, 2, 14, 14)
    conv_in = torch.randn(args.images * 5, 64, 14, 14)
    w = torch.randn(64, 64, 3, 3)
    with torch.inference_mode():
        t_conv = timeit(lambda: torch.nn.functional.conv2d(conv_in, w, padding=1), repeat=7)["median_s"]
        t_exact = timeit(lambda: lwta(h, 2, "sample", 1.0), repeat=7)["median_s"]
        t_conc = timeit(lambda: lwta(h, 2, "concrete", 0.01), repeat=7)["median_s"]
    rows.append({"sampler": "layer: conv 64->64 3x3 @14x14", "forward_s": t_conv})
    rows.append({"sampler": "layer: exact LWTA sampling", "forward_s": t_exact,
                 "share_of_conv": t_exact / t_conv})
    rows.append({"sampler": "layer: concrete LWTA sampling", "forward_s": t_conc,
                 "share_of_conv": t_conc / t_conv})
    report("sampler", rows, ["sampler", "forward_s", "eot_grad_s", "share_of_conv"],
           {"images": args.images, "samples": args.samples, "model": args.model})


if __name__ == "__main__":
    main()
