"""Attack suite: registry, input validation, valid outputs, effectiveness on a trained CNN, the paper's BSA and
Random definitions, sampling contexts of the stochastic-network attacks."""
import json

import pytest
import torch
import torch.nn.functional as F
from _tiny_models import (
    N_CLASSES,
    SHAPE,
    accuracy,
    apgd_backend_available,
    quadrant_data,
    tiny_lwta,
    trained_cnn,
)

from lwta_plugin.attacks import ATTACKS, build_attack, list_attacks
from lwta_plugin.attacks.bsa import blind_spot
from lwta_plugin.attacks.random import random_score, uniform_noise_images
from lwta_plugin.layers import stochastic_layers
from lwta_plugin.protocols import get_protocol

EPS = 0.3
STEP = {"eps": EPS, "alpha": EPS / 8, "steps": 12}
CW = {"c": 1.0, "lr": 0.05, "binary_search_steps": 3, "steps": 40}
PARAMS = {
    "pgd": dict(STEP),
    "fgsm": {"eps": EPS},
    "noise": {"eps": 1.0, "draws": 4},  # the reference's MNIST noise eps; smaller noise cannot flip this CNN
    "cw": dict(CW),
    "bsa": dict(CW, alpha=0.8),
    "eot_pgd": dict(STEP, eot_samples=3),
    "eot_pgd_margin": dict(STEP, eot_samples=3),
    "apgd_rand": {"eps": EPS, "steps": 12, "eot_iter": 2},
    "transfer": dict(STEP, surrogate="expected"),
    "bpda": dict(STEP, eot_samples=2),
}


@pytest.fixture(scope="module")
def cnn():
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return quadrant_data(48, seed=1)


def _check_valid(x_adv, x, eps=None):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad and torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if eps is not None:
        assert (x_adv - x).abs().max() <= eps + 1e-6


def test_registry_covers_every_protocol_attack():
    names = {a.attack for p in ("paper", "adaptive", "smoke") for a in get_protocol(p).attacks if a.kind == "adversarial"}
    assert names <= set(list_attacks()) and set(ATTACKS) == set(list_attacks())
    with pytest.raises(ValueError, match="unknown attack"):
        build_attack("deepfool", torch.nn.Identity())
    with pytest.raises(TypeError):
        build_attack("pgd", torch.nn.Linear(2, 2), epsilon=0.3)
    for bad in ({"eps": -0.1}, {"steps": 0}, {"steps": 2.5}, {"loss": "hinge"}, {"eps": float("nan")}):
        with pytest.raises(ValueError):
            build_attack("pgd", torch.nn.Linear(2, 2), **bad)
    with pytest.raises(ValueError):
        build_attack("transfer", torch.nn.Linear(2, 2), surrogate="median")
    with pytest.raises(ValueError):
        build_attack("apgd_rand", torch.nn.Linear(2, 2), losses=["hinge"])


def test_protocol_parameters_build(cnn):
    """Every attack of every protocol accepts its protocol's parameters and records JSON-able hyperparameters."""
    for proto in ("paper", "adaptive", "smoke"):
        for spec in get_protocol(proto, "cifar10").attacks:
            if spec.kind == "adversarial" and (spec.attack != "apgd_rand" or apgd_backend_available()):
                attack = build_attack(spec.attack, cnn, **spec.params)
                json.dumps(attack.hparams)
                for k, v in spec.params.items():
                    if k in attack.hparams:
                        assert attack.hparams[k] == v


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_attack_returns_valid_images_and_lowers_accuracy(cnn, data, name):
    x, y = data
    if name == "apgd_rand" and not apgd_backend_available():
        pytest.skip("no pyautoattack or torchattacks")
    torch.manual_seed(0)
    attack = build_attack(name, cnn, **PARAMS[name])
    x_adv = attack(x, y)
    _check_valid(x_adv, x, PARAMS[name]["eps"] if attack.bounded else None)
    clean = accuracy(cnn, x, y)
    assert clean == 1.0
    # uniform noise is a weak attack by design: it only has to do some harm at eps = 1
    assert accuracy(cnn, x_adv, y) < clean - (0.05 if name == "noise" else 0.3), name
    info = attack.last_info
    if "path_adversarial" in info:  # best-iterate tracking: nothing found on the path is lost
        wrong = cnn(x_adv).argmax(1) != y
        assert bool((info["path_adversarial"] <= wrong).all())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_attack_runs_on_a_stochastic_lwta_net(data, name):
    model = tiny_lwta("tanh16")
    x, y = data
    x, y = x[:6], y[:6]
    if name == "apgd_rand" and not apgd_backend_available():
        pytest.skip("no pyautoattack or torchattacks")
    params = dict(PARAMS[name])
    if name == "noise":
        params["eval_samples"] = 2
    torch.manual_seed(0)
    attack = build_attack(name, model, **params)
    with model.using(samples=1, output="logits"):
        x_adv = attack(x, y)
    _check_valid(x_adv, x, params["eps"] if attack.bounded else None)
    assert not model.training and model.stochastic  # settings restored
    assert all(p.grad is None for p in model.parameters()), "an attack computed (and left) weight gradients"
    json.dumps(attack.hparams)


