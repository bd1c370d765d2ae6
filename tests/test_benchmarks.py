"""Smoke test of the benchmark scripts: each runs at a tiny size and writes valid JSON (no timing asserts; marked
slow, run by ``tox -e slow``)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
HAVE_PEERS = all(importlib.util.find_spec(m) is not None for m in ("torchattacks", "pyautoattack"))

TINY = {
    "sampler": ["--images", "2", "--samples", "2", "--repeat", "1"],
    "eot": ["--images", "2", "--steps", "1", "--samples", "2", "--repeat", "1",
            *([] if HAVE_PEERS else ["--candidates", "ours", "ours_concrete", "ours_chunk1"])],
    "inference": ["--images", "4", "--samples", "2", "--repeat", "1"],
    "train": ["--batch", "4", "--steps", "1"],
    "flops": ["--images", "2", "--samples", "2", "--repeat", "1", "--mm", "64"],
    "changes": ["--images", "2", "--samples", "2", "--repeat", "1", "--batch", "4"],
    "memory": ["--images", "2", "--samples", "3", "--configs", "eot_gradient auto chunk (default)",
               "peer loop (torchattacks EOTPGD)"],
    "exit_rule": ["--images", "2", "--steps", "2", "--rules", "3x1", "2x2", "none"],
    "adaptive": ["--images", "2", "--repeat", "1", "--aa-iter", "2", "--shard", "1",
                 "--candidates", "cascade", *(["autoattack"] if HAVE_PEERS else [])],
}


@pytest.mark.slow  # nine subprocesses, about 2 minutes on 2 cores: tox -e slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_writes_json(name, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCH.parent)}
    cmd = [sys.executable, str(BENCH / f"bench_{name}.py"), *TINY[name], "--out-dir", str(tmp_path)]
    if name == "adaptive":
        cmd += ["--state-dir", str(tmp_path / "shards")]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    payload = json.loads((tmp_path / f"{name}.json").read_text())
    assert payload["benchmark"] == name
    assert payload["rows"] and all(isinstance(r, dict) for r in payload["rows"])
    assert f"bench_{name}.py" in payload["command"]
    for key in ("torch", "threads", "cpus", "python"):
        assert key in payload["machine"]
    assert payload["machine"]["threads"] == 1
    assert payload["args"]["seed"] == 0
    for target in payload.get("targets", []):
        assert {"target", "goal", "measured", "met"} <= set(target)


def test_literal_reference_sampler_is_the_same_distribution():
    """The benchmark's literal reference-code sampler (a peer) and model.sampling("concrete") agree in mean."""
    import torch

    sys.path.insert(0, str(BENCH))
    try:
        from common import reference_code_sampler
    finally:
        sys.path.remove(str(BENCH))
    from lwta_plugin import layers
    from lwta_plugin.models import create_model

    torch.manual_seed(0)
    model = create_model("lwta_ibp_softmax", "mnist").eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        with model.sampling("concrete"):
            ours = model.forward_samples(x, 400, output="correlations").mean(0)
        with reference_code_sampler(model):
            assert layers.lwta.__name__ == "literal_lwta"  # the peer's formulas are in effect
            literal = model.forward_samples(x, 400, output="correlations").mean(0)
    assert layers.lwta.__name__ == "lwta"  # and restored
    assert torch.allclose(ours, literal, atol=0.03), (ours, literal)


