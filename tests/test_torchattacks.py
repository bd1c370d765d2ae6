"""torchattacks conventions: every class in ``torchattacks.__all__`` that supports 1-channel images runs with its
defaults against a registered model (``lwta_ibp_tanh16`` from the zoo, 8 MNIST test images), input validation
switched on. Only a few cheap ones run in the default suite; the rest (about 10 minutes on 2 busy cores) are marked
slow."""
import pytest
import torch

torchattacks = pytest.importorskip("torchattacks")

import lwta_plugin
from lwta_plugin.validation import has_input_validation

MODEL = "lwta_ibp_tanh16"
# torchattacks builds their smoothing / patch kernels for 3-channel images (README: "torchattacks")
THREE_CHANNEL_ONLY = ("TIFGSM", "PIFGSM", "PIFGSMPP")
ONE_CHANNEL = [name for name in torchattacks.__all__ if name not in THREE_CHANNEL_ONLY]
FAST = {"VANILA", "GN", "FGSM", "FFGSM", "PGD", "Jitter", "NIFGSM"}  # NIFGSM queries outside [0, 1]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    data = pytest.importorskip("lwta_plugin.data")
    try:
        x, y = data.load_tensors("mnist", limit=8)
    except data.DatasetNotAvailableError as e:
        pytest.skip(str(e))
    return lwta_plugin.load_model(MODEL, dataset="mnist"), x, y


def _attack(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """``name`` with its defaults; the two wrappers get what they cannot do without."""
    cls = getattr(torchattacks, name)
    if name == "MultiAttack":
        return cls([torchattacks.FGSM(model), torchattacks.PGD(model)])
    if name == "LGV":  # trains copies of the model on a loader, then attacks with them
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
        return cls(model, loader, epochs=1)
    return cls(model)


def test_the_list_is_torchattacks_own():
    assert set(ONE_CHANNEL) | set(THREE_CHANNEL_ONLY) == set(torchattacks.__all__)
    assert set(THREE_CHANNEL_ONLY) <= set(torchattacks.__all__) and FAST <= set(ONE_CHANNEL)


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=[pytest.mark.slow, pytest.mark.exhaustive])
                                  for n in ONE_CHANNEL])
def test_attack_runs_with_its_defaults(setup, name):
    model, x, y = setup
    torch.manual_seed(0)
    adv = _attack(name, model, x, y)(x, y)
    assert has_input_validation(model) and not model.training
    assert adv.shape == x.shape and torch.isfinite(adv).all()
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", THREE_CHANNEL_ONLY)
def test_three_channel_attacks_fail_in_torchattacks_not_in_the_plugin(setup, name):
    """They stop in torchattacks' own 3-channel kernel (if torchattacks fixes that, move them to ONE_CHANNEL and
    update the README)."""
    model, x, y = setup
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 1 channels"):
        _attack(name, model, x, y)(x, y)