def test_inputs_are_validated(cnn, data):
    x, y = data
    attack = build_attack("pgd", cnn, **STEP)
    for xb, yb, msg in [
        (x[0], y[:1], "shape"),
        (x * 2, y, r"\[0, 1\]"),
        (x - 0.5, y, r"\[0, 1\]"),
        (torch.where(x > 0.5, float("nan"), x), y, "NaN"),
        (x, y.float(), "integers"),
        (x, y[:-1], "labels must have shape"),
        (x, y + N_CLASSES, "labels must be in"),
        (x, y - 1 - y.max(), "labels must be in"),
        ((x * 255).to(torch.uint8), y, "floating point"),
    ]:
        with pytest.raises(ValueError, match=msg):
            attack(xb, yb)
    with pytest.raises(TypeError):
        attack(x.numpy(), y)
    empty = attack(x[:0], y[:0])
    assert empty.shape == x[:0].shape


def test_eval_mode_device_and_dtype(cnn, data):
    x, y = data
    seen = []
    handle = cnn.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    cnn.train()
    try:
        x64 = x.double()
        torch.manual_seed(0)
        x_adv = build_attack("pgd", cnn, **STEP)(x64, y)
    finally:
        handle.remove()
        train_mode = cnn.training
        cnn.eval()
    assert seen and not any(seen) and train_mode  # eval during the attack, training mode restored after
    assert x_adv.dtype == torch.float64
    _check_valid(x_adv, x64, EPS)


def test_bsa_follows_the_reference_definition(cnn, data):
    x, y = data
    assert torch.allclose(blind_spot(x, 0.8), 0.8 * x + 0.1)
    # reference space [-0.5, 0.5]: the scaled image is 0.8 * (x - 0.5)
    assert torch.allclose(blind_spot(x, 0.8) - 0.5, 0.8 * (x - 0.5))
    # Without optimisation steps CW finds nothing and BSA returns the blind-spot image itself.
    assert torch.equal(build_attack("bsa", cnn, **dict(CW, steps=0))(x, y), blind_spot(x, 0.8))
    # BSA is exactly CW on the scaled image (CW has no randomness on a deterministic model) ...
    bsa = build_attack("bsa", cnn, **CW)(x, y)
    assert torch.equal(bsa, build_attack("cw", cnn, **CW)(blind_spot(x, 0.8), y))
    assert bsa.amax() <= 0.9 + 1e-6 or accuracy(cnn, bsa, y) == 0.0
    # ... and the bounded variant stays in the eps-ball around the original image.
    bounded = build_attack("bsa", cnn, **CW, eps=0.15)
    assert bounded.bounded and bounded.hparams["eps"] == 0.15
    _check_valid(bounded(x, y), x, 0.15)


