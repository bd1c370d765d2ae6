"""The plugin's attacks speak torchattacks' interface: targeted modes, set_model_training_mode, save/load,
MultiAttack, and (where torchattacks is installed) are ``torchattacks.attack.Attack`` subclasses."""
import importlib.util

import pytest
import torch
from _tiny_models import N_CLASSES, accuracy, quadrant_data, tiny_lwta, trained_cnn
from torch import nn

from lwta_plugin.attacks import CW, FGSM, PGD, Noise, build_attack

HAVE_TA = importlib.util.find_spec("torchattacks") is not None


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return trained_cnn()


@pytest.fixture(scope="module")
def data():
    return quadrant_data(32, seed=1)


def _hit(model, x, t):
    with torch.no_grad():
        return (model(x).argmax(1) == t).float().mean().item()


@pytest.mark.parametrize("name", ["pgd", "eot_pgd", "fgsm", "cw", "torchattacks_pgd"])
def test_targeted_by_label_reaches_the_targets(cnn, data, name):
    if name == "torchattacks_pgd" and not HAVE_TA:
        pytest.skip("torchattacks not installed")
    x, y = data
    t = (y + 1) % N_CLASSES
    params = {"cw": {"steps": 100, "binary_search_steps": 3, "c": 1.0, "lr": 0.05},
              "fgsm": {"eps": 0.5}}.get(name, {"eps": 0.5, "steps": 20})
    atk = build_attack(name, cnn, **params)
    torch.manual_seed(0)
    untargeted = atk(x, y)
    atk.set_mode_targeted_by_label(quiet=True)
    assert atk.targeted and atk.get_mode() == "targeted(label)" and atk.hparams["attack_mode"] == "targeted(label)"
    torch.manual_seed(0)
    adv = atk(x, t)  # in targeted(label) mode the labels passed are the targets
    assert _hit(cnn, adv, t) > _hit(cnn, untargeted, t) and _hit(cnn, adv, t) >= 0.5
    atk.set_mode_default(quiet=True)
    assert not atk.targeted and "attack_mode" not in atk.hparams


def test_targeted_by_function_random_and_least_likely(cnn, data):
    x, y = data
    atk = PGD(cnn, eps=0.5, steps=20)
    atk.set_mode_targeted_by_function(lambda images, labels: (labels + 2) % N_CLASSES, quiet=True)
    assert _hit(cnn, atk(x, y), (y + 2) % N_CLASSES) >= 0.5
    atk.set_mode_targeted_random(quiet=True)
    t = atk.get_target_label(x, y)
    assert (t != y).all() and t.min() >= 0 and t.max() < N_CLASSES
    atk.set_mode_targeted_least_likely(quiet=True)
    t = atk.get_target_label(x, y)
    with torch.no_grad():
        p = torch.softmax(cnn(x), 1)
    p[torch.arange(len(y)), y] = 2.0
    assert torch.equal(t, p.argmin(1))
    atk.set_mode_targeted_by_function(lambda images, labels: labels.float(), quiet=True)
    with pytest.raises(ValueError, match="target labels must be an integer tensor"):
        atk(x, y)


def test_targeted_mode_is_refused_where_unsupported(cnn):
    with pytest.raises(ValueError, match="Targeted mode is not supported by noise"):
        Noise(cnn).set_mode_targeted_by_label(quiet=True)


def test_targeted_pgd_on_a_random_model_uses_targeted_early_exit(data):
    torch.manual_seed(0)
    model = tiny_lwta()
    x, y = data
    t = (y + 1) % N_CLASSES
    atk = build_attack("eot_pgd", model, eps=0.5, steps=10, eot_samples=4, early_exit=1)
    atk.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    adv = atk(x, t)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.5 + 1e-6
    assert atk.last_info["returned_adversarial"].float().mean() > 0  # some reach their target


class _Dropper(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.drop = inner, nn.Dropout(0.5)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((self.training, self.drop.training))
        return self.inner(self.drop(x))


def test_set_model_training_mode_and_restore(cnn, data):
    x, y = data
    model = _Dropper(cnn)
    model.eval()
    atk = FGSM(model)
    atk(x, y)
    assert all(s == (False, False) for s in model.seen)
    model.seen.clear()
    atk.set_model_training_mode(model_training=True)
    atk(x, y)
    assert model.seen and all(s == (True, False) for s in model.seen)  # Dropout stays in eval unless asked
    assert not model.training and not model.drop.training  # every module's own mode is back
    assert atk.hparams["model_training"] is True
    atk.set_model_training_mode()
    assert "model_training" not in atk.hparams


def test_normalization_used_is_refused_with_advice(cnn):
    with pytest.raises(NotImplementedError, match="inside the model"):
        PGD(cnn).set_normalization_used([0.5], [0.5])


def test_save_writes_torchattacks_format_atomically(cnn, data, tmp_path):
    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    atk = PGD(cnn, eps=0.3, steps=5)
    path = tmp_path / "adv.pt"
    torch.manual_seed(0)
    rob, l2, seconds = atk.save(loader, save_path=path, verbose=False, return_verbose=True, save_predictions=True,
                                save_clean_inputs=True)
    saved = torch.load(path, weights_only=True)
    assert l2 >= 0 and seconds > 0
    assert saved["adv_inputs"].shape == x.shape and torch.equal(saved["labels"], y)
    assert torch.equal(saved["clean_inputs"], x) and saved["save_type"] == "float"
    assert rob == pytest.approx(100 * accuracy(cnn, saved["adv_inputs"], y))
    assert (saved["preds"] == y).float().mean().item() * 100 == pytest.approx(rob)
    assert [p.name for p in tmp_path.iterdir()] == ["adv.pt"]  # no temporary left behind
    if HAVE_TA:
        import torchattacks

        loaded = torchattacks.attack.Attack.load(str(path), batch_size=32)
        (adv_back, y_back), = list(loaded)
        assert torch.equal(adv_back, saved["adv_inputs"]) and torch.equal(y_back, y)


@pytest.mark.skipif(not HAVE_TA, reason="torchattacks not installed")
def test_they_are_torchattacks_attacks_and_compose_with_multiattack(cnn, data):
    import torchattacks

    x, y = data
    a, b = FGSM(cnn, eps=0.1), PGD(cnn, eps=0.3, steps=10)
    assert isinstance(a, torchattacks.attack.Attack) and isinstance(CW(cnn), torchattacks.attack.Attack)
    multi = torchattacks.MultiAttack([a, b])
    torch.manual_seed(0)
    adv = multi(x, y)
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.3 + 1e-6
    assert accuracy(cnn, adv, y) <= min(accuracy(cnn, a(x, y), y), 1.0)
    multi.set_model_training_mode(model_training=False)  # torchattacks propagates it to our attacks
    assert a._model_training is False and b._model_training is False


def test_labels_are_required(cnn, data):
    x, _ = data
    with pytest.raises(TypeError, match="labels are required"):
        PGD(cnn)(x)
