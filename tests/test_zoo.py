"""Model zoo: weight store and manifest, safe loading, RobustBench registration and compatibility fixes, cards."""
import enum
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lwta_plugin
from lwta_plugin import compat, zoo
from lwta_plugin.checkpoint import CheckpointError, save_checkpoint
from lwta_plugin.io import sha256_file
from lwta_plugin.models import LWTANet, create_model
from lwta_plugin.validation import has_input_validation

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
NAME, OTHER = "lwta_ibp_tanh16", "lwta_softmax"


class _Evil:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _meta(name, dataset="mnist", metrics=True):
    cmd = f"lwta train --model {name} --dataset {dataset} --epochs 2 --seed 3"
    return {"name": name, "dataset": dataset, "epoch": 2, "n_train": 100, "n_val": 20, "plugin_version": "0.1.0",
            "torch": str(torch.__version__),
            "train_config": {"model": name, "dataset": dataset, "epochs": 2, "seed": 3, "fgsm_eps": 0.0,
                             "batch_size": 50, "lr": 1e-3, "ibp_lr": 1e-2, "noise_std": None,
                             "extra": {"command": cmd}},
            "metrics": {"best_epoch": 2, "val_acc": 0.1, "test_acc_1pass": 0.09, "test_acc_5samples": 0.1,
                        "n_test": 10} if metrics else None}