def test_cw_keeps_the_smallest_successful_adversarial(cnn, data):
    x, y = data
    one = build_attack("cw", cnn, **dict(CW, binary_search_steps=1))
    more = build_attack("cw", cnn, **dict(CW, binary_search_steps=4))
    a1, a4 = one(x, y), more(x, y)
    l1, l4 = one.last_info["l2"], more.last_info["l2"]
    assert torch.isfinite(l4).all() and accuracy(cnn, a4, y) == 0.0
    # the first search step is the same run, so the best over more steps can only be closer
    assert bool((l4 <= l1 + 1e-6).all()) and l4.mean() < l1.mean()
    assert torch.allclose((a4 - x).flatten(1).norm(dim=1), l4, atol=1e-3)
    del a1


class _ConfidenceStub(torch.nn.Module):
    """Logits (k * mean pixel, 0, 0, 0): the max probability is a known function of the image."""

    def __init__(self, k=6.6):  # max probability 0.9 at a mean pixel of 0.5
        super().__init__()
        self.k = k
        self.samples = 1
        self.stochastic = False
        self.input_shape = SHAPE

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([self.k * m, torch.zeros(len(x), N_CLASSES - 1)], 1)

    def using(self, samples=None, output=None):
        import contextlib

        return contextlib.nullcontext(self)


def test_random_score_follows_the_paper_definition():
    g = torch.Generator().manual_seed(0)
    imgs = uniform_noise_images(2000, SHAPE, torch.Generator().manual_seed(0))
    assert imgs.min() >= 0 and imgs.max() < 1
    assert abs(imgs.mean().item() - 0.5) < 0.005 and abs(imgs.std().item() - 12 ** -0.5) < 0.005
    # the evaluation runner draws its noise images the same way
    assert torch.equal(imgs, torch.rand((2000, *SHAPE), generator=torch.Generator().manual_seed(0)))
    model = _ConfidenceStub()
    expected = (F.softmax(model(imgs), 1).amax(1) < 0.9).double().mean().item()
    assert 0.05 < expected < 0.95  # the stub straddles the threshold
    assert random_score(model, 2000, threshold=0.9, generator=g) == pytest.approx(expected)
    assert random_score(model, 2000, threshold=1.0, generator=torch.Generator().manual_seed(0)) == 1.0
    with pytest.raises(ValueError):
        random_score(model, 10, threshold=0.0)


def test_transfer_and_bpda_switch_sampling_only_during_the_attack(data):
    model = tiny_lwta("softmax")
    x, y = data
    seen = []
    layer = stochastic_layers(model)[0]
    handle = layer.register_forward_pre_hook(lambda m, i: seen.append(m.sampling))
    try:
        torch.manual_seed(0)
        build_attack("transfer", model, **dict(STEP, steps=2, surrogate="expected"))(x[:4], y[:4])
        assert {(s.winner, s.z) for s in seen} == {("expected", "expected")}
        seen.clear()
        build_attack("bpda", model, **dict(STEP, steps=2, eot_samples=2))(x[:4], y[:4])
        assert seen and all(s.straight_through and s.winner == "sample" for s in seen)
    finally:
        handle.remove()
    assert layer.sampling.winner == "sample" and not layer.sampling.straight_through


def test_transfer_from_a_surrogate_module(cnn, data):
    x, y = data
    other = trained_cnn(seed=1)
    torch.manual_seed(0)
    attack = build_attack("transfer", cnn, **dict(STEP, steps=20, surrogate=other))
    x_adv = attack(x, y)
    _check_valid(x_adv, x, EPS)
    assert attack.hparams["surrogate"] == "SmallCNN"
    assert accuracy(cnn, x_adv, y) < 1.0


def test_apgd_backends(cnn, data):
    x, y = data
    for backend in ("native", "pyautoattack", "torchattacks"):
        if backend != "native":
            pytest.importorskip(backend)
        torch.manual_seed(0)
        attack = build_attack("apgd_rand", cnn, eps=EPS, steps=12, eot_iter=1, backend=backend)
        x_adv = attack(x, y)
        _check_valid(x_adv, x, EPS)
        assert attack.hparams["backend"] == backend and accuracy(cnn, x_adv, y) < 0.8


def test_attacks_are_reproducible_under_a_seed(data):
    model = tiny_lwta("softmax")
    x, y = data
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        with model.using(samples=1):
            outs.append(build_attack("eot_pgd", model, **dict(STEP, steps=3, eot_samples=3))(x[:5], y[:5]))
    assert torch.equal(*outs)


