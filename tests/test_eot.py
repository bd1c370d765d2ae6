"""EOT wrapper: batched passes, chunking, same expected gradient as a loop over samples, exact on deterministic
models."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from _tiny_models import quadrant_data, tiny_lwta, trained_cnn

from lwta_plugin import eot as eot_mod
from lwta_plugin.eot import (
    EOT,
    auto_chunk_size,
    combine_chunks,
    eot_gradient,
    eot_predict,
    reduce_chunk,
    reduce_samples,
)

Z_MAX = 4.0  # |z| bound per projection: with 12 projections a false alarm has probability < 1e-3


@pytest.fixture(scope="module")
def data():
    return quadrant_data(3, seed=5)


def _directions(pilot: torch.Tensor | None = None) -> torch.Tensor:
    """Fixed random unit directions of the input space (plus the pilot gradient's, which has the most signal)."""
    g = torch.Generator().manual_seed(123)
    u = torch.randn(12, 3 * 64, generator=g)
    if pilot is not None:
        u[0] = pilot.flatten()
    return u / u.norm(dim=1, keepdim=True)


def _loop_projections(model, x, y, loss, n, directions):
    """Reference: ``n`` independent single passes, one autograd call each; projections of each gradient."""
    rows = []
    for _ in range(n):
        xg = x.clone().requires_grad_()
        out = model.forward_samples(xg, 1)[0]
        (g,) = torch.autograd.grad(loss(out).sum(), xg)
        rows.append(directions @ g.flatten())
    return torch.stack(rows)  # [n, K]


def _z(batched: torch.Tensor, loop: torch.Tensor) -> torch.Tensor:
    """Two-sample z statistic per projection: batched estimates (each a mean of n draws) vs single draws."""
    se = (batched.var(0) / len(batched) + loop.var(0) / len(loop)).sqrt()
    return (batched.mean(0) - loop.mean(0)) / se


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_eot_gradient_matches_loop_within_monte_carlo_error(data, chunk_size):
    torch.manual_seed(0)
    model = tiny_lwta("softmax")
    x, y = data
    directions = _directions(eot_gradient(model, x, y, "ce", 400).grad)  # independent pilot estimate
    n, M = 20, 30
    loop = _loop_projections(model, x, y, lambda out: F.cross_entropy(out, y, reduction="none"), n * M, directions)
    batched = torch.stack([directions @ eot_gradient(model, x, y, "ce", n, chunk_size).grad.flatten()
                           for _ in range(M)])
    z = _z(batched, loop)
    assert z.abs().max() < Z_MAX, z
    # The bound is not vacuous: the same statistic rejects an estimate biased by 25 %.
    assert _z(1.25 * batched, loop).abs().max() > Z_MAX


@pytest.mark.parametrize("checkpoint", [False, True])
def test_eot_module_gradient_matches_loop(data, checkpoint):
    """grad of a linear function of EOT(x) (reduction logits) = mean of per-draw gradients, chunked or not."""
    torch.manual_seed(1)
    model = tiny_lwta("tanh16")
    x, _ = data
    w = torch.randn(3, model.n_classes, generator=torch.Generator().manual_seed(7))
    f = EOT(model, 16, chunk_size=5, reduction="logits", output="raw", checkpoint=checkpoint)
    directions = _directions()
    loop = _loop_projections(_RawModel(model), x, None,
                             lambda out: (w * out).sum(1), 16 * 25, directions)
    batched = []
    for _ in range(25):
        xg = x.clone().requires_grad_()
        (g,) = torch.autograd.grad((w * f(xg)).sum(), xg)
        batched.append(directions @ g.flatten())
    z = _z(torch.stack(batched), loop)
    assert z.abs().max() < Z_MAX, z


class _RawModel:
    """forward_samples on the raw codeword correlations (what EOT(output="raw") averages)."""

    def __init__(self, model):
        self.model = model

    def forward_samples(self, x, n):
        return self.model.forward_samples(x, n, "raw")


def test_checkpointing_reproduces_the_same_draws(data, monkeypatch):
    model = tiny_lwta("softmax")
    x, _ = data
    grads = []
    for ckpt in (False, True, None):
        if ckpt is None:
            monkeypatch.setattr(eot_mod, "GRAPH_BYTES_BUDGET", 0)  # auto mode must now choose checkpointing
        f = EOT(model, 9, chunk_size=4, reduction="probs", checkpoint=ckpt)
        torch.manual_seed(3)
        xg = x.clone().requires_grad_()
        out = f(xg)
        (g,) = torch.autograd.grad(out[:, 0].sum(), xg)
        grads.append((out.detach(), g))
    for out, g in grads[1:]:
        assert torch.allclose(out, grads[0][0], atol=1e-6) and torch.allclose(g, grads[0][1], atol=1e-6)


def test_reductions_average_the_same_draws(data):
    model = tiny_lwta("softmax")
    x, _ = data
    torch.manual_seed(4)
    outs = model.forward_samples(x, 12)
    torch.manual_seed(4)
    probs = EOT(model, 12, chunk_size=12, reduction="probs")(x)
    torch.manual_seed(4)
    logits = EOT(model, 12, chunk_size=12, reduction="logits")(x)
    torch.manual_seed(4)
    pred = eot_predict(model, x, 12, chunk_size=12)
    assert torch.allclose(probs.exp(), outs.softmax(-1).mean(0), atol=1e-6)
    assert torch.allclose(logits, outs.mean(0), atol=1e-6)
    assert torch.allclose(pred, probs, atol=1e-6)
    # model.forward averages the same way: log of the mean probabilities
    torch.manual_seed(4)
    with model.using(samples=12):
        assert torch.allclose(model(x).softmax(-1), probs.exp(), atol=1e-6)


def test_one_reduction_for_the_model_and_the_wrapper(data):
    """``reduce_samples`` is the computation of ``LWTANet.forward`` and, chunk by chunk, of ``EOT.forward``:
    the same draws give bit-identical results."""
    model = tiny_lwta("softmax")
    x, _ = data
    torch.manual_seed(4)
    outs = model.forward_samples(x, 6)
    for reduction in ("logits", "probs"):
        torch.manual_seed(4)
        assert torch.equal(EOT(model, 6, chunk_size=6, reduction=reduction)(x), reduce_samples(outs, reduction))
        torch.manual_seed(4)
        chunks = [reduce_chunk(model.forward_samples(x, k), reduction) for k in (4, 2)]
        torch.manual_seed(4)
        assert torch.equal(EOT(model, 6, chunk_size=4, reduction=reduction)(x), combine_chunks(chunks, 6, reduction))
    torch.manual_seed(4)
    with model.using(samples=6):
        assert torch.equal(model(x), reduce_samples(outs, "probs"))
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_samples(outs, "median")


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls, handle


def test_batched_passes_not_a_loop(data):
    model = tiny_lwta("softmax")
    x, y = data
    calls, handle = _count_calls(model.body)
    try:
        EOT(model, 20)(x)
        assert calls == [60]  # one pass, the input repeated 20 times
        calls.clear()
        EOT(model, 20, chunk_size=7, checkpoint=False)(x)
        assert calls == [21, 21, 18]
        calls.clear()
        f = EOT(model, 20, chunk_size=7)  # auto checkpointing probes one row once per input shape
        f(x)
        f(x)
        assert calls == [1, 21, 21, 18, 21, 21, 18]
        calls.clear()
        eot_gradient(model, x, y, "margin", 20, chunk_size=8, output="raw")
        assert calls == [24, 24, 12]  # raw and decision outputs come from the same pass
    finally:
        handle.remove()


def test_deterministic_models_are_unchanged_exactly(data):
    x, y = data
    cnn = trained_cnn()
    calls, handle = _count_calls(cnn)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a deterministic model is not announced as random
            out = EOT(cnn, 20, reduction="probs")(x)
        # it declares no `stochastic`: probed once (two copies in one pass, then one pass), then a single pass
        assert calls == [6, 3, 3] and torch.equal(out, cnn(x))
        calls.clear()
        assert torch.equal(EOT(cnn, 20, reduction="probs")(x), out) and calls == [3]
    finally:
        handle.remove()
    xg = x.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(F.cross_entropy(cnn(xg), y, reduction="sum"), xg)
    assert torch.equal(eot_gradient(cnn, x, y, "ce", 20).grad, g_ref)
    with pytest.raises(ValueError):
        EOT(cnn, 0)
    model = tiny_lwta("tanh16")
    with model.sampling("argmax"), model.using(samples=5):
        assert not model.stochastic
        calls, handle = _count_calls(model.body)
        try:
            out = EOT(model, 20)(x)
            assert calls == [3] and torch.equal(out, model(x))
        finally:
            handle.remove()
        xg = x.clone().requires_grad_()
        (g_ref,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        assert torch.equal(eot_gradient(model, x, y, "ce", 20).grad, g_ref)


class NoisyNet(torch.nn.Module):
    """A random model from outside the package: adds Gaussian noise to a linear map, declares nothing."""

    def __init__(self, per_pass: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(64, 4)
        self.per_pass = per_pass  # one noise draw shared by every row of a pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        noise = torch.randn(1 if self.per_pass else out.shape[0], out.shape[1])
        return out + noise


@pytest.mark.parametrize("per_pass", [False, True])
def test_undeclared_random_models_are_averaged_not_passed_once(data, per_pass):
    """EOT(model, n) on a random model without a `stochastic` attribute averages n draws (with a warning saying
    so), whether its noise is drawn per row or once per pass; eot_gradient and eot_predict do the same."""
    model = NoisyNet(per_pass)
    x, y = data
    assert not hasattr(model, "stochastic")
    with torch.no_grad():
        clean = model.linear(x.flatten(1))
    torch.manual_seed(1)
    with pytest.warns(RuntimeWarning, match=r"NoisyNet does not declare whether it is random.*treated as random"):
        out = EOT(model, 400)(x)
    # one pass would be off by ~N(0, 1) per logit; the mean of 400 draws is within ~0.05
    assert (out - clean).abs().max() < 0.3, (out - clean).abs().max()
    assert EOT(model, 400).stochastic
    calls, handle = _count_calls(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # probed already: no second warning, no probe passes
            EOT(model, 20, chunk_size=20)(x)
            assert calls == ([3] * 20 if per_pass else [60])
            calls.clear()
            eot_gradient(model, x, y, "ce", 50, chunk_size=50)
            assert sum(calls) == 50 * 3 and len(calls) == (50 if per_pass else 1)
            calls.clear()
            probs = eot_predict(model, x, 40, chunk_size=40).exp()
            assert sum(calls) == 40 * 3 and (probs.sum(1) - 1).abs().max() < 1e-5
    finally:
        handle.remove()


def test_auto_chunk_size_bounds_rows_per_pass():
    assert auto_chunk_size(20, 100, 784) == 1  # a full batch is already a moderate pass
    assert auto_chunk_size(20, 4, 784) == 20
    assert auto_chunk_size(40, 10, 3072) == 2
    assert auto_chunk_size(5, 1, 1) == 5
    rows = auto_chunk_size(64, 8, 784) * 8 * 784
    assert rows <= eot_mod.INPUT_ELEMENTS_PER_PASS


def test_torchattacks_accepts_the_wrapper(data):
    torchattacks = pytest.importorskip("torchattacks")
    model = tiny_lwta("softmax")
    x, y = data
    torch.manual_seed(0)
    atk = torchattacks.PGD(EOT(model, 4, reduction="probs"), eps=0.1, alpha=0.05, steps=2)
    x_adv = atk(x, y)
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert 0 <= x_adv.min() and x_adv.max() <= 1 and math.isfinite(x_adv.sum().item())
