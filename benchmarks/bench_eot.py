"""EOT attack throughput: our batched EOT attacks vs torchattacks' EOTPGD and AutoAttack's APGD with eot_iter.

Same model, same images, same number of steps, same eps/alpha, in one process, timed round-robin. For each
n in ``--samples`` (EOT draws per gradient):

* ``ours``          lwta_plugin.attacks.EOTPGD(eot_samples=n), our defaults (exact sampler, auto chunk size,
                    best-iterate tracking and the final averaged re-scoring included);
* ``ours_concrete`` the same attack with the reference code's sampler (``model.sampling("concrete")``);
* ``ours_chunk1``   our EOTPGD with ``chunk_size=1`` (one draw per pass: isolates the gain of batching);
* ``ta``            torchattacks.EOTPGD(eot_iter=n) on our default model (a Python loop of n single passes);
* ``ta_concrete``   torchattacks.EOTPGD(eot_iter=n) on the reference-code sampler as we implement it
                    (``model.sampling("concrete")``: the same distribution, U = 2 rewritten as one sigmoid);
* ``ta_reference``  torchattacks.EOTPGD(eot_iter=n) on the reference-code sampler computed as the authors' code
                    writes it (``common.reference_code_sampler``: softmax((h + G) / 0.01) over U, literal binary
                    concrete z);
* ``aa_apgd``       pyautoattack APGDAttack(loss="ce", eot_iter=n).attack_single_run (AutoAttack ``rand``'s
                    APGD-CE: a Python loop of n single passes per iteration);
* ``ours_apgd``     lwta_plugin.attacks.APGDRand(eot_iter=n, losses=("ce",)): the same APGD iterations on our
                    batched EOT wrapper (plus its final averaged re-scoring).

Throughput = attacked images / wall-clock second. Targets (n=20): ours >= 3x torchattacks on the reference-code
sampler (reported against both ``ta_reference`` and our faster ``ta_concrete``), ours >= 1.0x ta.

A second table isolates one EOT gradient estimate (the attacks' inner step) at the same n: ``grad_ours``
(``lwta_plugin.eot.eot_gradient``, auto chunks) vs ``grad_loop`` (torchattacks EOTPGD's inner loop: n single
passes, one ``autograd.grad`` each), both samplers. Unit: images whose n-draw gradient is estimated per second.

Usage: python benchmarks/bench_eot.py [--full] [--images B] [--steps T] [--samples 5 20 50]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from common import compare, eval_model, inputs, parser, pick, reference_code_sampler, report, setup, within

from lwta_plugin.attacks import EOTPGD, APGDRand
from lwta_plugin.eot import eot_gradient

CANDIDATES = ("ours", "ours_concrete", "ours_chunk1", "ta", "ta_concrete", "ta_reference", "aa_apgd", "ours_apgd")
TARGETS = {("ours", "ta_reference"): 3.0, ("ours", "ta_concrete"): 3.0, ("ours", "ta"): 1.0}


def build(name: str, model, n: int, steps: int, eps: float, alpha: float):
    """A zero-argument callable ``f(x, y)`` that runs candidate ``name`` once."""
    if name in ("ours", "ours_concrete", "ours_chunk1"):
        atk = EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_samples=n,
                     chunk_size=1 if name == "ours_chunk1" else None)
        return within(lambda: model.sampling("concrete"), atk) if name == "ours_concrete" else atk
    if name in ("ta", "ta_concrete", "ta_reference"):
        import torchattacks

        atk = torchattacks.EOTPGD(model, eps=eps, alpha=alpha, steps=steps, eot_iter=n, random_start=True)
        if name == "ta_reference":
            return within(lambda: reference_code_sampler(model), atk)
        return within(lambda: model.sampling("concrete"), atk) if name == "ta_concrete" else atk
    if name == "aa_apgd":
        from pyautoattack.autopgd_base import APGDAttack

        def run(x, y):
            apgd = APGDAttack(model, n_iter=steps, norm="Linf", n_restarts=1, eps=eps, loss="ce", eot_iter=n,
                              rho=0.75, device=x.device)
            apgd.init_hyperparam(x)
            return apgd.attack_single_run(x, y)[0]
        return run
    if name == "ours_apgd":
        atk = APGDRand(model, eps=eps, steps=steps, eot_iter=n, losses=("ce",), backend="pyautoattack")
        return atk
    raise ValueError(f"unknown candidate {name!r}; expected one of {CANDIDATES}")


def gradient_fns(model, x, y, n: int) -> dict:
    """One n-draw EOT gradient: ours (batched) and the torchattacks EOTPGD inner loop, with both samplers."""
    def ours(sampler):
        def fn():
            with model.sampling(sampler):
                return eot_gradient(model, x, y, "ce", n).grad
        return fn

    def loop(sampler):
        def fn():
            with (reference_code_sampler(model) if sampler == "reference" else model.sampling(sampler)):
                xg = x.clone().requires_grad_()
                grad = torch.zeros_like(x)
                for _ in range(n):
                    grad += torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]
                return grad
        return fn

    return {"grad_ours": ours("paper"), "grad_ours_concrete": ours("concrete"), "grad_loop": loop("paper"),
            "grad_loop_concrete": loop("concrete"), "grad_loop_reference": loop("reference")}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--images", type=int, default=None, help="images attacked (small 10, full 100)")
    ap.add_argument("--steps", type=int, default=None, help="attack steps (small 3, full 10)")
    ap.add_argument("--samples", type=int, nargs="+", default=[5, 20, 50], help="EOT draws per gradient")
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    ap.add_argument("--grad-repeat", type=int, default=None, help="repeats of the gradient table (small 5, full 5)")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, steps = pick(args, "images", 10, 100), pick(args, "steps", 3, 10)
    repeat = pick(args, "repeat", 2, 3)
    grad_repeat = pick(args, "grad_repeat", 5, 5)
    alpha = 2.5 * args.eps / steps
    model = eval_model(args.model, seed=args.seed)
    x, y = inputs(B, model.input_shape, model.n_classes, args.seed)

    model.eval()
    grad_rows = []
    for i, n in enumerate(args.samples):
        t = {k: v["median_s"] for k, v in compare(gradient_fns(model, x, y, n), repeat=grad_repeat,
                                                   warmup=args.warmup if i == 0 else 0).items()}
        row = {"samples": n, **{f"{k}_img_s": B / v for k, v in t.items()},
               "grad_ours_vs_grad_loop": t["grad_loop"] / t["grad_ours"],
               "grad_ours_vs_grad_loop_concrete": t["grad_loop_concrete"] / t["grad_ours"],
               "grad_ours_vs_grad_loop_reference": t["grad_loop_reference"] / t["grad_ours"],
               "concrete_over_paper_loop": t["grad_loop_concrete"] / t["grad_loop"]}
        grad_rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    rows = []
    for i, n in enumerate(args.samples):
        fns = {c: build(c, model, n, steps, args.eps, alpha) for c in args.candidates}
        times = compare({c: (lambda f=f: f(x, y)) for c, f in fns.items()}, repeat=repeat, warmup=args.warmup if i == 0 else 0)
        row = {"samples": n}
        for c, t in times.items():
            row[f"{c}_img_s"] = B / t["median_s"]
            row[f"{c}_s"] = t["median_s"]
        for c in args.candidates:
            if c != "ours" and "ours" in times and not c.startswith("ours"):
                row[f"ours_vs_{c}"] = times[c]["median_s"] / times["ours"]["median_s"]
        if "ours_apgd" in times and "aa_apgd" in times:
            row["ours_apgd_vs_aa_apgd"] = times["aa_apgd"]["median_s"] / times["ours_apgd"]["median_s"]
        if "ours_chunk1" in times and "ours" in times:
            row["ours_vs_ours_chunk1"] = times["ours_chunk1"]["median_s"] / times["ours"]["median_s"]
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    targets = []
    for row in rows:
        if row["samples"] != 20:
            continue
        for (a, b), goal in TARGETS.items():
            key = f"{a}_vs_{b}"
            if key in row:
                targets.append({"target": f"{key} at n=20", "goal": f">= {goal}x", "measured": row[key],
                                "met": row[key] >= goal})
    ratio_cols = [k for k in rows[0] if "_vs_" in k]
    cols = ["samples", *[f"{c}_img_s" for c in args.candidates], *ratio_cols]
    print("one EOT gradient (images/s):")
    gcols = ["samples", "grad_ours_img_s", "grad_loop_img_s", "grad_ours_concrete_img_s", "grad_loop_concrete_img_s",
             "grad_loop_reference_img_s", "grad_ours_vs_grad_loop", "grad_ours_vs_grad_loop_concrete",
             "grad_ours_vs_grad_loop_reference"]
    for r in grad_rows:
        print("  ", {k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in gcols})
    print("whole attacks (images/s):")
    report("eot", rows, cols, {"model": args.model, "images": B, "steps": steps, "eps": args.eps, "alpha": alpha,
                               "samples": args.samples, "repeat": repeat, "targets": targets,
                               "gradient_rows": grad_rows, "grad_repeat": grad_repeat,
                               "unit": "attacked images per second (median of repeats); ratios = peer time / our "
                                       "time"}, args)
    for t in targets:
        print(f"target {t['target']} {t['goal']}: measured {t['measured']:.2f}x -> "
              f"{'met' if t['met'] else 'NOT met'}")
    return {"rows": rows, "targets": targets}


if __name__ == "__main__":
    main()