def _checkpoint(path, name=NAME, dataset="mnist", seed=0, metrics=True):
    torch.manual_seed(seed)
    model = create_model(name, dataset)
    sha = save_checkpoint(path, model, _meta(name, dataset, metrics))
    return model, sha


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A temporary weight store (via LWTA_WEIGHTS_DIR) holding NAME and OTHER (untrained, mnist)."""
    s = tmp_path / "weights"
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(s))
    models = {}
    for i, name in enumerate((NAME, OTHER)):
        models[name], _ = _checkpoint(tmp_path / f"{name}.pt", name, seed=i)
        zoo.register_checkpoint(tmp_path / f"{name}.pt")
    return SimpleNamespace(path=s, models=models)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------------------------------------------
# weight store, manifest, plugin load_model (no RobustBench needed)


def test_register_writes_copy_and_manifest(store, tmp_path):
    entry = zoo.read_manifest()["models"][f"mnist/{NAME}"]
    path = store.path / "mnist" / f"{NAME}.pt"
    assert entry["file"] == f"mnist/{NAME}.pt" and path.is_file()
    assert entry["sha256"] == sha256_file(path) == sha256_file(tmp_path / f"{NAME}.pt")
    assert entry["size"] == path.stat().st_size
    assert entry["training"]["command"].startswith(f"lwta train --model {NAME}")
    assert (entry["training"]["epochs"], entry["training"]["seed"]) == (2, 3)
    assert entry["metrics"]["val_acc"] == 0.1 and entry["config"]["code"] == "tanh16"
    before = zoo.manifest_path().read_bytes()
    zoo.register_checkpoint(tmp_path / f"{NAME}.pt")  # idempotent
    zoo.register_checkpoint(path)  # shipping the store's own file is a no-op too
    assert zoo.manifest_path().read_bytes() == before
    assert [e["name"] for e in zoo.available_models("mnist")] == [NAME, OTHER]
    assert zoo.available_models("cifar10") == []


def test_register_refuses_mismatches(store, tmp_path):
    _checkpoint(tmp_path / "raw.pt", NAME, metrics=False)
    with pytest.raises(ValueError, match="no final metrics"):
        zoo.register_checkpoint(tmp_path / "raw.pt")
    zoo.register_checkpoint(tmp_path / "raw.pt", require_metrics=False, store=tmp_path / "other_store")
    with pytest.raises(ValueError, match=f"holds model '{NAME}', not '{OTHER}'"):
        zoo.register_checkpoint(tmp_path / f"{NAME}.pt", name=OTHER)
    with pytest.raises(ValueError, match="built for 'mnist', not 'cifar10'"):
        zoo.register_checkpoint(tmp_path / f"{NAME}.pt", dataset="cifar10")


def test_fgsm_variant_ships_and_loads_beside_the_plain_model(store, tmp_path):
    """``<arch>_fgsm`` is its own zoo name with the architecture of ``<arch>``; the names cannot be swapped."""
    torch.manual_seed(5)
    adv = create_model("lwta_softmax_fgsm", "mnist")
    meta = _meta("lwta_softmax_fgsm")
    meta["train_config"]["fgsm_eps"] = 0.3
    save_checkpoint(tmp_path / "adv.pt", adv, meta)
    entry = zoo.register_checkpoint(tmp_path / "adv.pt")
    assert entry["name"] == "lwta_softmax_fgsm" and entry["config"]["variant"] == "fgsm"
    assert "variant" not in zoo.read_manifest()["models"]["mnist/lwta_softmax"]["config"]  # old entries unchanged
    loaded = zoo.load_model("lwta_softmax_fgsm", dataset="mnist")
    assert _same_weights(loaded, adv) and not _same_weights(loaded, store.models[OTHER])
    assert loaded.config.arch == "lwta_softmax"
    with pytest.raises(ValueError, match="holds model 'lwta_softmax_fgsm', not 'lwta_softmax'"):
        zoo.register_checkpoint(tmp_path / "adv.pt", name="lwta_softmax")


def test_load_model_from_store(store):
    m = lwta_plugin.load_model(NAME, dataset="mnist", threat_model="Linf")
    assert isinstance(m, LWTANet) and not m.training and m.samples == 5 and m.stochastic
    assert has_input_validation(m) and _same_weights(m, store.models[NAME])
    m2 = zoo.load_model(NAME, threat_model="Linf", samples=2)
    assert m2.samples == 2 and _same_weights(m, m2)
    with pytest.raises(ValueError, match=r"unknown threat model 'L2'.*Linf only.*use threat_model='Linf'"):
        zoo.load_model(NAME, threat_model="L2")  # not the Linf weights passed off as an L2 model
    with zoo.default_samples(3):
        assert zoo.load_model(NAME).samples == 3
    assert zoo.get_default_samples() == 5
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        zoo.load_model(NAME, samples=0)
    with pytest.raises(ValueError, match="samples must be an integer >= 1"):
        zoo.set_default_samples(True)


def test_unknown_names_list_what_exists(store):
    with pytest.raises(ValueError, match=rf"unknown lwta-plugin model 'nope'\. Shipped for mnist: {NAME}, {OTHER}\. "
                                         r"Architectures .*relu_softmax.*lwta_ibp_tanh16"):
        zoo.load_model("nope")
    with pytest.raises(ValueError, match=r"unknown data set 'svhn'.*available: mnist, fashion_mnist, cifar10"):
        zoo.load_model(NAME, dataset="svhn")
    with pytest.raises(ValueError, match=r"unknown threat model 'corruptions'.*available: Linf$"):
        zoo.load_model(NAME, threat_model="corruptions")
    with pytest.raises(zoo.UnknownModelError, match=r"unknown lwta-plugin model 'lwta_ibp_tanh61'\. Did you mean "
                                                    r"'lwta_ibp_tanh16'"):
        zoo.load_model("lwta_ibp_tanh61")


def test_missing_checkpoint_says_how_to_train(store, tmp_path):
    with pytest.raises(zoo.ModelNotAvailableError) as e:
        zoo.load_model("lwta_ibp_softmax", model_dir=tmp_path / "models")
    msg = str(e.value)
    assert "lwta train --model lwta_ibp_softmax --dataset mnist" in msg
    assert str(tmp_path / "models" / "mnist" / "Linf" / "lwta_ibp_softmax.pt") in msg
    with pytest.raises(zoo.ModelNotAvailableError, match="cifar10"):
        zoo.load_model(NAME, dataset="cifar10")


def test_model_dir_fallback_in_robustbench_layout(store, tmp_path):
    target = tmp_path / "models" / "mnist" / "Linf" / "lwta_ibp_softmax.pt"
    saved, _ = _checkpoint(target, "lwta_ibp_softmax", seed=7)
    m = zoo.load_model("lwta_ibp_softmax", model_dir=tmp_path / "models")
    assert _same_weights(m, saved) and not m.training
    with pytest.raises(ValueError, match="Linf only"):  # no L2 sub-directory is searched: L2 is refused
        zoo.load_model("lwta_ibp_softmax", model_dir=tmp_path / "models", threat_model="L2")
    # a file of another model under this name is refused by the architecture check
    shutil.copy(tmp_path / f"{OTHER}.pt", target.with_name("lwta_ibp_logistic.pt"))
    with pytest.raises(CheckpointError, match=f"holds model '{OTHER}', not 'lwta_ibp_logistic'"):
        zoo.load_model("lwta_ibp_logistic", model_dir=tmp_path / "models")
    # an explicit checkpoint file is checked the same way
    assert _same_weights(zoo.load_model("lwta_ibp_softmax", checkpoint=target), saved)
    with pytest.raises(CheckpointError, match=f"holds model '{OTHER}', not 'lwta_ibp_softmax'"):
        zoo.load_model("lwta_ibp_softmax", checkpoint=tmp_path / f"{OTHER}.pt")


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_damaged_store_file_is_refused(store, damage):
    path = store.path / "mnist" / f"{NAME}.pt"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data = bytearray((store.path / "mnist" / f"{OTHER}.pt").read_bytes())
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"does not match the weight manifest: sha256 [0-9a-f]{64} \(expected"):
        zoo.load_model(NAME)


def test_malicious_pickle_is_refused_and_never_runs(store, tmp_path):
    def payload(marker):
        buf = tmp_path / f"evil_{marker.name}.pt"
        torch.save({"format": "lwta-plugin/checkpoint-1", "config": {}, "state_dict": {}, "state_sha256": "",
                    "meta": {}, "x": _Evil(marker)}, buf)
        return buf

    control = tmp_path / "control_marker"  # proves the payload is live: an unsafe load runs it
    torch.load(payload(control), weights_only=False)
    assert control.exists()

    marker = tmp_path / "marker"
    evil = payload(marker)
    # (1) in the store, with a manifest entry whose hash matches (an attacker who controls both)
    shutil.copy(evil, store.path / "mnist" / f"{NAME}.pt")
    manifest = zoo.read_manifest()
    manifest["models"][f"mnist/{NAME}"].update(sha256=sha256_file(evil), size=evil.stat().st_size)
    zoo.manifest_path().write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        zoo.load_model(NAME)
    # (2) in model_dir, (3) shipped
    target = tmp_path / "models" / "mnist" / "Linf" / "lwta_ibp_softmax.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(evil, target)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        zoo.load_model("lwta_ibp_softmax", model_dir=tmp_path / "models")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        zoo.register_checkpoint(evil)
    assert not marker.exists()


def test_malformed_manifest_is_refused(store):
    manifest = zoo.read_manifest()
    manifest["models"][f"mnist/{NAME}"]["file"] = "../../etc/passwd"
    zoo.manifest_path().write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="points outside the store"):
        zoo.load_model(NAME)
    zoo.manifest_path().write_text('{"format": "something else", "models": {}}')
    with pytest.raises(ValueError, match="is not a 'lwta-plugin/weights-manifest-1' manifest"):
        zoo.load_model(NAME)


def test_torchattacks_pgd_on_loaded_model(store):
    torchattacks = pytest.importorskip("torchattacks")
    model = zoo.load_model(NAME)  # S = 5, as users get it
    x = torch.rand(4, 1, 28, 28)
    y = torch.randint(0, 10, (4,))
    x_adv = torchattacks.PGD(model, eps=0.3)(x, y)  # torchattacks' defaults otherwise
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not model.training
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and torch.isfinite(x_adv).all()
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and not torch.equal(x_adv, x)
    assert model(x_adv).shape == (4, 10)  # valid images: accepted by the model's own input check


def test_non_finite_weights_are_refused(store, tmp_path):
    model = create_model("lwta_ibp_softmax")
    with torch.no_grad():
        model.body[0].weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", model, _meta("lwta_ibp_softmax"))
    with pytest.raises(CheckpointError, match=r"hold NaN or Inf \(e\.g\. body\.0\.weight\).*diverged"):
        zoo.register_checkpoint(tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        zoo.load_model("lwta_ibp_softmax", checkpoint=tmp_path / "nan.pt")
    assert "mnist/lwta_ibp_softmax" not in zoo.read_manifest()["models"]


def test_shipping_validates_exactly_the_bytes_it_copies(store, tmp_path, monkeypatch):
    """A checkpoint that changes after validation is never shipped unvalidated."""
    from lwta_plugin import checkpoint as ckpt

    _checkpoint(tmp_path / "good.pt", "lwta_ibp_softmax", seed=4)
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil(tmp_path / "marker")}, evil)
    original = ckpt.read_checkpoint

    def swap_after_read(path, sha256=None):  # the source is replaced right after it was read
        payload = original(path, sha256)
        shutil.copy(evil, tmp_path / "good.pt")
        return payload

    with monkeypatch.context() as mp:
        mp.setattr(zoo, "read_checkpoint", swap_after_read)
        entry = zoo.register_checkpoint(tmp_path / "good.pt")
    shipped = store.path / entry["file"]
    assert entry["sha256"] == sha256_file(shipped) != sha256_file(tmp_path / "good.pt")
    assert isinstance(zoo.load_model("lwta_ibp_softmax"), LWTANet)


def test_ship_script_and_cards(store, tmp_path):
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "scripts" / "ship_model.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    _checkpoint(tmp_path / "relu.pt", "relu_softmax", seed=2)
    assert ship.main([str(tmp_path / "relu.pt"), "--store", str(tmp_path / "s2")]) == 0
    assert zoo.read_manifest(tmp_path / "s2")["models"]["mnist/relu_softmax"]["sha256"] == sha256_file(
        tmp_path / "s2" / "mnist" / "relu_softmax.pt")
    assert ship.main([str(tmp_path / "missing.pt")]) == 2

    from lwta_plugin import cards
    from lwta_plugin.models import count_parameters

    model = zoo.load_model("relu_softmax", store=tmp_path / "s2")  # deterministic: accuracy is exact
    x, y = torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,))
    acc = cards.measure_clean_accuracy(model, x, y, samples=2, repeats=2, batch_size=8)
    exact = (model(x).argmax(1) == y).double().mean().item()
    assert acc["accuracy"] == pytest.approx(exact) and acc["per_repeat"] == [pytest.approx(exact)] * 2
    assert acc["ci_low"] <= exact <= acc["ci_high"] and acc["ci_high"] - acc["ci_low"] > 0.1  # n=20: wide

    path = cards.write_card(NAME, "mnist", measurement=cards.Measurement(repeats=1, samples=2), x=x, y=y)
    assert path == store.path / "mnist" / f"{NAME}.md"
    text = path.read_text()
    entry = zoo.read_manifest()["models"][f"mnist/{NAME}"]
    params = count_parameters(store.models[NAME])
    for expected in (f"# `{NAME}` (MNIST)", entry["sha256"], f"{params['weights']:,}", f"{params['ibp']:,}",
                     entry["training"]["command"], "Random at test time", "on 20 MNIST test images",
                     "S = 2 stochastic passes", "16-bit Hadamard", "autoattack-rand", "Do not edit by hand"):
        assert expected in text, expected
    assert f"`python -m lwta_plugin.cards --model {NAME} --dataset mnist --repeats 1 --samples 2` (" in text
    with pytest.raises(ValueError, match="not shipped"):
        cards.write_card("lwta_ibp_softmax", "mnist", x=x, y=y)


def test_card_command_records_the_non_default_settings():
    from lwta_plugin.cards import Measurement

    base = "python -m lwta_plugin.cards --model m --dataset mnist --repeats"
    assert Measurement().command("m", "mnist", samples=5) == f"{base} 3"
    assert Measurement(repeats=1, samples=2, limit=200, seed=4, batch_size=7).command("m", "mnist", samples=2) \
        == f"{base} 1 --samples 2 --limit 200 --seed 4"


# Prepended to a fresh interpreter's code: the modules named in BLOCKED (and their submodules) are not installed.
_BLOCKER = """import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or any(name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NotInstalled())
"""


def _fresh_python(code: str, cwd: Path, blocked: tuple[str, ...] = (), pythonpath: str = str(ROOT),
                  timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (RuntimeWarnings are errors) with ``blocked`` modules uninstalled."""
    prefix = f"BLOCKED = {set(blocked)!r}\n" + _BLOCKER if blocked else ""
    return subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", prefix + code], check=False,
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"})


