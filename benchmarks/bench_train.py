"""Training throughput (images/s) of LWTA & IBP networks vs the ReLU baseline, in one process.

Each candidate runs the step of ``lwta_plugin.train`` (data loss of the code + KL / N, Gaussian input noise,
two Adam optimisers: weights and IBP variables) on the same batch of ``--batch`` (200, as the paper) random
MNIST-shaped images; the candidates' steps are timed round-robin. The time per epoch is the time per step times
the number of steps per epoch, so the per-step ratio is the per-epoch ratio (validation passes excluded).

Target: LWTA & IBP <= 1.5x the ReLU baseline's time per epoch.

Usage: python benchmarks/bench_train.py [--full] [--steps T] [--models ...]
"""
from __future__ import annotations

import torch
from common import compare, inputs, parser, pick, report, setup

from lwta_plugin.models import create_model
from lwta_plugin.train import elbo_step, make_optimizers

TARGET = 1.5
N_TRAIN = 55_000  # MNIST training images minus the 5000 validation images (lwta_plugin.train defaults)


def make_step(name: str, x: torch.Tensor, y: torch.Tensor, noise: float = 0.3):
    """One optimisation step of ``lwta_plugin.train.train`` for a fresh model ``name``."""
    model = create_model(name, "mnist").train()
    opt_w, opt_ibp = make_optimizers(model, 1e-3, 1e-2)

    def step():
        return elbo_step(model, x, y, opt_w, opt_ibp, N_TRAIN, noise)[0].item()

    return step


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["relu_tanh16", "lwta_tanh16", "lwta_ibp_tanh16"],
                    help="the first one is the baseline")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model (small 3, full 20)")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    steps = pick(args, "steps", 3, 20)
    x, y = inputs(args.batch, (1, 28, 28), 10, args.seed)
    fns = {m: make_step(m, x, y) for m in args.models}
    t = {k: v["median_s"] for k, v in compare(fns, repeat=steps, warmup=args.warmup).items()}
    base = args.models[0]
    per_epoch = -(-N_TRAIN // args.batch)
    rows = [{"model": m, "step_s": s, "images_per_s": args.batch / s, "epoch_s_estimate": s * per_epoch,
             f"vs_{base}": s / t[base]} for m, s in t.items()]
    targets = [{"target": f"{m} time per epoch / {base}", "goal": f"<= {TARGET}x", "measured": t[m] / t[base],
                "met": t[m] / t[base] <= TARGET} for m in args.models[1:]]
    report("train", rows, ["model", "step_s", "images_per_s", "epoch_s_estimate", f"vs_{base}"],
           {"batch": args.batch, "steps": steps, "models": args.models, "targets": targets,
            "unit": "median seconds per training step (batch images); epoch = "
                    f"{per_epoch} steps"}, args)
    for tg in targets:
        print(f"target {tg['target']} {tg['goal']}: measured {tg['measured']:.2f}x -> "
              f"{'met' if tg['met'] else 'NOT met'}")
    return {"rows": rows, "targets": targets}


if __name__ == "__main__":
    main()