def _summarize():
    """benchmarks/summarize.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("summarize", BENCH / "summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    return summarize


def _bench_adaptive():
    """benchmarks/bench_adaptive.py as a module (it imports the benchmarks' common.py from its folder)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_adaptive", BENCH / "bench_adaptive.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(BENCH))
    return bench


def test_summarize_takes_the_median_of_repeated_runs(tmp_path):
    summarize = _summarize()
    for i, (ratio, load) in enumerate([(1.0, 0.5), (3.0, 0.9), (2.0, 4.0)], start=1):
        (tmp_path / f"eot-x-run{i}.json").write_text(json.dumps({
            "command": f"python benchmarks/bench_eot.py --tag x-run{i}", "machine": {"loadavg_at_end": [load]},
            "rows": [{"samples": 20, "ours_vs_ta": ratio}]}))
    assert summarize.rows(tmp_path) == []  # repeated runs are not listed one by one
    (row,) = summarize.repeated_rows(tmp_path)
    assert row[1:5] == ("2.00x", "1.00-3.00x", "3", "0.5-4.0")
    assert row[5] == "python benchmarks/bench_eot.py --tag x-runN"


def test_summarize_takes_the_median_of_repeated_end_to_end_runs(tmp_path):
    summarize = _summarize()
    for i, (seconds, load) in enumerate([(1700.0, 2.1), (1500.0, 2.0), (1650.0, 2.2)], start=1):
        (tmp_path / f"adaptive-x-run{i}.json").write_text(json.dumps({
            "command": f"python benchmarks/bench_adaptive.py --tag x-run{i}", "machine": {"threads": 2},
            "images": 1000, "loadavg_during": {"min": load, "max": load},
            "rows": [{"candidate": "cascade", "median_s": seconds, "min_s": seconds, "max_s": seconds,
                      "robust_acc": 0.0008, "ci_low": 0.0002, "ci_high": 0.0032}]}))
    assert summarize.rows(tmp_path) == []
    (row,) = summarize.repeated_rows(tmp_path)
    assert row[0] == "end to end: cascade, 1000 images, 2 thread(s) (wall time; robust 0.08 % [0.02, 0.32])"
    assert row[1:5] == ("1650 s", "1500-1700 s", "3", "2.0-2.2")
    assert row[5] == "python benchmarks/bench_adaptive.py --tag x-runN"


def test_summarize_names_the_faster_row_size_in_either_result_format(tmp_path):
    """Inference results before --other-rows (128-row keys) and after (other_rows): one row per size, faster first."""
    summarize = _summarize()
    common = {"machine": {"threads": 1, "loadavg_at_end": [0.5]}, "images": 100, "samples": 5, "max_rows": 1024}
    old = {**common, "command": "old", "ratio_at_128_rows": 4.0,
           "rows": [{"candidate": c, "seconds": s, "vs_lwta_1": 1.0, "vs_relu_1": 1.0}
                    for c, s in [("lwta_5", 3.0), ("lwta_5_rows128", 2.0), ("lwta_1", 1.0)]]}
    new = {**common, "command": "new", "other_rows": 64, "ratio_at_other_rows": 5.0,
           "rows": [{"candidate": c, "seconds": s, "vs_lwta_1": 1.0, "vs_relu_1": 1.0}
                    for c, s in [("lwta_5", 2.0), ("lwta_5_rows64", 3.0), ("lwta_1", 1.0)]]}
    (tmp_path / "inference.json").write_text(json.dumps(old))
    (tmp_path / "inference-new.json").write_text(json.dumps(new))
    got = {(row[0], row[1]) for row in summarize.rows(tmp_path)}
    assert ("S=5 inference / one forward pass, both in passes of <= 128 rows", "4.00x") in got
    assert ("S=5 inference: 128-row passes vs max_rows=1024 (speedup)", "1.50x") in got
    assert ("S=5 inference / one forward pass, both in passes of <= 64 rows", "5.00x") in got
    assert ("S=5 inference: max_rows=1024 vs 64-row passes (speedup)", "1.50x") in got


def test_adaptive_autoattack_shards_resume(tmp_path, monkeypatch):
    """The peer's sharded run: a bounded sitting writes only its shards, a rerun finishes, results concatenate."""
    import argparse

    import torch

    bench = _bench_adaptive()
    calls = []

    def fake_points(model_name, x, y, seed, n_iter):
        calls.append(len(x))
        return {"own_correct": [bool(v % 2) for v in y.tolist()], "counts": [int(v) for v in y.tolist()]}

    monkeypatch.setattr(bench, "autoattack_points", fake_points)
    args = argparse.Namespace(shard=2, max_shards=1, state_dir=str(tmp_path), model="m", seed=0, aa_iter=None)
    x, y = torch.zeros(5, 1, 28, 28), torch.tensor([1, 2, 3, 4, 5])
    assert bench.run_autoattack_sharded(args, x, y) is None
    assert calls == [2] and len(list(tmp_path.rglob("*.json"))) == 1
    args.max_shards = None
    out = bench.run_autoattack_sharded(args, x, y)
    assert calls == [2, 2, 1]  # the finished shard is not run again
    assert out["n"] == 5 and out["shards"] == 3 and out["runs"] == 1
    assert abs(out["robust"] - sum(c / bench.PASSES for c in [1, 2, 3, 4, 5]) / 5) < 1e-9
    assert abs(out["own_one_pass"] - 3 / 5) < 1e-9
    args.aa_iter = 2
    with pytest.raises(SystemExit, match="aa-iter"):
        bench.run_autoattack_sharded(args, x, y)


def test_adaptive_autoattack_shards_are_shared_between_processes(tmp_path, monkeypatch):
    """Two processes on the same shards (one per core): a shard whose lock another live process holds is left to
    it, and the sitting goes on with the next shard."""
    import argparse

    import torch

    from lwta_plugin.io import run_lock

    bench = _bench_adaptive()
    calls = []

    def fake_points(model_name, x, y, seed, n_iter):
        calls.append(y.tolist())
        return {"own_correct": [False] * len(y), "counts": [0] * len(y)}

    monkeypatch.setattr(bench, "autoattack_points", fake_points)
    args = argparse.Namespace(shard=2, max_shards=None, state_dir=str(tmp_path), model="m", seed=0, aa_iter=None)
    x, y = torch.zeros(5, 1, 28, 28), torch.tensor([1, 2, 3, 4, 5])
    first = bench.shard_path(tmp_path, "m", 0, 0, 2)
    held = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from lwta_plugin.io import run_lock\n"
        f"with run_lock({str(first.with_suffix('.lock'))!r}, 'shard'):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        assert bench.run_autoattack_sharded(args, x, y) is None  # shard [0, 2) is the other process's
        assert calls == [[3, 4], [5]] and not first.exists()
    finally:
        held.kill()
        held.wait()
    out = bench.run_autoattack_sharded(args, x, y)  # its process died: the shard is free again
    assert calls == [[3, 4], [5], [1, 2]] and out["n"] == 5
    with run_lock(first.with_suffix(".lock"), "shard"):  # the lock files are removed by their last holder
        pass
    assert not list(tmp_path.rglob("*.lock"))


def test_adaptive_live_runs_are_kept_beside_the_shards_and_reused(tmp_path, monkeypatch):
    """With --shard our candidates' runs are kept in the state directory, so the comparison resumes in a later
    session: a rerun adds only the missing runs, each with its wall and CPU seconds and load average."""
    import argparse

    import torch

    bench = _bench_adaptive()
    calls = []

    def fake_ours(model_name, x, y, n, seed, fast):
        calls.append(fast)
        return {"robust": 0.0, "ci": [0.0, 0.1], "n": n, "cpu_seconds": 1.5, "per_example_correct": "0" * n}

    monkeypatch.setattr(bench, "run_ours", fake_ours)
    args = argparse.Namespace(shard=2, state_dir=str(tmp_path), model="m", seed=0, aa_iter=None)
    x, y = torch.zeros(3, 1, 28, 28), torch.tensor([1, 2, 3])
    runs = bench.live_runs(args, ["cascade"], x, y, 3, repeat=1)
    assert calls == [True] and len(runs["cascade"]) == 1
    run = runs["cascade"][0]
    assert run["cpu_seconds"] == 1.5 and set(run["loadavg"]) == {"before", "after"} and run["result"]["n"] == 3
    stored = bench.live_path(args, "cascade", 3)
    assert stored.parent == tmp_path / "m-seed0" and stored.exists()
    assert bench.live_runs(args, ["cascade"], x, y, 3, repeat=1)["cascade"] == runs["cascade"]
    assert calls == [True]  # reused, not run again
    assert len(bench.live_runs(args, ["cascade"], x, y, 3, repeat=2)["cascade"]) == 2 and calls == [True, True]


def test_summarize_marks_each_end_to_end_ratio_by_its_own_load_rule(tmp_path):
    """The CPU-time ratio is claimed when no core was oversubscribed, the wall-time one only on an idle machine."""
    summarize = _summarize()
    row = {"candidate": "cascade", "median_s": 600.0, "min_s": 600.0, "max_s": 600.0, "median_cpu_s": 590.0,
           "runs": 1, "robust_acc": 0.0, "ci_low": 0.0, "ci_high": 0.01}
    ratio = {"median": 8.0, "min": 8.0, "max": 8.0}
    (tmp_path / "adaptive-x.json").write_text(json.dumps({
        "command": "python benchmarks/bench_adaptive.py --full", "machine": {"threads": 1}, "images": 1000,
        "loadavg_during": {"min": 1.0, "max": 2.1}, "loaded": True, "loaded_cpu": False, "rows": [row],
        "ratios": {"autoattack_vs_cascade": {**ratio, "loaded": True},
                   "autoattack_vs_cascade_cpu": {**ratio, "loaded": False}}}))
    out = {r[0]: r for r in summarize.rows(tmp_path)}
    assert out["end to end: cascade (wall time; robust accuracy)"][1].endswith("; CPU 590 s")
    assert "not claimed" in out["end to end: autoattack_vs_cascade (time ratio)"][3]
    cpu = out["end to end: autoattack_vs_cascade_cpu (CPU time ratio)"]
    assert cpu[2] == "> 1x" and "not claimed" not in cpu[3]


def test_summarize_lists_the_end_to_end_rows_and_marks_a_loaded_run(tmp_path):
    summarize = _summarize()
    row = {"median_s": 600.0, "min_s": 590.0, "max_s": 640.0, "runs": 3, "robust_acc": 0.002, "ci_low": 0.0,
           "ci_high": 0.01}
    (tmp_path / "adaptive-x.json").write_text(json.dumps({
        "command": "python benchmarks/bench_adaptive.py --full", "machine": {"threads": 1}, "images": 1000,
        "loadavg_during": {"min": 1.9, "max": 2.6}, "loaded": True,
        "rows": [{**row, "candidate": "cascade"}, {**row, "candidate": "autoattack", "median_s": 9000.0}],
        "ratios": {"autoattack_vs_cascade": {"median": 15.0, "min": 14.1, "max": 15.3}}}))
    out = summarize.rows(tmp_path)
    assert [r[0] for r in out] == ["end to end: cascade (wall time; robust accuracy)",
                                   "end to end: autoattack (wall time; robust accuracy)",
                                   "end to end: autoattack_vs_cascade (time ratio)"]
    assert out[0][1].startswith("600 s (min 590, max 640, 3 run(s)); robust 0.2 % [0.0, 1.0]")
    assert out[0][2] == "< 1800 s" and out[2][1].startswith("15.00x")
    assert all("loaded: not claimed" in r[3] for r in out)
