"""Fuzz (hypothesis) over layer inputs and model configs: no crash other than the documented errors."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwta_plugin.layers import ACTIVATIONS, Sampling, StochasticConv2d, StochasticLinear, set_sampling
from lwta_plugin.models import CODES, create_model, parse_name

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
winner_modes = st.sampled_from(["sample", "concrete", "argmax", "expected"])
z_modes = st.sampled_from(["sample", "concrete", "expected", "ones"])
finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@FAST
@given(U=st.integers(1, 5), K=st.integers(1, 6), din=st.integers(1, 9), batch=st.integers(1, 4), n=st.integers(1, 3),
       act=st.sampled_from(ACTIVATIONS), ibp=st.booleans(), winner=winner_modes, zmode=z_modes,
       train=st.booleans(), scale=st.floats(1e-3, 1e3), st_=st.booleans())
def test_linear_layer_any_config(U, K, din, batch, n, act, ibp, winner, zmode, train, scale, st_):
    layer = StochasticLinear(din, K * U, U=U, activation=act, ibp=ibp)
    layer.train(train)
    set_sampling(layer, Sampling(winner=winner, z=zmode, straight_through=st_))
    x = (torch.randn(n * batch, din) * scale).requires_grad_(True)
    out = layer(x, n)
    assert out.shape == (n * batch, K * U)
    assert torch.isfinite(out).all()
    (out.sum() + layer.kl()).backward()
    assert torch.isfinite(x.grad).all()
    if act == "lwta" and not train and winner in ("sample", "argmax"):
        assert ((out.view(-1, K, U) != 0).sum(-1) <= 1).all()


@FAST
@given(U=st.integers(1, 4), K=st.integers(1, 4), cin=st.integers(1, 3), k=st.integers(1, 5), stride=st.integers(1, 2),
       size=st.integers(1, 9), n=st.integers(1, 3), act=st.sampled_from(ACTIVATIONS), ibp=st.booleans(),
       winner=winner_modes, zmode=z_modes, train=st.booleans(), bn=st.booleans())
def test_conv_layer_any_config(U, K, cin, k, stride, size, n, act, ibp, winner, zmode, train, bn):
    layer = StochasticConv2d(cin, K * U, k, stride, U=U, activation=act, ibp=ibp, batchnorm=bn)
    layer.train(train)
    set_sampling(layer, Sampling(winner=winner, z=zmode))
    batch = 2 if (bn and train) else 1
    x = torch.randn(n * batch, cin, size, size, requires_grad=True)
    out = layer(x, n)
    assert out.shape == (n * batch, K * U, math.ceil(size / stride), math.ceil(size / stride))
    assert torch.isfinite(out).all()
    (out.sum() + layer.kl()).backward()
    assert torch.isfinite(x.grad).all()


@FAST
@given(values=st.lists(finite, min_size=4, max_size=4))
def test_extreme_activations_stay_finite(values):
    layer = StochasticLinear(1, 4, U=2, activation="lwta", ibp=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values).view(4, 1))
    for train in (True, False):
        layer.train(train)
        out = layer(torch.ones(3, 1))
        assert torch.isfinite(out).all() and torch.isfinite(layer.kl())


@settings(max_examples=25, deadline=None)
@given(name=st.text(min_size=0, max_size=30))
def test_arbitrary_model_names_give_value_error(name):
    try:
        cfg = parse_name(name)
    except ValueError as e:
        assert "model" in str(e) or "U" in str(e) or "ReLU" in str(e)
    else:
        assert cfg.code in CODES


@settings(max_examples=8, deadline=None)
@given(act=st.sampled_from(["relu", "lwtamax", "lwta"]), ibp=st.booleans(), code=st.sampled_from(CODES),
       u4=st.booleans(), samples=st.integers(1, 3), output=st.sampled_from(["logits", "correlations", "raw"]))
def test_every_model_config_runs(act, ibp, code, u4, samples, output):
    name = f"{act}{'_ibp' if ibp else ''}_{code}{'_u4' if u4 else ''}"
    if act == "relu" and (ibp or u4):
        with pytest.raises(ValueError):
            create_model(name)
        return
    m = create_model(name, samples=samples, output=output).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
