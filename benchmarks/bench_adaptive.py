"""End to end: our adaptive protocol (cascade + early exit) vs the same protocol without them vs pyautoattack's
``AutoAttack(version='rand')``, on the same shipped model and the same test images, in one process.

Candidates (each run ``--repeat`` times, round-robin, from a fresh state directory):

* ``cascade``    ``lwta evaluate --protocol adaptive --n-examples N`` as shipped: the attacks cheapest first, each
                 only on the images no earlier one broke, early exit inside the iterative attacks; robust accuracy
                 = the entry's worst case (selected on selection draws, scored on fresh draws) with its 95 % CI;
* ``full``       the same protocol with ``cascade=False, early_exit=False`` (every attack on every image for its
                 full budget): its worst case must agree with ``cascade``'s within the intervals;
* ``autoattack`` pyautoattack ``AutoAttack(model, norm='Linf', eps, version='rand')`` (APGD-CE + APGD-DLR, its own
                 EOT 20 over single model calls, its own one-pass scoring) on the model as the zoo returns it (each
                 call averages the default S = 5 draws); reported with its own accuracy and with ours (the returned
                 points scored by 10 predictions of S = 5 draws each, mean with a 95 % CI).

Printed and written (``benchmarks/results/adaptive.json``): per candidate the median, min and max wall time over
the repeats and the load average during the runs, the ratios ``autoattack / cascade`` and ``full / cascade`` of
the median times, and the accuracies. A ratio measured with a load average above the number of cores is marked
``loaded`` and not claimed as met.

Usage: python benchmarks/bench_adaptive.py [--images N] [--repeat 3] [--model lwta_ibp_softmax]
       [--candidates cascade full autoattack]   (--full: 1,000 images)
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import parser, pick, report, setup

from lwta_plugin.data import load_tensors
from lwta_plugin.evaluation import EvaluationConfig, evaluate
from lwta_plugin.statistics import confidence_interval, correct_counts
from lwta_plugin.zoo import load_model

CANDIDATES = ("cascade", "full", "autoattack")


def run_ours(model_name: str, x: torch.Tensor, y: torch.Tensor, n: int, seed: int, fast: bool) -> dict:
    """The adaptive protocol on the first ``n`` images, into a temporary directory; its worst case."""
    with tempfile.TemporaryDirectory() as out:
        config = EvaluationConfig(model_name, protocols="adaptive", n_examples=n, seed=seed, out_dir=out,
                                  cascade=fast, early_exit=fast)
        [status] = evaluate(config, data=(x, y), progress=False, log=None)
        entry = json.loads(Path(status["path"]).read_text(encoding="utf-8"))
    w = entry["worst_case"]
    return {"robust": w["mean"], "ci": [w["ci_low"], w["ci_high"]], "n": w["n_examples"],
            "stages": [(s["attack"], s["n_attacked"], s["robust_after"]["mean"])
                       for s in entry.get("cascade", {}).get("stages", [])]}


def run_autoattack(model_name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """pyautoattack's rand version on the zoo model; its own accuracy and ours of its points."""
    from pyautoattack import AutoAttack

    model = load_model(model_name, dataset="mnist")
    adversary = AutoAttack(model, norm="Linf", eps=0.3, version="rand", seed=seed, verbose=False)
    x_adv = adversary.run_standard_evaluation(x, y, bs=len(x))
    with torch.no_grad():
        own = float((model(x_adv).argmax(1) == y).float().mean())
    counts = correct_counts(model, x_adv, y, passes=10, samples=5)
    p = [c / 10 for c in counts]
    lo, hi = confidence_interval(p)
    return {"robust": sum(p) / len(p), "ci": [lo, hi], "n": len(p), "own_one_pass": own}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=None, help="test images (default 50; --full 1000)")
    ap.add_argument("--model", default="lwta_ibp_softmax")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    args = ap.parse_args()
    setup(args.threads, args.seed)
    n = args.images or pick(args, "images", 50, 1000)
    x, y = load_tensors("mnist", "test")
    x, y = x[:n], y[:n]
    repeat = max(args.repeat or 3, 1)
    times: dict[str, list[float]] = {c: [] for c in args.candidates}
    results: dict[str, dict] = {}
    loads = []
    for _ in range(repeat):
        for c in args.candidates:
            t0 = time.perf_counter()
            if c == "autoattack":
                results[c] = run_autoattack(args.model, x, y, args.seed)
            else:
                results[c] = run_ours(args.model, x, y, n, args.seed, fast=c == "cascade")
            times[c].append(time.perf_counter() - t0)
            loads.append(os.getloadavg()[0])
    cores = os.cpu_count() or 1
    loaded = max(loads) > cores
    rows = []
    for c in args.candidates:
        t = times[c]
        rows.append({"candidate": c, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                     "robust_acc": results[c]["robust"], "ci_low": results[c]["ci"][0],
                     "ci_high": results[c]["ci"][1], "n_images": results[c]["n"],
                     "own_one_pass": results[c].get("own_one_pass")})
    ratios = {}
    if "cascade" in times:
        for other in ("autoattack", "full"):
            if other in times:
                ratios[f"{other}_vs_cascade"] = {
                    "median": statistics.median(times[other]) / statistics.median(times["cascade"]),
                    "min": min(times[other]) / max(times["cascade"]),
                    "max": max(times[other]) / min(times["cascade"])}
    targets = []
    if "cascade" in results and "autoattack" in results:
        faster = ratios["autoattack_vs_cascade"]["median"] > 1
        stronger = results["cascade"]["robust"] <= results["autoattack"]["robust"]
        targets.append({"goal": "cascade faster than AutoAttack rand and no higher accuracy",
                        "measured": f"{ratios['autoattack_vs_cascade']['median']:.2f}x, "
                                    f"{100 * results['cascade']['robust']:.1f} % vs "
                                    f"{100 * results['autoattack']['robust']:.1f} %",
                        "met": None if loaded else bool(faster and stronger)})
    if "cascade" in results and "full" in results:
        a, b = results["cascade"]["ci"], results["full"]["ci"]
        targets.append({"goal": "cascade and full protocol agree within their intervals",
                        "measured": f"[{a[0]:.3f}, {a[1]:.3f}] vs [{b[0]:.3f}, {b[1]:.3f}]",
                        "met": bool(a[0] <= b[1] and b[0] <= a[1])})
    extra = {"model": args.model, "images": n, "repeat": repeat, "ratios": ratios, "targets": targets,
             "loadavg_during": {"max": max(loads), "min": min(loads)}, "loaded": loaded,
             "cascade_stages": results.get("cascade", {}).get("stages")}
    report("adaptive", rows, ["candidate", "median_s", "min_s", "max_s", "robust_acc", "ci_low", "ci_high",
                              "n_images", "own_one_pass"], extra=extra, args=args)
    for k, r in ratios.items():
        print(f"{k}: {r['median']:.2f}x (min {r['min']:.2f}x, max {r['max']:.2f}x)"
              + (" [loaded: not claimed]" if loaded else ""))
    for t in targets:
        print(f"target: {t['goal']}: {t['measured']} -> met={t['met']}")


if __name__ == "__main__":
    main()