def test_import_is_light_and_works_without_robustbench(store, tmp_path):
    """The core install (`tox -e minimal`: no robustbench, torchattacks, autoattack or pyautoattack): the plugin
    loads its models, and register_robustbench() reports that robustbench is absent instead of failing on the
    missing autoattack."""
    code = ("import lwta_plugin; assert 'torch' not in sys.modules and 'robustbench' not in sys.modules\n"
            f"m = lwta_plugin.load_model('{NAME}', dataset='mnist'); print(type(m).__name__, m.training, m.samples)\n"
            "print(lwta_plugin.register_robustbench())\n"
            "from lwta_plugin import compat; print(compat.register_robustbench())\n"
            "try:\n    import robustbench\nexcept ModuleNotFoundError as e:\n    print(e.name)\n")
    out = _fresh_python(code, tmp_path, ("robustbench", "torchattacks", "autoattack", "pyautoattack"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["LWTANet", "False", "5", "False", "False", "robustbench"]


# --------------------------------------------------------------------------------------------------------------
# RobustBench integration


@pytest.fixture(scope="module")
def rb():
    pytest.importorskip("pyautoattack")
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench not installed")
    return compat.import_robustbench()


def test_registration_is_idempotent_and_keeps_robustbench_models(rb):
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    cifar_linf = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]
    own = {k: dict(v) for k, v in cifar_linf.items() if not v.get("lwta_plugin")}
    snapshot = {ds: {tm: list(d) for tm, d in per.items()} for ds, per in model_dicts.items()}
    assert compat.register_robustbench() and lwta_plugin.register_robustbench()
    compat.install_robustbench_hook()
    assert sum(bool(getattr(f, "_lwta_plugin_hook", False)) for f in sys.meta_path) <= 1
    assert {ds: {tm: list(d) for tm, d in per.items()} for ds, per in model_dicts.items()} == snapshot
    assert [m.value for m in BenchmarkDataset] == ["cifar10", "cifar100", "imagenet", "mnist"]
    assert BenchmarkDataset("mnist") is BenchmarkDataset.mnist and BenchmarkDataset("cifar10").name == "cifar_10"
    assert "Standard" in own and "Carmon2019Unlabeled" in own and len(own) > 50
    assert {k: dict(v) for k, v in cifar_linf.items() if not v.get("lwta_plugin")} == own  # untouched
    for ds in (BenchmarkDataset.mnist, BenchmarkDataset.cifar_10):
        assert model_dicts[ds][ThreatModel.Linf][NAME]["gdrive_id"] == f"lwta-plugin:{ds.value}/{NAME}"
    assert NAME not in model_dicts[BenchmarkDataset.cifar_10][ThreatModel.L2]  # Linf only
    assert ThreatModel.L2 not in model_dicts[BenchmarkDataset.mnist]
    import robustbench.utils as rb_utils

    assert rb.load_model is rb_utils.load_model and getattr(rb_utils.load_model, "_lwta_plugin_patched", False)
    assert not getattr(rb_utils.load_model._lwta_original, "_lwta_plugin_patched", False)


def test_load_through_robustbench(rb, store, tmp_path):
    from robustbench.utils import load_model

    m = load_model(NAME, model_dir=tmp_path / "models", dataset="mnist", threat_model="Linf")
    assert isinstance(m, LWTANet) and not m.training and m.samples == 5 and has_input_validation(m)
    assert _same_weights(m, store.models[NAME]) and m(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    m2 = load_model(NAME, dataset=BenchmarkDataset.mnist, threat_model=ThreatModel.Linf)
    assert _same_weights(m2, m)
    # RobustBench's original load_model (a reference taken before the plugin was imported) also works: the
    # entry's sentinel gdrive_id makes it copy the verified file from the store into its own layout
    with zoo.default_samples(2):
        m3 = load_model._lwta_original(NAME, model_dir=tmp_path / "rb", dataset="mnist", threat_model="Linf")
    copied = tmp_path / "rb" / "mnist" / "Linf" / f"{NAME}.pt"
    assert sha256_file(copied) == zoo.read_manifest()["models"][f"mnist/{NAME}"]["sha256"]
    assert isinstance(m3, LWTANet) and not m3.training and m3.samples == 2 and _same_weights(m3, m)
    with pytest.raises(zoo.ModelNotAvailableError, match="lwta train --model lwta_ibp_softmax"):
        load_model._lwta_original("lwta_ibp_softmax", model_dir=tmp_path / "rb", dataset="mnist")
    # damaged store file: refused through RobustBench too
    (store.path / "mnist" / f"{NAME}.pt").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(NAME, dataset="mnist")


def test_robustbench_original_loader_checks_a_file_already_in_model_dir(rb, store, tmp_path):
    """RobustBench's own load_model (a reference taken before the plugin was imported) reads a checkpoint already at
    <model_dir>/<dataset>/Linf/<name>.pt without asking the plugin: weights other than the shipped ones (another
    seed, edited) are refused; the shipped ones load; an unshipped model has no published weights to compare with."""
    from robustbench.utils import load_model

    original = load_model._lwta_original
    model_dir = tmp_path / "rb"
    placed = model_dir / "mnist" / "Linf" / f"{NAME}.pt"
    placed.parent.mkdir(parents=True)
    _checkpoint(placed, NAME, seed=7)  # a valid checkpoint of the same architecture, not the shipped weights
    with pytest.raises(CheckpointError, match=rf"the weights loaded for mnist/{NAME} are not the shipped ones.*"
                                              "Delete it"):
        original(NAME, model_dir=model_dir, dataset="mnist", threat_model="Linf")
    edited = torch.load(store.path / "mnist" / f"{NAME}.pt", weights_only=True)
    edited["state_dict"]["body.0.weight"] += 1e-3  # the file's own hashes are not what RobustBench reads
    torch.save(edited, placed)
    with pytest.raises(CheckpointError, match="not the shipped ones"):
        original(NAME, model_dir=model_dir, dataset="mnist", threat_model="Linf")
    shutil.copy(store.path / "mnist" / f"{NAME}.pt", placed)
    m = original(NAME, model_dir=model_dir, dataset="mnist", threat_model="Linf")
    assert _same_weights(m, store.models[NAME])
    torch.manual_seed(9)
    m.load_state_dict(create_model(NAME).state_dict())  # later loads (fine-tuning, ...) are the caller's business
    unshipped = model_dir / "mnist" / "Linf" / "lwta_ibp_softmax.pt"
    theirs, _ = _checkpoint(unshipped, "lwta_ibp_softmax")
    assert _same_weights(original("lwta_ibp_softmax", model_dir=model_dir, dataset="mnist"), theirs)


def test_plugin_load_model_has_robustbench_signature(rb, store, tmp_path):
    import inspect

    ours = inspect.signature(zoo.load_model).parameters
    theirs = inspect.signature(rb.utils.load_model._lwta_original).parameters
    positional = [n for n, p in ours.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == list(theirs)  # model_name, model_dir, dataset, threat_model, custom_checkpoint, norm
    assert ours["model_dir"].default == theirs["model_dir"].default == "./models"
    explicit = tmp_path / "explicit.pt"
    saved, _ = _checkpoint(explicit, "lwta_ibp_softmax", seed=9)
    m = zoo.load_model("lwta_ibp_softmax", tmp_path / "none", "mnist", "Linf", str(explicit))  # custom_checkpoint
    assert _same_weights(m, saved)
    with pytest.warns(DeprecationWarning, match="norm"):
        assert zoo.load_model(NAME, norm="Linf").samples == 5
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unknown threat model 'L1'"):
        zoo.load_model(NAME, threat_model="Linf", norm="L1")
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    assert _same_weights(zoo.load_model(NAME, None, BenchmarkDataset.mnist, ThreatModel.Linf), store.models[NAME])


def test_robustbench_names_go_to_robustbench(rb):
    from robustbench.utils import load_model

    calls = []
    wrapped = compat._robustbench_load_model_wrapper(lambda *a: calls.append(a) or "robustbench")
    assert wrapped("Standard", "./m", "cifar10", "Linf") == "robustbench"
    assert calls == [("Standard", "./m", "cifar10", "Linf", "", None)]
    with pytest.raises(KeyError):  # RobustBench's own behaviour for an unknown name
        load_model("NoSuchModel", dataset="cifar10", threat_model="Linf")
    with pytest.raises(ValueError, match="unknown threat model 'corruptions'"):
        load_model(NAME, dataset="mnist", threat_model="corruptions")


def test_robustbench_typos_and_l2_get_clear_errors(rb, store, tmp_path):
    """Through robustbench.utils.load_model: a mistyped name gets "did you mean" (still a KeyError, as RobustBench's
    own), and L2 is refused instead of returning the Linf model, before or after the plugin was imported."""
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model

    with pytest.raises(KeyError, match=r"unknown lwta-plugin model 'lwta_ibp_tanh61'\. Did you mean "
                                       r"'lwta_ibp_tanh16'"):
        load_model("lwta_ibp_tanh61", dataset="mnist", threat_model="Linf")
    with pytest.raises(KeyError, match=r"unknown model 'Carmon2019Unlabled' in RobustBench's zoo for cifar10 / Linf"
                                       r".*Did you mean 'Carmon2019Unlabeled'"):
        load_model("Carmon2019Unlabled", dataset="cifar10", threat_model="Linf")
    with pytest.raises(KeyError, match=r"Did you mean 'lwta_ibp_tanh16'"):  # the plugin's names on cifar10 too
        load_model("lwta_ibp_tanh61", dataset="cifar10", threat_model="Linf")
    for dataset in ("mnist", BenchmarkDataset.mnist, "cifar10"):
        for tm in ("L2", ThreatModel.L2):
            with pytest.raises(ValueError, match=r"unknown threat model 'L2'.*Linf only"):
                load_model(NAME, model_dir=tmp_path, dataset=dataset, threat_model=tm)
    with pytest.warns(DeprecationWarning, match="norm"), pytest.raises(ValueError, match=r"Linf only"):
        load_model(NAME, dataset="mnist", norm="L2")
    # RobustBench's original (a reference taken before the plugin was imported) on the plugin's mnist entries
    original = load_model._lwta_original
    with pytest.raises(KeyError, match=r"Did you mean 'lwta_ibp_tanh16'"):
        original("lwta_ibp_tanh61", model_dir=tmp_path, dataset="mnist", threat_model="Linf")
    with pytest.raises(KeyError, match=r"unknown threat model 'L2'.*Linf only"):
        original(NAME, model_dir=tmp_path, dataset="mnist", threat_model="L2")


def test_benchmark_refuses_random_models(rb, store):
    model = zoo.load_model(NAME, samples=1)
    with pytest.raises(ValueError, match=rf"random model '{NAME}'.*lwta evaluate --model {NAME} --dataset mnist "
                                         r"--protocol autoattack-rand.*--protocol adaptive"):
        rb.benchmark(model, n_examples=4, dataset="mnist", threat_model="Linf", eps=0.3)
    with pytest.raises(ValueError, match="random model"):
        rb.benchmark(torch.nn.Sequential(model), n_examples=4, dataset="mnist", threat_model="Linf", eps=0.3)
    import robustbench.eval as rb_eval

    with pytest.raises(ValueError, match="AutoAttack\\(version='standard'\\) would evaluate the random model"):
        rb_eval.AutoAttack(model, norm="Linf", eps=0.3, version="standard", device="cpu", log_path=None)
    with pytest.raises(ValueError, match="AutoAttack\\(version='plus'\\) would evaluate the random model"):
        rb_eval.AutoAttack(model, norm="Linf", eps=0.3, version="plus", device="cpu")
    assert rb_eval.AutoAttack(model, norm="Linf", eps=0.3, version="rand", device="cpu").apgd.eot_iter == 20
    with model.sampling("argmax"):
        compat.refuse_random_model(model)  # a deterministic surrogate is allowed
    compat.refuse_random_model(create_model("relu_softmax"))


def test_robustbench_from_a_fresh_interpreter(store, tmp_path):
    """The documented use, exactly: import the plugin, import RobustBench as installed, load offline."""
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench not installed")
    code = ("import lwta_plugin; import robustbench; from robustbench.utils import load_model\n"
            f"m = load_model({NAME!r}, dataset='mnist', threat_model='Linf', model_dir={str(tmp_path / 'm')!r})\n"
            "import torch; print(type(m).__name__, m.training, m.samples, tuple(m(torch.rand(2, 1, 28, 28)).shape))\n"
            "try:\n    load_model('lwta_ibp_softmax', dataset='mnist', model_dir='m')\n"
            "except Exception as e:\n    print(type(e).__name__, 'lwta train --model lwta_ibp_softmax' in str(e))\n"
            "from robustbench.model_zoo import model_dicts\n"
            "from robustbench.model_zoo.enums import BenchmarkDataset as D, ThreatModel as T\n"
            f"print('Standard' in model_dicts[D.cifar_10][T.Linf], {NAME!r} in model_dicts[D('mnist')][T.Linf])")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], check=False,
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["LWTANet", "False", "5", "(2,", "10)", "ModelNotAvailableError", "True",
                                  "True", "True"]


def test_mnist_test_set_for_robustbench(rb):
    """robustbench.data.load_clean_dataset(mnist, ...) works offline (via lwta_plugin.data)."""
    from robustbench.data import PREPROCESSINGS, load_clean_dataset
    from robustbench.model_zoo.enums import BenchmarkDataset

    from lwta_plugin.data import DatasetNotAvailableError

    try:
        x, y = load_clean_dataset(BenchmarkDataset.mnist, 5, "./no-such-data-dir", PREPROCESSINGS[None])
    except DatasetNotAvailableError as e:
        pytest.skip(f"no offline MNIST here: {e}")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and y.tolist() == [7, 2, 1, 0, 4]  # the official test set's first labels


@pytest.mark.slow
def test_benchmark_runs_deterministic_models_on_mnist(rb):
    """robustbench.benchmark(...) end to end on MNIST (standard AutoAttack, a few images): ~20 s."""
    torch.manual_seed(0)
    model = create_model("relu_softmax").eval()
    clean, robust = rb.benchmark(model, n_examples=4, dataset="mnist", threat_model="Linf", eps=0.3, batch_size=4)
    assert 0 <= robust <= clean <= 1


def test_autoattack_adapter_takes_robustbench_arguments(rb, tmp_path):
    import robustbench.eval as rb_eval
    from pyautoattack import AutoAttack

    torch.manual_seed(0)
    model = create_model("relu_softmax").eval()  # deterministic
    x = torch.rand(4, 1, 28, 28)
    y = model(x).argmax(1)
    log = tmp_path / "aa.log"
    # exactly robustbench.eval.benchmark's calls
    adversary = rb_eval.AutoAttack(model, norm="Linf", eps=0.3, version="custom", device="cpu", log_path=str(log),
                                   attacks_to_run=["apgd-ce"])
    assert isinstance(adversary, AutoAttack)
    adversary.apgd.n_iter = 3
    x_adv = adversary.run_standard_evaluation(x, y, bs=2, state_path=None)
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    # fra31's keyword forms: return_labels, and a state file given as a string
    x_adv2, y_adv = adversary.run_standard_evaluation(x, y, 2, return_labels=True,
                                                      state_path=str(tmp_path / "aa_state.json"))
    assert x_adv2.shape == x.shape and y_adv.shape == y.shape and (tmp_path / "aa_state.json").exists()
    with pytest.raises(ValueError, match="conflicting batch sizes"):
        adversary.run_standard_evaluation(x, y, bs=2, batch_size=3)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and 0 <= x_adv.min() and x_adv.max() <= 1
    assert "apgd-ce" in log.read_text()


def test_autoattack_alias_and_pkg_resources(rb, monkeypatch):
    import importlib

    import pyautoattack
    import pyautoattack.other_utils

    assert sys.modules["autoattack"] is pyautoattack and sys.modules["autoattack.state"] is pyautoattack.state
    # a submodule imported through the alias later is the same module object, never a second copy
    monkeypatch.delitem(sys.modules, "autoattack.other_utils")
    assert importlib.import_module("autoattack.other_utils") is pyautoattack.other_utils
    assert pyautoattack.other_utils.__name__ == "pyautoattack.other_utils"
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("autoattack.no_such_module")
    monkeypatch.setattr(compat, "_have", lambda name: name != "pkg_resources")
    with pytest.raises(ImportError, match=r"pip install 'setuptools<81'"):
        compat.ensure_robustbench_importable()


@pytest.mark.parametrize("real_first", [True, False])
def test_real_autoattack_is_not_shadowed(tmp_path, real_first):
    """A real autoattack wins over the plugin's alias module, before or after it on sys.path."""
    real = tmp_path / "real"
    (real / "autoattack").mkdir(parents=True)
    (real / "autoattack" / "__init__.py").write_text("REAL = True\n")
    code = "import lwta_plugin.compat as c; print(c.alias_autoattack()); import autoattack; print(autoattack.REAL)"
    path = [str(real), str(ROOT)] if real_first else [str(ROOT), str(real)]
    out = _fresh_python(code, tmp_path, pythonpath=os.pathsep.join(path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_robustbench_imports_before_the_plugin(store, tmp_path):
    """`from robustbench.utils import load_model` before `import lwta_plugin` (robustbench imports `autoattack`; the
    plugin ships it as an alias of pyautoattack), then the plugin registers itself, and the reference taken before
    loads the plugin's model."""
    if importlib.util.find_spec("robustbench") is None or importlib.util.find_spec("pyautoattack") is None:
        pytest.skip("robustbench or pyautoattack not installed")
    code = ("from robustbench.utils import load_model\n"
            "import sys; import autoattack.state; import pyautoattack.state\n"
            "print(sys.modules['autoattack'].__name__, autoattack.state is pyautoattack.state)\n"
            "import lwta_plugin, robustbench, robustbench.utils\n"
            "print(robustbench._lwta_plugin_registered, robustbench.utils.load_model._lwta_plugin_patched)\n"
            f"m = load_model({NAME!r}, model_dir={str(tmp_path / 'm')!r}, dataset='mnist', threat_model='Linf')\n"
            "print(type(m).__name__, m.training)\n")
    out = _fresh_python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pyautoattack", "True", "True", "True", "LWTANet", "False"]


def test_autoattack_alias_when_the_alias_module_is_not_importable(tmp_path):
    """An install made before autoattack.py existed (it is not importable): the plugin loads it from beside the
    package, so `import lwta_plugin; import robustbench` still works."""
    if importlib.util.find_spec("robustbench") is None or importlib.util.find_spec("pyautoattack") is None:
        pytest.skip("robustbench or pyautoattack not installed")
    assert compat.ALIAS_MODULE.is_file()
    code = ("import lwta_plugin, robustbench, pyautoattack.state\n"
            "print(sys.modules['autoattack'] is pyautoattack, sys.modules['autoattack.state'] is pyautoattack.state, "
            "robustbench._lwta_plugin_registered)\n")
    out = _fresh_python(code, tmp_path, blocked=("autoattack",))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]


def test_missing_autoattack_says_what_to_install(tmp_path):
    """No pyautoattack and no real autoattack (only the alias module): importing robustbench, in either order,
    names the package to install."""
    if importlib.util.find_spec("robustbench") is None:
        pytest.skip("robustbench not installed")
    for first in ("", "import lwta_plugin\n"):
        code = first + ("try:\n    from robustbench.utils import load_model\n"
                        "except ImportError as e:\n    print(type(e).__name__, '|', e)\n")
        out = _fresh_python(code, tmp_path, blocked=("pyautoattack",))
        assert out.returncode == 0, out.stderr
        assert "pip install 'pyautoattack>=0.2,<0.3'" in out.stdout and "Error |" in out.stdout, out.stdout


class Color(enum.Enum):
    red = "r"
    green = "g"


def test_extend_enum_in_place():
    keyed = {Color.red: 1}
    blue = compat.extend_enum(Color, "blue", "b")
    assert compat.extend_enum(Color, "blue", "b") is blue  # idempotent
    assert Color("b") is Color.blue is Color["blue"] is blue and blue.name == "blue" and blue.value == "b"
    assert list(Color) == [Color.red, Color.green, blue] and len(Color) == 3 and keyed[Color("r")] == 1
    assert pickle.loads(pickle.dumps(blue)) is blue
    with pytest.raises(ValueError, match="already has value 'r'"):
        compat.extend_enum(Color, "crimson", "r")
    with pytest.raises(ValueError, match="exists with value 'b'"):
        compat.extend_enum(Color, "blue", "x")


def test_learning_curve_section_joins_a_parent_run():
    from lwta_plugin.cards import curve_section, learning_curve

    parent = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.9, "val_acc": 0.95}]
    this = [{"epoch": 1, "train_loss": 0.2, "train_acc": 0.97, "val_acc": 0.98}]
    curve = learning_curve(this, parent)
    assert [(c["epoch"], c["run"], c["val_acc"]) for c in curve] == [(1, "parent", 0.95), (2, "this", 0.98)]
    text = "\n".join(curve_section(curve, "m.curve.png"))
    assert "![learning curve](m.curve.png)" in text and "| 2 | this | 0.2000 | 97.00 % | 98.00 % |" in text
    assert curve_section([], None) == []
