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


# --------------------------------------------------------------------------------------------------------------
# public entry points: validated model inputs, labels, load_model arguments, damaged checkpoint bytes

_VALIDATED = {}


def _validated_model():
    if "m" not in _VALIDATED:
        from lwta_plugin.validation import enable_input_validation

        torch.manual_seed(0)
        _VALIDATED["m"] = enable_input_validation(create_model("lwta_softmax", samples=2).eval())
    return _VALIDATED["m"]


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool]
_SPECIAL = st.sampled_from([0.0, 1.0, 0.5, -1e-5, 1 + 1e-5, -0.5, 2.0, 255.0, 1e30, -1e30,
                            float("nan"), float("inf"), float("-inf")])


@settings(max_examples=30, deadline=None)
@given(shape=st.one_of(st.just([2, 1, 28, 28]), st.lists(st.integers(0, 3), max_size=5),
                       st.tuples(st.integers(0, 3), st.sampled_from([1, 3]), st.sampled_from([28, 32]),
                                 st.sampled_from([28, 32])).map(list)),
       dtype=st.sampled_from(_DTYPES), special=_SPECIAL, where=st.integers(0, 10 ** 6))
def test_validated_forward_gives_output_or_value_error(shape, dtype, special, where):
    model = _validated_model()
    x = torch.rand(*shape) if shape else torch.rand(())
    if x.numel():
        x.view(-1)[where % x.numel()] = special
    x = x.to(dtype) if dtype.is_floating_point else x.clamp(0, 1).to(dtype)
    try:
        with torch.no_grad():
            out = model(x)
    except ValueError as e:
        assert str(e).startswith("lwta_softmax (mnist): ") and "expected" in str(e)
    else:  # only valid input gets through: a non-empty float32 batch [B, 1, 28, 28] with finite values in [0, 1]
        assert dtype == torch.float32 and list(x.shape[1:]) == [1, 28, 28] and x.shape[0] > 0
        assert torch.isfinite(x).all() and x.min() >= -1e-4 and x.max() <= 1 + 1e-4
        assert out.shape == (x.shape[0], 10) and torch.isfinite(out).all()


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(-3, 13), min_size=0, max_size=5), n=st.integers(0, 5),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.float32]))
def test_check_labels_accepts_exactly_valid_labels(values, n, dtype):
    from lwta_plugin.validation import check_labels

    y = torch.tensor(values, dtype=torch.int64)
    if dtype == torch.uint8:
        y = y.clamp(0, 255)
    y = y.to(dtype)
    valid = (not dtype.is_floating_point and len(values) == n > 0 and bool(((y >= 0) & (y < 10)).all()))
    try:
        check_labels(y, 10, batch=n)
    except ValueError as e:
        assert not valid and str(e).startswith("labels: ") and "expected a 1-D integer tensor" in str(e)
    else:
        assert valid


@settings(max_examples=25, deadline=None)
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["lwta_ibp_tanh16", "relu_softmax", "lwta_ibp_tanh"]),
                      st.none(), st.integers()),
       dataset=st.one_of(st.sampled_from(["mnist", "cifar10", "fashion_mnist", "MNIST", "svhn", ""]), st.none()),
       threat=st.sampled_from(["Linf", "L2", "corruptions", "linf", ""]),
       samples=st.one_of(st.none(), st.integers(-2, 3), st.floats(0, 3), st.text(max_size=2)))
def test_load_model_arguments_fail_with_documented_errors(tmp_path_factory, name, dataset, threat, samples):
    from lwta_plugin import zoo

    empty = tmp_path_factory.getbasetemp() / "empty_store"  # no models shipped anywhere
    try:
        zoo.load_model(name, dataset=dataset, threat_model=threat, samples=samples, store=empty)
    except zoo.ModelNotAvailableError as e:  # a valid request: says how to train the model
        assert "lwta train --model" in str(e)
    except ValueError as e:
        assert str(e).startswith(("unknown ", "samples must be")), str(e)
    else:
        raise AssertionError("nothing to load, yet load_model returned")


_CKPT = {}


def _checkpoint_bytes():
    if "data" not in _CKPT:
        import io

        from lwta_plugin.checkpoint import save_checkpoint

        torch.manual_seed(0)
        model = create_model("lwta_ibp_softmax")
        buf = io.BytesIO()
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as d:
            save_checkpoint(Path(d) / "c.pt", model, {"name": model.config.name, "dataset": "mnist"})
            buf.write((Path(d) / "c.pt").read_bytes())
        _CKPT["data"], _CKPT["state"] = buf.getvalue(), model.state_dict()
    return _CKPT["data"], _CKPT["state"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10 ** 9), st.integers(1, 255)), min_size=1, max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 10 ** 9)))
def test_damaged_checkpoint_bytes_are_refused_or_harmless(tmp_path, edits, cut):
    from lwta_plugin import zoo
    from lwta_plugin.checkpoint import CheckpointError

    data, state = _checkpoint_bytes()
    damaged = bytearray(data)
    for pos, xor in edits:
        damaged[pos % len(damaged)] ^= xor
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(damaged))
    try:
        model = zoo.load_model("lwta_ibp_softmax", checkpoint=path)
    except CheckpointError:
        pass  # refused with a named error
    else:  # the damage missed everything that matters (zip padding, meta data): the weights are intact
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
