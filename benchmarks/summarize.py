"""Print a markdown table of the headline ratios in benchmarks/results/*.json (for benchmarks/README.md).

Repeated runs of one command (tags ending in ``-run1``, ``-run2``, ...) are summarised together: the median ratio,
its min and max, and the range of load averages at the runs' ends, in a second table.

Usage: python benchmarks/summarize.py [--results DIR]
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(d: Path, name: str) -> dict | None:
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ctx(r: dict) -> str:
    return f"{r['machine']['threads']} thread(s), load {r['machine'].get('loadavg_at_end', ['?'])[0]:.1f}"


_RUN = re.compile(r"^(?P<group>.+)-run(?P<i>\d+)$")
# the eot benchmark's attack ratios (row keys) with their labels; and its one-gradient ratios
EOT_RATIOS = (("ours_vs_ta", "EOT-PGD ours / torchattacks EOTPGD (same model)"),
              ("ours_vs_ta_concrete", "EOT-PGD ours / torchattacks EOTPGD on concrete sampler"),
              ("ours_vs_ta_reference", "EOT-PGD ours / torchattacks EOTPGD on literal reference sampler"),
              ("ours_apgd_vs_aa_apgd", "APGD-CE ours / AutoAttack APGD eot_iter"),
              ("ours_vs_aa_apgd", "EOT-PGD ours / AutoAttack APGD eot_iter"))
EOT_GRADIENT_RATIOS = ("grad_ours_vs_grad_loop", "grad_ours_vs_grad_loop_concrete", "grad_ours_vs_grad_loop_reference")


def rows(d: Path) -> list[tuple[str, str, str, str, str]]:
    out = []
    for name in sorted(p.stem for p in d.glob("*.json") if not _RUN.match(p.stem)):
        r = _load(d, name)
        base = name.split("-")[0]
        if base == "eot":
            sizes = f"B={r['images']}, steps={r['steps']}"
            for row in r["rows"]:
                n = row["samples"]
                for key, label in EOT_RATIOS:
                    if key in row:
                        goal = {"ours_vs_ta": ">= 1.0x" if n == 20 else "", "ours_vs_ta_concrete":
                                ">= 3x" if n == 20 else "", "ours_vs_ta_reference": ">= 3x" if n == 20 else ""
                                }.get(key, "")
                        out.append((f"{label}, n={n} (images/s ratio)", f"{row[key]:.2f}x", goal,
                                    f"{sizes}, {_ctx(r)}", r["command"]))
            for row in r.get("gradient_rows", []):
                n = row["samples"]
                out.append((f"one EOT gradient ours / torchattacks loop, n={n}", f"{row['grad_ours_vs_grad_loop']:.2f}x",
                            "", f"B={r['images']}, {_ctx(r)}", r["command"]))
                out.append((f"one EOT gradient ours / torchattacks loop on concrete, n={n}",
                            f"{row['grad_ours_vs_grad_loop_concrete']:.2f}x", "", f"B={r['images']}, {_ctx(r)}",
                            r["command"]))
                if "grad_ours_vs_grad_loop_reference" in row:
                    out.append((f"one EOT gradient ours / torchattacks loop on the literal reference sampler, n={n}",
                                f"{row['grad_ours_vs_grad_loop_reference']:.2f}x", "", f"B={r['images']}, {_ctx(r)}",
                                r["command"]))
        elif base == "sampler":
            for w in r["whole_model"]:
                out.append((f"sampler: concrete / exact, {w['what']}", f"{w['concrete_over_paper']:.2f}x", "",
                            f"{_ctx(r)}", r["command"]))
            for t in r["targets"][:1]:
                out.append(("LWTA sampling / conv+matmul at test time, all LWTA layers", f"{t['measured']:.2f}",
                            t["goal"], (f"B={r['images']}, {r['draws_per_pass_in_layer_table']} draws/pass, "
                                        f"{_ctx(r)}"), r["command"]))
            tot = [x for x in r["rows"] if x["layer"] != "all LWTA layers" and x["mode"] == "inference"]
            if len(tot) > 1:
                rest = [x for x in tot if not x["shared"]]
                share = sum(x["paper_lwta_ms"] for x in rest) / sum(x["conv_matmul_ms"] for x in rest)
                out.append(("LWTA sampling / conv+matmul at test time, LWTA layers after the first", f"{share:.2f}",
                            "<= 0.25", f"B={r['images']}, {_ctx(r)}", r["command"]))
        elif base == "inference":
            by = {x["candidate"]: x for x in r["rows"]}
            S = r["samples"]
            out.append((f"S={S} inference / one forward pass (same network)", f"{by[f'lwta_{S}']['vs_lwta_1']:.2f}x",
                        "<= 2.5x", f"B={r['images']}, max_rows={r['max_rows']}, {_ctx(r)}", r["command"]))
            if "ratio_at_other_rows" in r or "ratio_at_128_rows" in r:  # results before --other-rows: 128 rows
                o = r.get("other_rows", 128)
                ratio = r.get("ratio_at_other_rows", r.get("ratio_at_128_rows"))
                out.append((f"S={S} inference / one forward pass, both in passes of <= {o} rows", f"{ratio:.2f}x", "",
                            f"B={r['images']}, {_ctx(r)}", r["command"]))
                t_max, t_o = by[f"lwta_{S}"]["seconds"], by[f"lwta_{S}_rows{o}"]["seconds"]
                fast, slow = (f"{o}-row passes", f"max_rows={r['max_rows']}") if t_o < t_max else \
                    (f"max_rows={r['max_rows']}", f"{o}-row passes")
                out.append((f"S={S} inference: {fast} vs {slow} (speedup)", f"{max(t_max, t_o) / min(t_max, t_o):.2f}x",
                            "", f"B={r['images']}, {_ctx(r)}", r["command"]))
            out.append((f"S={S} inference / one pass of the ReLU baseline", f"{by[f'lwta_{S}']['vs_relu_1']:.2f}x", "",
                        f"B={r['images']}, {_ctx(r)}", r["command"]))
            out.append(("one LWTA-IBP pass / one ReLU pass", f"{by['lwta_1']['vs_relu_1']:.2f}x", "",
                        f"B={r['images']}, {_ctx(r)}", r["command"]))
        elif base == "train":
            for t in r["targets"]:
                out.append((f"training: {t['target']}", f"{t['measured']:.2f}x", t["goal"],
                            f"batch {r['batch']}, {r['steps']} steps, {_ctx(r)}", r["command"]))
        elif base == "flops":
            for x in r["rows"][:-1]:
                value = (f"{x['fraction_of_peak']:.2f} ({x['gflops']:.0f} of {r['rows'][-1]['gflops']:.0f} GFLOP/s; "
                         f"useful {x['useful_fraction_of_peak']:.2f})")
                out.append((f"GFLOP/s / matmul peak: {x['what']}", value, "",
                            f"B={r['images']}, n={r['samples']}, {_ctx(r)}", r["command"]))
        elif base == "memory":
            for x in r["rows"]:
                out.append((f"peak memory added, n={r['samples']}: {x['config']}", f"{x['added_mib']:.0f} MiB", "",
                            f"B={r['images']}, chunk {x['chunk']}", r["command"]))
        elif base == "adaptive":
            during = r.get("loadavg_during", {})
            base_ctx = (f"{r['images']} images, {r['machine']['threads']} thread(s), load "
                        f"{during.get('min', float('nan')):.1f}-{during.get('max', float('nan')):.1f}")
            ctx = base_ctx + (" (loaded: not claimed)" if r.get("loaded") else "")
            for x in r["rows"]:
                value = (f"{x['median_s']:.0f} s (min {x['min_s']:.0f}, max {x['max_s']:.0f}, {x.get('runs', '?')} "
                         f"run(s)); robust {100 * x['robust_acc']:.1f} % [{100 * x['ci_low']:.1f}, "
                         f"{100 * x['ci_high']:.1f}]")
                if "median_cpu_s" in x:
                    value += f"; CPU {x['median_cpu_s']:.0f} s"
                goal = "< 1800 s" if x["candidate"] == "cascade" and r["images"] == 1000 else ""
                out.append((f"end to end: {x['candidate']} (wall time; robust accuracy)", value, goal, ctx,
                            r["command"]))
            for key, ratio in r.get("ratios", {}).items():
                value = f"{ratio['median']:.2f}x (min {ratio['min']:.2f}x, max {ratio['max']:.2f}x)"
                loaded = ratio.get("loaded", r.get("loaded"))  # older results: one flag for every ratio
                kind = "CPU time ratio" if key.endswith("_cpu") else "time ratio"
                out.append((f"end to end: {key} ({kind})", value,
                            "> 1x" if key.startswith("autoattack_vs_cascade") else "",
                            base_ctx + (" (loaded: not claimed)" if loaded else ""), r["command"]))
        elif base == "changes":
            for x in r["rows"]:
                out.append((f"change {x['change']} (time before / after): {x['what']}", f"{x['speedup']:.2f}x", "",
                            f"{_ctx(r)}", r["command"]))
    return out


def _eot_ratios(r: dict) -> dict[str, float]:
    """The eot benchmark's ratios of one run, by a readable label."""
    out = {}
    for row in r["rows"]:
        for key, _ in EOT_RATIOS:
            if key in row:
                out[f"EOT attack {key}, n={row['samples']} (images/s ratio)"] = row[key]
    for row in r.get("gradient_rows", []):
        for key in EOT_GRADIENT_RATIOS:
            if key in row:
                out[f"one EOT gradient {key}, n={row['samples']}"] = row[key]
    return out


