"""Architectures: parameter counts of the reference table, registry, sampling controls, S-sample averaging."""
import math

import pytest
import torch

from lwta_plugin.eot import reduce_samples
from lwta_plugin.models import count_parameters, create_model, list_models, parse_name

# Reference doc section 1.4 (W+b exactly Verma & Swami's counts; IBP = t_pi + a + b per layer).
COUNTS = [
    ("lwta_ibp_softmax", "mnist", 330570, 73172, 0),
    ("lwta_ibp_softmax_u4", "mnist", 330570, 36916, 0),
    ("lwta_ibp_logistic", "mnist", 330570, 73172, 0),
    ("lwta_ibp_tanh16", "mnist", 330960, 73568, 0),
    ("lwta_ibp_tanh16_u4", "mnist", 330960, 37312, 0),
    ("lwta_ibp_logisticens10", "mnist", 205130, 7524, 0),
    ("lwta_ibp_tanhens16", "mnist", 401168, 12384, 0),
    ("lwta_ibp_softmax", "cifar10", 774026, 139140, 1792),
    ("lwta_ibp_softmax_u4", "cifar10", 774026, 69900, 1792),
    ("lwta_ibp_tanh16", "cifar10", 774416, 139536, 1792),
    ("lwta_ibp_tanh16_u4", "cifar10", 774416, 70296, 1792),
    ("lwta_ibp_logisticens10", "cifar10", 1193626, 24936, 4352),
    ("lwta_ibp_tanhens16", "cifar10", 2308752, 40704, 8704),
    ("relu_softmax", "mnist", 330570, 0, 0),
    ("lwta_tanh16", "mnist", 330960, 0, 0),
]


@pytest.mark.parametrize("name,dataset,weights,ibp,bn", COUNTS)
def test_parameter_counts_match_reference_table(name, dataset, weights, ibp, bn):
    assert count_parameters(create_model(name, dataset)) == {"weights": weights, "ibp": ibp, "batchnorm": bn}


def test_registry_names_roundtrip():
    names = list_models()
    assert "lwta_ibp_tanh16" in names and "relu_softmax" in names and "lwtamax_ibp_softmax_u4" in names
    for name in names:
        assert parse_name(name).name == name


@pytest.mark.parametrize("bad", ["lwta_ibp_tanh32", "relu_ibp_softmax", "gelu_softmax", "lwta_softmax_u3", ""])
def test_unknown_model_names_are_rejected(bad):
    with pytest.raises(ValueError):
        create_model(bad)


def test_unknown_dataset_rejected():
    with pytest.raises(ValueError, match="data set"):
        create_model("lwta_softmax", "svhn")


@pytest.mark.parametrize("name,dataset", [("lwta_ibp_tanh16", "mnist"), ("lwta_ibp_logisticens10", "mnist"),
                                          ("lwta_ibp_softmax", "cifar10")])
def test_forward_shapes_and_randomness(name, dataset):
    torch.manual_seed(0)
    m = create_model(name, dataset).eval()
    x = torch.rand(3, *m.input_shape)
    with torch.no_grad():
        a, b = m(x), m(x)
    assert a.shape == (3, 10) and torch.isfinite(a).all()
    assert m.stochastic and not torch.equal(a, b)
    with m.sampling("argmax"), torch.no_grad():
        assert not m.stochastic
        assert torch.equal(m(x), m(x))


def test_relu_and_lwtamax_models_are_deterministic():
    for name in ("relu_softmax", "lwtamax_tanh16"):
        m = create_model(name).eval()
        assert not m.stochastic
    assert create_model("lwtamax_ibp_softmax").eval().stochastic  # z is still sampled


def test_samples_average_probabilities():
    torch.manual_seed(0)
    m = create_model("lwta_ibp_softmax").eval()
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(5)
    with torch.no_grad():
        per_sample = m.forward_samples(x, 5)
    torch.manual_seed(5)
    with torch.no_grad(), m.using(samples=5):
        avg = m(x)
    assert torch.allclose(avg.exp().sum(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(avg, torch.log(torch.softmax(per_sample, -1).mean(0)), atol=1e-5)
    assert torch.equal(avg, reduce_samples(per_sample, "probs"))
    with torch.no_grad(), m.using(samples=5, output="raw"):
        torch.manual_seed(5)
        raw_avg = m(x)
        torch.manual_seed(5)
        assert torch.equal(raw_avg, reduce_samples(m.forward_samples(x, 5), "logits"))  # other outputs: mean scores


def test_output_modes():
    m = create_model("lwta_ibp_tanh16").eval()
    x = torch.rand(2, 1, 28, 28)
    with m.sampling("expected"), torch.no_grad():
        raw = m.raw(x)
        M = m.decoder.M
        with m.using(output="raw"):
            assert torch.allclose(m(x), raw @ M.T, atol=1e-5)
        with m.using(output="correlations"):
            assert torch.allclose(m(x), torch.tanh(raw) @ M.T, atol=1e-5)
        assert torch.allclose(m(x), torch.log(torch.relu(torch.tanh(raw) @ M.T) + 1e-6), atol=1e-5)
    with pytest.raises(ValueError, match="output"):
        m.output = "probs"


def test_kl_is_finite_and_training_step_reduces_loss():
    torch.manual_seed(0)
    m = create_model("lwta_ibp_softmax").train()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    losses = []
    for _ in range(8):
        loss, _ = m.loss(x, y)
        total = loss + m.kl() / 60000
        assert math.isfinite(total.item())
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_chunked_inference_matches_one_pass():
    model = create_model("lwta_ibp_softmax", "mnist").eval()
    x = torch.rand(7, 1, 28, 28)
    with model.sampling("expected"), torch.no_grad():  # deterministic: chunking must not change anything
        model.max_rows = 10_000
        ref = model.forward_samples(x, 5)
        for rows in (3, 7, 20):
            model.max_rows = rows
            assert torch.allclose(model.forward_samples_chunked(x, 5), ref, atol=1e-6)
    model.max_rows = 4  # random model: batches larger than max_rows are split, every sample is drawn
    out = model.forward_samples_chunked(x, 3)
    assert out.shape == (3, 7, 10) and torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1])


def test_reference_code_variant_names():
    from lwta_plugin.models import list_models, parse_name

    assert parse_name("lwta_ibp_softmax_refcode").variant == "refcode"
    assert "lwta_ibp_tanh16_refcode" in list_models() and "relu_softmax_refcode" not in list_models()
    with pytest.raises(ValueError, match="needs _ibp"):
        parse_name("lwta_softmax_refcode")