def test_on_step_sees_the_path_and_changes_nothing(data):
    """PGD's ``on_step`` receives the start and every step's point; a callback that draws no random numbers leaves
    the attack's result exactly as without it."""
    model = tiny_lwta("softmax")
    x, y = data
    params = dict(STEP, steps=3, eot_samples=2)
    torch.manual_seed(7)
    plain = build_attack("pgd", model, **params)(x[:4], y[:4])
    seen: list[torch.Tensor] = []
    torch.manual_seed(7)
    hooked = build_attack("pgd", model, **params, on_step=lambda x_t: seen.append(x_t.clone()))(x[:4], y[:4])
    assert torch.equal(plain, hooked) and len(seen) == 4
    assert all((p - x[:4]).abs().max() <= EPS + 1e-6 for p in seen)
    assert "on_step" not in build_attack("pgd", model, **params, on_step=print).hparams


def test_attack_facts():
    """Every attack states whether it is white-box, iterative and bounded, and which hyperparameters are budgets;
    every budget key is a hyperparameter the attack records."""
    facts = {name: (cls.white_box, cls.iterative, cls.bounded) for name, cls in ATTACKS.items()}
    assert facts == {"pgd": (True, True, True), "fgsm": (True, False, True), "noise": (False, False, True),
                     "cw": (True, True, False), "bsa": (True, True, False), "eot_pgd": (True, True, True),
                     "eot_pgd_margin": (True, True, True), "apgd_rand": (True, True, True),
                     "transfer": (False, True, True), "bpda": (True, True, True),
                     "torchattacks_pgd": (True, True, True)}
    model = torch.nn.Linear(2, 2)
    for name, cls in ATTACKS.items():
        if name == "apgd_rand" and not apgd_backend_available():
            continue
        assert cls.budget_keys and set(cls.budget_keys) <= set(build_attack(name, model).hparams), name


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("steps", [12, 100])
def test_native_apgd_is_pyautoattacks_loop(cnn, data, loss, steps):
    """The native APGD (the one with early exit inside the loop) returns pyautoattack's points, robust flags and
    losses from the same random state, step-size checkpoints included."""
    pytest.importorskip("pyautoattack")
    from pyautoattack.autopgd_base import APGDAttack

    from lwta_plugin.attacks.apgd import apgd_linf

    x, y = data
    theirs = APGDAttack(cnn, n_iter=steps, norm="Linf", n_restarts=1, eps=EPS, loss=loss, eot_iter=1, rho=0.75,
                        device=x.device)
    theirs.init_hyperparam(x)
    torch.manual_seed(3)
    expected = theirs.attack_single_run(x, y)
    torch.manual_seed(3)
    got = apgd_linf(cnn, x, y, eps=EPS, steps=steps, loss=loss, rho=0.75)
    for a, b in zip(got, expected):
        assert torch.equal(a, b.to(a.device))
    assert not bool(got[1].all())  # the attack did something to compare


def test_native_apgd_early_exit_shrinks_the_batch_inside_the_loop():
    from _tiny_models import quadrant_data

    from lwta_plugin.attacks import APGDRand

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.rows, self.stochastic = net, 0, False

        def forward(self, x):
            self.rows += x.shape[0]
            return self.net(x)

    x, y = quadrant_data(16, seed=4)
    model = Counting(trained_cnn())
    torch.manual_seed(0)
    full = APGDRand(model, eps=0.5, steps=30, eot_iter=1, losses=["ce"], backend="native")
    xa_full = full(x, y)
    rows_full, model.rows = model.rows, 0
    torch.manual_seed(0)
    quick = APGDRand(model, eps=0.5, steps=30, eot_iter=1, losses=["ce"], backend="native").set_early_exit(2, 1)
    xa = quick(x, y)
    assert quick.last_info["exited_in_loop"] > 0
    assert model.rows < rows_full / 2  # images confirmed broken stopped costing gradients within APGD-CE
    with torch.no_grad():
        assert (model(xa).argmax(1) != y).sum() >= (model(xa_full).argmax(1) != y).sum() - 1
    assert (xa - x).abs().max() <= 0.5 + 1e-6