def _adaptive_repeated(runs: list[dict]) -> list[tuple[str, str, str, str, str, str]]:
    """Repeated end-to-end runs: per candidate the median wall time, its range, and the robust accuracies."""
    loads = [r.get("loadavg_during", {}).get("max", float("nan")) for r in runs]
    cmd = re.sub(r"-run\d+\b", "-runN", runs[0]["command"])
    out = []
    for cand in [x["candidate"] for x in runs[0]["rows"]]:
        rows = [x for r in runs for x in r["rows"] if x["candidate"] == cand]
        t = [x["median_s"] for x in rows]
        acc = sorted({f"{100 * x['robust_acc']:.2f} % [{100 * x['ci_low']:.2f}, {100 * x['ci_high']:.2f}]"
                      for x in rows})
        label = (f"end to end: {cand}, {runs[0]['images']} images, {runs[0]['machine']['threads']} thread(s) "
                 f"(wall time; robust {' / '.join(acc)})")
        out.append((label, f"{statistics.median(t):.0f} s", f"{min(t):.0f}-{max(t):.0f} s", str(len(t)),
                    f"{min(loads):.1f}-{max(loads):.1f}", cmd))
    return out


def repeated_rows(d: Path) -> list[tuple[str, str, str, str, str, str]]:
    """Per group of repeated runs and ratio: (measurement, median, min-max, runs, load range, command)."""
    groups: dict[str, list[dict]] = {}
    for p in sorted(d.glob("*.json")):
        m = _RUN.match(p.stem)
        if m:
            groups.setdefault(m["group"], []).append(json.loads(p.read_text()))
    out = []
    for group, runs in sorted(groups.items()):
        if group.split("-")[0] == "adaptive":
            out += _adaptive_repeated(runs)
            continue
        if group.split("-")[0] != "eot":
            continue
        per_run = [_eot_ratios(r) for r in runs]
        loads = [r["machine"].get("loadavg_at_end", [float("nan")])[0] for r in runs]
        cmd = re.sub(r"-run\d+\b", "-runN", runs[0]["command"])
        for label in per_run[0]:
            v = [x[label] for x in per_run if label in x]
            out.append((label, f"{statistics.median(v):.2f}x", f"{min(v):.2f}-{max(v):.2f}x", str(len(v)),
                        f"{min(loads):.1f}-{max(loads):.1f}", cmd))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args()
    print("| measurement | ratio | target | sizes, threads, load | command |")
    print("|---|---|---|---|---|")
    for m, v, goal, ctx, cmd in rows(Path(args.results)):
        print(f"| {m} | {v} | {goal} | {ctx} | `{cmd}` |")
    rep = repeated_rows(Path(args.results))
    if rep:
        print()
        print("| measurement (repeated runs) | median | min-max | runs | load at end | command |")
        print("|---|---|---|---|---|---|")
        for m, med, rng, n, load, cmd in rep:
            print(f"| {m} | {med} | {rng} | {n} | {load} | `{cmd}` |")


if __name__ == "__main__":
    main()
