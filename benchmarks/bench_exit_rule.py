"""Early-exit rules: what each costs and how strong the points it returns are, on a shipped model's first N test
images, in one process.

An iterative attack with early exit stops attacking an image once its iterate passes the rule "all of k fresh
predictions, each averaging S draws, wrong" (``kxS``; ``none``: no exit, the full budget). A rule that lets a
point go while the scoring still gets it right now and then returns a weaker point: the cascade then reports a
higher worst case than an attack that kept optimising (pyautoattack's APGD has no such exit). Per rule: the
attack's wall time and the returned points' accuracy under the evaluation's fresh scoring (10 predictions of
S = 5 draws each; mean with its 95 % CI, and how many images had 0, 1, ... correct predictions).

Usage: python benchmarks/bench_exit_rule.py [--full] [--images N] [--attack pgd] [--rules 10x5 50x1 none]
"""
from __future__ import annotations

import collections
import time

import torch
from common import parser, pick, report, setup

from lwta_plugin.attacks import build_attack
from lwta_plugin.data import load_tensors
from lwta_plugin.statistics import confidence_interval, correct_counts, seed_everything
from lwta_plugin.zoo import load_model

PASSES, SAMPLES = 10, 5  # the adaptive protocol's scoring
EOT = {"pgd": 1, "eot_pgd": 20}


def parse_rule(rule: str) -> dict:
    if rule == "none":
        return {}
    k, s = rule.split("x")
    return {"early_exit": int(k), "confirm_samples": int(s)}


def run(model, x: torch.Tensor, y: torch.Tensor, attack: str, rule: str, steps: int, seed: int) -> dict:
    seed_everything(seed)
    a = build_attack(attack, model, eps=0.3, alpha=0.01, steps=steps, random_start=True,
                     eot_samples=EOT[attack], loss="ce", **parse_rule(rule))
    t = time.perf_counter()
    xa = torch.cat([a(x[i:i + 100], y[i:i + 100]) for i in range(0, len(x), 100)])
    seconds = time.perf_counter() - t
    counts = correct_counts(model, xa, y, PASSES, SAMPLES)
    p = [c / PASSES for c in counts]
    lo, hi = confidence_interval(p)
    return {"rule": rule, "seconds": round(seconds, 1), "robust": round(sum(p) / len(p), 4), "ci": [lo, hi],
            "correct_of_10": dict(sorted(collections.Counter(counts).items()))}


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--model", default="lwta_ibp_softmax")
    ap.add_argument("--images", type=int, default=None, help="images (small 20, full 200)")
    ap.add_argument("--attack", default="pgd", choices=sorted(EOT))
    ap.add_argument("--steps", type=int, default=None, help="attack steps (small 10, full 100)")
    ap.add_argument("--rules", nargs="+", default=["10x5", "20x1", "50x1", "none"])
    args = ap.parse_args()
    setup(args.threads, args.seed)
    n, steps = pick(args, "images", 20, 200), pick(args, "steps", 10, 100)
    model = load_model(args.model, dataset="mnist")
    x, y = load_tensors("mnist", limit=n)
    rows = []
    for rule in args.rules:
        rows.append(run(model, x, y, args.attack, rule, steps, args.seed))
        print(rows[-1], flush=True)
    report("exit_rule", rows, ["rule", "seconds", "robust", "ci", "correct_of_10"], args=args,
           extra={"model": args.model, "images": n, "attack": args.attack, "steps": steps,
                  "scoring": f"{PASSES} predictions of S = {SAMPLES} draws"})


if __name__ == "__main__":
    main()
