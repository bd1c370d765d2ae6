"""AutoAttack 'standard' (APGD-CE, APGD-T, FAB-T, Square) on the deterministic shipped MNIST models, on the same
first 1,000 test images as the full-scale adaptive cascade, beside that cascade's worst case.

The adaptive protocol was built for random models; for a deterministic model the community's reference attack is
AutoAttack 'standard', whose targeted and gradient-free attacks the protocol does not run. This checks what it
misses: per image, which images only AutoAttack breaks, and the worst case of both together.

    python experiments/autoattack-standard/run.py lwtamax_tanh16 [model ...]   # one JSON per model, resumable
    python experiments/autoattack-standard/run.py --table                     # the README's table

Deterministic models only: on a random model 'standard' is the wrong protocol (AutoAttack says so itself; use
``lwta evaluate --protocol autoattack-rand``). One torch thread, seed 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from lwta_plugin.data import load_tensors
from lwta_plugin.io import atomic_write_json
from lwta_plugin.statistics import confidence_interval, decode_counts, encode_counts
from lwta_plugin.zoo import load_model

HERE = Path(__file__).resolve().parent
FULL_SCALE = HERE.parent / "full-scale" / "mnist" / "Linf"
EPS = 0.3


def cascade_worst_case(model: str) -> dict:
    """The full-scale adaptive entry's fresh worst case: its images and which of them any attack broke."""
    path = FULL_SCALE / f"{model}__adaptive.json"
    if not path.is_file():
        raise SystemExit(f"no full-scale adaptive entry for {model!r} ({path}): run scripts/eval_full_scale.sh first")
    worst = json.loads(path.read_text())["worst_case"]
    return {"n": worst["n_examples"], "passes": worst["passes"], "mean": worst["mean"],
            "correct": decode_counts(worst["per_example_correct"])}


def run(model_name: str, seed: int) -> dict:
    from pyautoattack import AutoAttack

    model = load_model(model_name, dataset="mnist")
    if getattr(model, "stochastic", False):
        raise SystemExit(f"{model_name!r} is a random model: AutoAttack 'standard' is not the protocol for it "
                         f"(use lwta evaluate --protocol autoattack-rand)")
    ours = cascade_worst_case(model_name)
    n = ours["n"]
    x, y = load_tensors("mnist", "test")
    x, y = x[:n], y[:n]
    adversary = AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=seed, device="cpu")
    t0, c0 = time.perf_counter(), time.process_time()
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=500)  # (points, AutoAttack's labels)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        aa = (model(x_adv).argmax(1) == y).tolist()
    if (x_adv - x).abs().max().item() > EPS + 1e-6:
        raise SystemExit("AutoAttack returned points outside the L-inf ball")
    ours_robust = [c > 0 for c in ours["correct"]]  # 0: broken in every fresh prediction (all alike, deterministic)
    both = [a and o for a, o in zip(aa, ours_robust)]
    lo, hi = confidence_interval([float(b) for b in aa])
    blo, bhi = confidence_interval([float(b) for b in both])
    import pyautoattack
    return {
        "model": model_name, "n_examples": n, "seed": seed, "eps": EPS, "threads": torch.get_num_threads(),
        "command": f"python experiments/autoattack-standard/run.py {model_name}",
        "autoattack_standard": {"robust": sum(aa) / n, "ci": [lo, hi], "correct": encode_counts([ours["passes"] * a for a in aa], ours["passes"]),
                                "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1)},
        "cascade_worst_case": {"robust": ours["mean"], "source": str(FULL_SCALE.relative_to(HERE.parent.parent)
                                                                      / f"{model_name}__adaptive.json")},
        "only_autoattack_breaks": sum(o and not a for a, o in zip(aa, ours_robust)),
        "only_cascade_breaks": sum(a and not o for a, o in zip(aa, ours_robust)),
        "both_together": {"robust": sum(both) / n, "ci": [blo, bhi]},
        "machine": {"loadavg_at_end": list(os.getloadavg()), "python": platform.python_version(),
                    "torch": torch.__version__, "pyautoattack": getattr(pyautoattack, "__version__", "?")},
    }


def cascade_seconds(model: str) -> float:
    """Seconds of the cascade's batches in the full-scale run (its timing file), one thread."""
    timing = json.loads((FULL_SCALE / "timing" / f"{model}__adaptive.json").read_text())
    return sum(v for k, v in timing["seconds"].items() if k.startswith("cascade/"))


def table() -> str:
    rows = [("| model | AutoAttack standard | adaptive cascade (worst case) | broken only by AA | broken only by the "
             "cascade | both together | AA wall time | cascade wall time |"), "|---|---|---|---|---|---|---|---|"]
    for path in sorted(HERE.glob("results/*.json")):
        r = json.loads(path.read_text())
        aa, both = r["autoattack_standard"], r["both_together"]
        rows.append(f"| `{r['model']}` | {100 * aa['robust']:.1f} % [{100 * aa['ci'][0]:.1f}, {100 * aa['ci'][1]:.1f}] "
                    f"| {100 * r['cascade_worst_case']['robust']:.1f} % | {r['only_autoattack_breaks']} "
                    f"| {r['only_cascade_breaks']} | {100 * both['robust']:.1f} % [{100 * both['ci'][0]:.1f}, "
                    f"{100 * both['ci'][1]:.1f}] | {aa['seconds']:.0f} s (load {r['machine']['loadavg_at_end'][0]:.1f}) "
                    f"| {cascade_seconds(r['model']):.0f} s |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", action="store_true", help="print the results as a markdown table")
    args = p.parse_args(argv)
    if args.table:
        print(table())
        return
    torch.set_num_threads(1)
    for name in args.models:
        out = HERE / "results" / f"{name}.json"
        if out.is_file():
            print(f"{name}: done ({out})", file=sys.stderr)
            continue
        result = run(name, args.seed)
        atomic_write_json(out, result)
        print(f"{name}: AutoAttack standard {100 * result['autoattack_standard']['robust']:.1f} %, cascade "
              f"{100 * result['cascade_worst_case']['robust']:.1f} %, both {100 * result['both_together']['robust']:.1f} %")


if __name__ == "__main__":
    main()
