"""Input validation of zoo models: every bad input gives a ValueError naming the problem and the expected form."""
import copy

import pytest
import torch

from lwta_plugin.models import LWTANet, create_model
from lwta_plugin.validation import (
    check_images,
    disable_input_validation,
    enable_input_validation,
    has_input_validation,
)

torch.set_num_threads(1)
EXPECTED = r"expected images of shape \[B, 1, 28, 28\] with values in \[0, 1\]"


@pytest.fixture(scope="module")
def model() -> LWTANet:
    torch.manual_seed(0)
    return enable_input_validation(create_model("lwta_ibp_softmax", "mnist").eval())


def good(n=2, shape=(1, 28, 28)):
    return torch.rand(n, *shape)


@pytest.mark.parametrize("x, pattern", [
    (torch.rand(1, 28, 28), r"input has 3 dims: " + EXPECTED + r", got \[1, 28, 28\] \(a single image\? .*unsqueeze"),
    (torch.rand(28, 28), r"input has 2 dims: .*got \[28, 28\] \(a single grayscale image\? use x.view\(1, 1, 28, 28\)"),
    (torch.rand(2, 1, 1, 28, 28), r"input has 5 dims"),
    (torch.rand(2, 3, 28, 28), r"wrong channel count: " + EXPECTED + r", got \[2, 3, 28, 28\]$"),
    (torch.rand(2, 28, 28, 1), r"wrong channel count: .*got \[2, 28, 28, 1\] \(channels-last\? use x.permute"),
    (torch.rand(2, 1, 32, 32), r"wrong image size: .*got \[2, 1, 32, 32\]"),
    (torch.rand(0, 1, 28, 28), r"empty batch: .*got \[0, 1, 28, 28\]"),
    ((torch.rand(2, 1, 28, 28) * 255).to(torch.uint8), r"expected floating-point .*got dtype torch.uint8 .*/ 255"),
    (torch.ones(2, 1, 28, 28, dtype=torch.int64), r"expected floating-point .*got dtype torch.int64$"),
    (torch.rand(2, 1, 28, 28, dtype=torch.float64), r"expected dtype torch.float32 .*got torch.float64"),
    (torch.rand(2, 1, 28, 28).index_put_((torch.tensor([1]),), torch.tensor(float("nan"))), r"input contains NaN: " + EXPECTED + "$"),
    (torch.rand(2, 1, 28, 28).index_put_((torch.tensor([0]),), torch.tensor(float("inf"))), r"input contains Inf: " + EXPECTED + "$"),
    (torch.rand(2, 1, 28, 28).index_put_((torch.tensor([0]),), torch.tensor(float("-inf"))), r"input contains Inf: " + EXPECTED + "$"),
    (torch.rand(2, 1, 28, 28) * 255, r"input values span \[[0-9.e-]+, 25[0-9.]+\], outside \[0, 1\].*divide by 255"),
    (torch.rand(2, 1, 28, 28) + 0.2, r"input values span .* outside \[0, 1\] \(tolerance 0.0001\)"),
    ((torch.rand(2, 1, 28, 28) - 0.1307) / 0.3081, r"input values span .*outside \[0, 1\].*normalized with a mean/std"),
    ([[0.5]], r"expected a torch.Tensor of images .* got list"),
])
def test_bad_inputs_raise_named_value_error(model, x, pattern):
    with pytest.raises(ValueError, match=r"^lwta_ibp_softmax \(mnist\): " + pattern):
        model(x)


def test_nan_reported_even_with_out_of_range_values(model):
    x = good() * 3
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(x)


def test_tolerance_and_good_inputs(model):
    x = good()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 1 + 5e-5, -5e-5  # within the tolerance
    assert model(x).shape == (2, 10)
    assert model(x=good(1)).shape == (1, 10)  # keyword call is validated too
    with pytest.raises(ValueError, match="wrong channel count"):
        model(x=torch.rand(1, 3, 28, 28))
    strict = enable_input_validation(copy.deepcopy(model), tol=0.0)
    with pytest.raises(ValueError, match="outside"):
        strict(x)


def test_cifar_shape_in_message():
    m = enable_input_validation(create_model("relu_softmax", "cifar10").eval())
    with pytest.raises(ValueError, match=r"relu_softmax \(cifar10\): wrong channel count: expected images of shape "
                                         r"\[B, 3, 32, 32\]"):
        m(torch.rand(2, 1, 32, 32))
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_gradients_unchanged_by_validation():
    torch.manual_seed(1)
    m = create_model("relu_softmax", "mnist").eval()  # deterministic, so both passes are comparable
    x = good(3)
    grads = []
    for validate in (False, True):
        (enable_input_validation if validate else disable_input_validation)(m)
        xi = x.clone().requires_grad_(True)
        m(xi).logsumexp(1).sum().backward()
        grads.append(xi.grad)
    assert grads[0].abs().sum() > 0
    assert torch.equal(grads[0], grads[1])


def test_enable_is_idempotent_and_copies_are_independent(model):
    m = enable_input_validation(create_model("relu_softmax"))
    enable_input_validation(m)
    assert len(m._forward_pre_hooks) == 1 and has_input_validation(m)
    c = copy.deepcopy(m)
    disable_input_validation(c)
    assert not has_input_validation(c) and has_input_validation(m)
    with pytest.raises(RuntimeError):  # no validation on the copy: the conv itself fails
        c(torch.rand(1, 3, 28, 28))
    with pytest.raises(ValueError):
        m(torch.rand(1, 3, 28, 28))
    # the validated model is still the LWTANet with its API; forward_samples is not validated (attack code)
    assert isinstance(model, LWTANet) and model.samples == 1 and model.output == "logits"
    assert model.forward_samples(good(2), 3).shape == (3, 2, 10)
    with model.using(samples=2), model.sampling("argmax"):
        assert model(good(2)).shape == (2, 10)


def test_check_images_direct_and_bad_arguments():
    check_images(good(), (1, 28, 28))
    with pytest.raises(ValueError, match=r"^net: wrong image size"):
        check_images(good(shape=(1, 27, 28)), (1, 28, 28), who="net")
    with pytest.raises(ValueError, match="no input_shape"):
        enable_input_validation(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tolerance"):
        enable_input_validation(create_model("relu_softmax"), tol=-1)
