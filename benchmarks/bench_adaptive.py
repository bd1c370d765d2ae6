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
the median times, and the accuracies. A ratio measured with a load average more than half a core above the
benchmark's own threads (other work was running) is marked ``loaded`` and not claimed as met.

pyautoattack's ``rand`` costs about 30 s per image on one core here (APGD-CE runs its 100 iterations x EOT 20 on
every image), so on 1,000 images it is run once, in shards that outlive a session: ``--shard K`` runs it on
images ``[i, i + K)`` one shard at a time, each written atomically to ``--state-dir`` as it finishes (its per-image
results, seconds, threads and load average); a rerun skips the finished shards, and ``--max-shards`` bounds one
sitting. With ``--shard`` the other candidates' runs are kept in the same directory too (``live-*.json``: run
first, once, and reused), so the whole comparison resumes across sessions. Until every shard is done the script
reports progress and writes no result; then the autoattack row is the concatenation of the shards, its time their
sum (one run, ``runs: 1`` in the row), and the ratio is taken against the median of the ``--repeat`` runs of the
other candidates. Ratios are only formed between candidates run with the same thread count.

Two ratios: of wall time (claimed only when nothing else ran: load at most half a core above the benchmark's
threads) and of CPU time (the process's own, ``time.process_time``), which another process on another core does
not inflate: claimed when no core was oversubscribed (load at most half a core above the machine's cores). The
1,000-image peer run takes hours of one core, which the machine cannot stay idle for, so the CPU ratio is the one
that can be claimed for it.

Usage: python benchmarks/bench_adaptive.py [--images N] [--repeat 3] [--model lwta_ibp_softmax]
       [--candidates cascade full autoattack]   (--full: 1,000 images)
       python benchmarks/bench_adaptive.py --full --candidates autoattack --shard 50 --max-shards 2
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import command, machine, parser, pick, report, setup

from lwta_plugin.data import load_tensors
from lwta_plugin.entries import timing_path
from lwta_plugin.evaluation import EvaluationConfig, evaluate
from lwta_plugin.io import LockHeldError, atomic_write_json, run_lock
from lwta_plugin.statistics import confidence_interval, correct_counts
from lwta_plugin.zoo import load_model

CANDIDATES = ("cascade", "full", "autoattack")
PASSES = 10  # our scoring of the peer's points: 10 predictions of S = 5 draws each
STATE_DIR = Path(__file__).resolve().parent / "results" / "adaptive-autoattack-shards"


def run_ours(model_name: str, x: torch.Tensor, y: torch.Tensor, n: int, seed: int, fast: bool) -> dict:
    """The adaptive protocol on the first ``n`` images, into a temporary directory; its worst case."""
    with tempfile.TemporaryDirectory() as out:
        config = EvaluationConfig(model_name, protocols="adaptive", n_examples=n, seed=seed, out_dir=out,
                                  cascade=fast, early_exit=fast)
        c0 = time.process_time()
        [status] = evaluate(config, data=(x, y), progress=False, log=None)
        cpu_seconds = time.process_time() - c0
        entry = json.loads(Path(status["path"]).read_text(encoding="utf-8"))
        timing = json.loads(timing_path(Path(status["path"])).read_text(encoding="utf-8"))
    w = entry["worst_case"]
    return {"robust": w["mean"], "ci": [w["ci_low"], w["ci_high"]], "n": w["n_examples"],
            "stages": [(s["attack"], s["n_attacked"], s["robust_after"]["mean"])
                       for s in entry.get("cascade", {}).get("stages", [])],
            "seconds_by_task": timing["seconds"], "per_example_correct": w["per_example_correct"],
            "cpu_seconds": cpu_seconds}


def autoattack_points(model_name: str, x: torch.Tensor, y: torch.Tensor, seed: int, n_iter: int | None) -> dict:
    """pyautoattack's rand version on the zoo model: per image, its own one-pass verdict and our counts."""
    from pyautoattack import AutoAttack

    model = load_model(model_name, dataset="mnist")
    adversary = AutoAttack(model, norm="Linf", eps=0.3, version="rand", seed=seed, device="cpu")
    if n_iter is not None:  # only the smoke test shortens the peer's own schedule
        for attack in (adversary.apgd, adversary.apgd_targeted):
            attack.n_iter = n_iter
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        own = (model(x_adv).argmax(1) == y).tolist()
    return {"own_correct": own, "counts": correct_counts(model, x_adv, y, passes=PASSES, samples=5)}


def summarize_points(own: list[bool], counts: list[int]) -> dict:
    p = [c / PASSES for c in counts]
    lo, hi = confidence_interval(p)
    return {"robust": sum(p) / len(p), "ci": [lo, hi], "n": len(p), "own_one_pass": sum(own) / len(own)}


def run_autoattack(model_name: str, x: torch.Tensor, y: torch.Tensor, seed: int, n_iter: int | None) -> dict:
    points = autoattack_points(model_name, x, y, seed, n_iter)
    return summarize_points(points["own_correct"], points["counts"])


def shard_path(state_dir: Path, model_name: str, seed: int, start: int, stop: int) -> Path:
    return state_dir / f"{model_name}-seed{seed}" / f"{start:05d}-{stop:05d}.json"


def run_shard(args, x: torch.Tensor, y: torch.Tensor, path: Path, start: int, stop: int) -> bool:
    """Run one shard and write it atomically, under a lock beside it, so that two processes (one per core) can work
    through the same shards; False, without running it, when another live process holds the shard (or finished it
    meanwhile)."""
    try:
        with run_lock(path.with_suffix(".lock"), f"autoattack shard [{start}, {stop})", command()):
            if path.exists():
                return False
            load_before = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            points = autoattack_points(args.model, x[start:stop], y[start:stop], args.seed, args.aa_iter)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            atomic_write_json(path, {"model": args.model, "seed": args.seed, "start": start, "stop": stop,
                                     "aa_iter": args.aa_iter, "seconds": seconds,
                                     "cpu_seconds": cpu_seconds,
                                     "threads": torch.get_num_threads(),
                                     "loadavg": {"before": load_before, "after": os.getloadavg()[0]},
                                     "pyautoattack": machine()["pyautoattack"], "command": command(),
                                     "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **points})
            print(f"autoattack shard [{start}, {stop}): {seconds:.0f} s, "
                  f"{sum(points['own_correct'])} of {stop - start} robust by its own verdict", flush=True)
    except LockHeldError:
        return False
    return True


def run_autoattack_sharded(args, x: torch.Tensor, y: torch.Tensor) -> dict | None:
    """Run the missing shards (at most ``--max-shards``); the combined result once all exist, else None."""
    n, k = len(x), args.shard
    bounds = [(i, min(i + k, n)) for i in range(0, n, k)]
    ran = 0
    shards = []
    for start, stop in bounds:
        path = shard_path(Path(args.state_dir), args.model, args.seed, start, stop)
        if not path.exists():
            if args.max_shards is not None and ran >= args.max_shards:
                continue
            if run_shard(args, x, y, path, start, stop):  # False: another process runs it (or just finished it)
                ran += 1
        shards.append(json.loads(path.read_text(encoding="utf-8")) if path.exists() else None)
    done = [s for s in shards if s is not None]
    if any(s["aa_iter"] != args.aa_iter for s in done):
        raise SystemExit(f"{args.state_dir}: shards of another --aa-iter; use another --state-dir")
    if len(done) < len(bounds):
        print(f"autoattack: {len(done)} of {len(bounds)} shards done in {args.state_dir} "
              f"({sum(s['seconds'] for s in done):.0f} s so far); rerun to continue")
        return None
    out = summarize_points([c for s in done for c in s["own_correct"]], [c for s in done for c in s["counts"]])
    out.update(seconds=sum(s["seconds"] for s in done), cpu_seconds=sum(s["cpu_seconds"] for s in done),
               threads=sorted({s["threads"] for s in done}),
               loads=[v for s in done for v in s["loadavg"].values()], runs=1, shards=len(done))
    return out


def live_path(args, candidate: str, n: int) -> Path:
    """Where ``--shard`` keeps a live candidate's runs (beside the peer's shards of the same model and seed)."""
    return (Path(args.state_dir) / f"{args.model}-seed{args.seed}"
            / f"live-{candidate}-{n}images-{torch.get_num_threads()}threads.json")


def run_live(args, candidate: str, x: torch.Tensor, y: torch.Tensor, n: int) -> dict:
    """One run of ``candidate`` with its wall and CPU seconds and the load average before and after."""
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if candidate == "autoattack":
        c0 = time.process_time()
        result = run_autoattack(args.model, x, y, args.seed, args.aa_iter)
        result["cpu_seconds"] = time.process_time() - c0
    else:
        result = run_ours(args.model, x, y, n, args.seed, fast=candidate == "cascade")
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": result["cpu_seconds"],
            "loadavg": {"before": load_before, "after": os.getloadavg()[0]}, "threads": torch.get_num_threads(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command(), "result": result}


def live_runs(args, live: list[str], x: torch.Tensor, y: torch.Tensor, n: int, repeat: int) -> dict[str, list]:
    """``repeat`` runs of each live candidate, round-robin. With ``--shard`` each candidate's runs are kept (atomically,
    under a lock) in ``live_path`` and reused: a rerun only adds the missing ones, and a candidate whose file another
    live process holds is left to it (fewer runs, or none, are returned for it)."""
    runs: dict[str, list] = {c: [] for c in live}
    for _ in range(repeat):
        for c in live:
            if not args.shard:
                runs[c].append(run_live(args, c, x, y, n))
                continue
            path = live_path(args, c, n)
            try:
                with run_lock(path.with_suffix(".lock"), f"{c} runs", command()):
                    stored = json.loads(path.read_text(encoding="utf-8"))["runs"] if path.exists() else []
                    if len(stored) < repeat:
                        stored.append(run_live(args, c, x, y, n))
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_json(path, {"model": args.model, "seed": args.seed, "images": n,
                                                 "candidate": c, "runs": stored})
                        print(f"{c}: run {len(stored)} of {repeat}, {stored[-1]['seconds']:.0f} s", flush=True)
                    runs[c] = stored
            except LockHeldError:
                print(f"{c}: another process is running it ({path}); rerun later to use its runs")
    return runs


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--images", type=int, default=None, help="test images (default 50; --full 1000)")
    ap.add_argument("--model", default="lwta_ibp_softmax")
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    ap.add_argument("--shard", type=int, default=None, help="run autoattack in resumable shards of this many images")
    ap.add_argument("--max-shards", type=int, default=None, help="at most this many new shards in this run")
    ap.add_argument("--state-dir", default=str(STATE_DIR), help="where the autoattack shards are kept")
    ap.add_argument("--aa-iter", type=int, default=None, help="shorten the peer's APGD iterations (smoke test only)")
    args = ap.parse_args()
    setup(args.threads, args.seed)
    n = args.images or pick(args, "images", 50, 1000)
    x, y = load_tensors("mnist", "test")
    x, y = x[:n], y[:n]
    repeat = max(args.repeat or 3, 1)
    results: dict[str, dict] = {}
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    loads: list[float] = []
    threads: dict[str, list[int]] = {}
    live = [c for c in args.candidates if not (args.shard and c == "autoattack")]
    runs = live_runs(args, live, x, y, n, repeat)  # with --shard: first, and kept, so a later sitting reuses them
    for c, rs in runs.items():
        if not rs:
            return
        results[c] = rs[-1]["result"]
        times[c], cpu[c] = [r["seconds"] for r in rs], [r["cpu_seconds"] for r in rs]
        threads[c] = sorted({r["threads"] for r in rs})
        loads += [v for r in rs for v in r["loadavg"].values()]
    if args.shard and "autoattack" in args.candidates:
        sharded = run_autoattack_sharded(args, x, y)
        if sharded is None:
            return
        results["autoattack"], times["autoattack"] = sharded, [sharded["seconds"]]
        cpu["autoattack"] = [sharded["cpu_seconds"]]
        loads += sharded["loads"]
        threads["autoattack"] = sharded["threads"]
    # The 1-minute load counts the benchmark's own threads: loaded = other work worth half a core or more beside them.
    own = max((max(t) for t in threads.values()), default=1)
    loaded = max(loads) > own + 0.5
    # CPU seconds are only inflated when the cores were oversubscribed (more runnable threads than cores).
    loaded_cpu = max(loads) > (os.cpu_count() or 1) + 0.5
    rows = []
    for c in args.candidates:
        t = times[c]
        rows.append({"candidate": c, "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                     "median_cpu_s": statistics.median(cpu[c]), "runs": len(t), "threads": threads[c],
                     "robust_acc": results[c]["robust"], "ci_low": results[c]["ci"][0],
                     "ci_high": results[c]["ci"][1], "n_images": results[c]["n"],
                     "own_one_pass": results[c].get("own_one_pass")})
    ratios = {}
    if "cascade" in times:
        for other in ("autoattack", "full"):
            if other in times and threads[other] == threads["cascade"]:
                for suffix, t in (("", times), ("_cpu", cpu)):
                    ratios[f"{other}_vs_cascade{suffix}"] = {
                        "median": statistics.median(t[other]) / statistics.median(t["cascade"]),
                        "min": min(t[other]) / max(t["cascade"]), "max": max(t[other]) / min(t["cascade"]),
                        "runs": [len(t[other]), len(t["cascade"])],
                        "loaded": loaded_cpu if suffix else loaded}
            elif other in times:
                print(f"{other} ran with {threads[other]} threads, cascade with {threads['cascade']}: no ratio")
    targets = []
    if "autoattack_vs_cascade" in ratios:
        claimable = [k for k in ("autoattack_vs_cascade", "autoattack_vs_cascade_cpu") if not ratios[k]["loaded"]]
        basis = claimable[0] if claimable else "autoattack_vs_cascade"
        faster = ratios[basis]["median"] > 1
        stronger = results["cascade"]["robust"] <= results["autoattack"]["robust"]
        targets.append({"target": "autoattack_vs_cascade",
                        "goal": "cascade faster than AutoAttack rand and no higher accuracy",
                        "measured": f"{ratios[basis]['median']:.2f}x ({'CPU' if basis.endswith('_cpu') else 'wall'} "
                                    f"time), {100 * results['cascade']['robust']:.1f} % vs "
                                    f"{100 * results['autoattack']['robust']:.1f} %",
                        "basis": basis, "met": bool(faster and stronger) if claimable else None})
    if "cascade" in results and "full" in results:
        a, b = results["cascade"]["ci"], results["full"]["ci"]
        targets.append({"target": "cascade vs full", "goal": "cascade and full protocol agree within their intervals",
                        "measured": f"[{a[0]:.3f}, {a[1]:.3f}] vs [{b[0]:.3f}, {b[1]:.3f}]",
                        "met": bool(a[0] <= b[1] and b[0] <= a[1])})
    extra = {"model": args.model, "images": n, "repeat": repeat, "ratios": ratios, "targets": targets,
             "loadavg_during": {"max": max(loads), "min": min(loads)}, "loaded": loaded, "loaded_cpu": loaded_cpu,
             "cascade_stages": results.get("cascade", {}).get("stages"),
             "seconds_by_task": {c: results[c]["seconds_by_task"] for c in results if "seconds_by_task" in results[c]},
             # per image, the worst case's fresh count of 10 (base 36), to compare with the peer on the same images
             "per_example_correct": {c: results[c]["per_example_correct"] for c in results
                                     if "per_example_correct" in results[c]},
             "autoattack_shards": results.get("autoattack", {}).get("shards")}
    report("adaptive", rows, ["candidate", "median_s", "min_s", "max_s", "median_cpu_s", "runs", "robust_acc",
                              "ci_low", "ci_high", "n_images", "own_one_pass"], extra=extra, args=args)
    for k, r in ratios.items():
        print(f"{k}: {r['median']:.2f}x (min {r['min']:.2f}x, max {r['max']:.2f}x)"
              + (" [loaded: not claimed]" if r["loaded"] else ""))
    for t in targets:
        print(f"target: {t['goal']}: {t['measured']} -> met={t['met']}")


if __name__ == "__main__":
    main()
