"""Expectation over Transformation (EOT, Athalye et al. 2018) for random models, as batched passes.

A stochastic :class:`~lwta_plugin.models.LWTANet` draws independent LWTA winners and IBP utilities for every sample
group of a batched pass (``model.raw(x, n)`` / ``model.forward_samples(x, n)``), so ``n`` samples of the model's
randomness cost one forward pass over ``n * B`` rows instead of a Python loop over ``n`` passes.

* :class:`EOT` wraps a model into an ``nn.Module`` whose output is averaged over ``n_samples`` draws; any attack
  that takes a model (torchattacks, AutoAttack) can attack it.
* :func:`eot_gradient` is the classic EOT estimate ``mean_s grad L(f_s(x), y)`` with bounded memory (one backward
  per chunk), plus the averaged prediction at ``x`` that attacks use to track their best iterate.
* :func:`eot_predict` is the scoring-only path (``torch.inference_mode``).

Models without ``raw``/``forward_samples`` are supported. One that declares its randomness (``model.stochastic``,
or ``stochastic=`` given here) gets the input repeated in the batch when random (valid when the randomness is drawn
independently per row, e.g. dropout) and a single pass when deterministic. One that declares nothing (a model from
outside this package) is probed once per model and train/eval mode (:func:`probe_randomness`): if two passes on
the same input differ it is treated as random, with a warning, never silently scored with one pass; randomness
drawn once per pass (all rows of a pass alike) is then averaged over separate passes.
"""
from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

Reduction = Literal["logits", "probs"]
REDUCTIONS = ("logits", "probs")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Input elements per batched pass when the chunk is chosen automatically. Measured on CPU (1 thread) with the
# MNIST and CIFAR-10 networks: forward+backward time per row is lowest at roughly 10-80 rows per pass (a few
# 10^4 input elements) and grows by 30-50 % at 400 rows, so moderate chunks beat one giant batch.
INPUT_ELEMENTS_PER_PASS = 1 << 16
# Above this many bytes of saved activations, EOT.forward recomputes each chunk in the backward pass
# (activation checkpointing) instead of keeping all chunks' graphs alive.
GRAPH_BYTES_BUDGET = 1 << 30


# How an undeclared model's output varies, probed once per model and train/eval mode: {model: {training: kind}}
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
PROBE_ROWS = 8  # input rows a probe passes (twice)
DETERMINISTIC, PER_ROW, PER_PASS = "deterministic", "per-row", "per-pass"


def is_stochastic(model: nn.Module, stochastic: bool | None = None) -> bool:
    """Whether ``model``'s output is random: ``stochastic`` if given, else ``model.stochastic``, else (a model that
    declares nothing) what :func:`probe_randomness` found for it, False if it was never probed."""
    if stochastic is not None:
        return bool(stochastic)
    if hasattr(model, "stochastic"):
        return bool(model.stochastic)
    try:
        probed = _PROBED.get(model, {})
    except TypeError:
        return False
    return probed.get(bool(getattr(model, "training", False)), DETERMINISTIC) != DETERMINISTIC


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    # a tolerance, not equality: nondeterministic (GPU) kernels must not make a deterministic model look random
    return a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def probe_randomness(model: nn.Module, x: torch.Tensor) -> str:
    """How the output of ``model`` (which does not declare ``stochastic``) varies on the same input: ``per-row``
    (two copies of the input in one pass differ: repeating the input in a batch draws independently),
    ``per-pass`` (copies in one pass agree but two passes differ) or ``deterministic``. Probed on the first
    :data:`PROBE_ROWS` rows of ``x`` without autograd and without moving the caller's random stream; cached per
    model and train/eval mode; a random result is announced by a RuntimeWarning."""
    try:
        cache = _PROBED.setdefault(model, {})
    except TypeError:  # not weakly referenceable: probed on every call
        cache = {}
    mode = bool(getattr(model, "training", False))
    if mode in cache:
        return cache[mode]
    xb = x.detach()[:PROBE_ROWS]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        pair = model(torch.cat([xb, xb]))
        first, second = pair[:len(xb)], pair[len(xb):]
        if _differ(first, second):
            kind = PER_ROW
        else:
            kind = PER_PASS if _differ(first, model(xb)) else DETERMINISTIC
    cache[mode] = kind
    if kind != DETERMINISTIC:
        how = ("the draws are averaged in batched passes of the repeated input. Declare it (`model.stochastic = "
               "True`, or stochastic=True) to skip this probe" if kind == PER_ROW else
               "copies of the input within one pass agree (its randomness is drawn once per pass), so the draws are "
               "averaged over separate passes, one per draw")
        warnings.warn(f"EOT: {type(model).__name__} does not declare whether it is random (no `stochastic` "
                      f"attribute), and two passes on the same input differed: it is treated as random; {how}.",
                      RuntimeWarning, stacklevel=3)
    return kind


def draw_plan(model: nn.Module, x: torch.Tensor, n_samples: int, stochastic: bool | None = None) -> tuple[int, bool]:
    """``(draws, separate_passes)`` for ``n_samples`` requested draws of ``model`` at ``x``: one draw for a
    deterministic model; for a model that declares nothing, what :func:`probe_randomness` finds."""
    n = int(n_samples)
    if n <= 1 or stochastic is not None or hasattr(model, "stochastic"):
        return (n if is_stochastic(model, stochastic) else 1), False
    kind = probe_randomness(model, x)
    return (1, False) if kind == DETERMINISTIC else (n, kind == PER_PASS)


def auto_chunk_size(n_samples: int, batch: int, input_numel: int) -> int:
    """Samples per batched pass: as many as fit in :data:`INPUT_ELEMENTS_PER_PASS` input elements (at least 1)."""
    rows = max(1, INPUT_ELEMENTS_PER_PASS // max(1, input_numel))
    return int(min(max(1, n_samples), max(1, rows // max(1, batch))))


def chunk_sizes(n: int, chunk: int) -> list[int]:
    """``n`` split into parts of at most ``chunk``."""
    return [min(chunk, n - i) for i in range(0, n, chunk)]


def sample_outputs(model: nn.Module, x: torch.Tensor, n: int, outputs: tuple[str, ...] = ("logits",),
                   separate_passes: bool = False) -> tuple[torch.Tensor, ...]:
    """Model outputs for ``n`` independent draws of the randomness in one batched pass, each ``[n, B, C]``
    (the caller decides ``n``: see :func:`draw_plan`).

    For an LWTANet all ``outputs`` (decoder outputs: ``logits``, ``correlations``, ``raw``) come from the same
    draws. Other models have a single output, returned for every requested name; ``separate_passes``: one pass per
    draw instead of the repeated input (randomness drawn once per pass).
    """
    B = x.shape[0]
    if hasattr(model, "raw") and hasattr(model, "decoder"):
        raw = model.raw(x, n)
        return tuple(model.decoder(raw, o).view(n, B, -1) for o in outputs)
    if hasattr(model, "forward_samples"):
        return tuple(model.forward_samples(x, n, o) for o in outputs)
    if separate_passes and n > 1:
        out = torch.stack([model(x).view(B, -1) for _ in range(n)])
    else:
        xr = x.repeat(n, *([1] * (x.dim() - 1))) if n > 1 else x
        out = model(xr).view(n, B, -1)
    return (out,) * len(outputs)


def reduce_chunk(out: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """One chunk of draws ``[k, B, C]`` reduced to ``[B, C]``: the sum of the outputs (``logits``) or the logsumexp
    of the log-probabilities (``probs``); :func:`combine_chunks` turns the chunks of ``n`` draws into their mean."""
    if reduction == "logits":
        return out.sum(0)
    if reduction == "probs":
        return torch.logsumexp(torch.log_softmax(out, -1), 0)
    raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def combine_chunks(chunks: Sequence[torch.Tensor], n: int, reduction: Reduction) -> torch.Tensor:
    """The reduction of ``n`` draws from their chunks' :func:`reduce_chunk`: the mean output (``logits``) or the
    log of the mean softmax probabilities (``probs``), ``[B, C]``."""
    if reduction == "logits":
        return torch.stack(list(chunks)).sum(0) / n
    if reduction == "probs":
        return torch.logsumexp(torch.stack(list(chunks)), 0) - math.log(n)
    raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")


def reduce_samples(out: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Average ``[n, B, C]`` outputs: ``logits`` the mean, ``probs`` the log of the mean softmax probabilities.

    Computed as one chunk of :func:`reduce_chunk` and :func:`combine_chunks`, so that a reduction in one pass and
    one in chunks (:class:`EOT`) are the same computation."""
    return combine_chunks([reduce_chunk(out, reduction)], out.shape[0], reduction)


def _saved_bytes_per_row(model: nn.Module, x: torch.Tensor, output: str | None) -> int:
    """Bytes of activations autograd saves for one input row (one probe pass)."""
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if not t.is_leaf and key not in seen:  # leaves are weights, buffers and the input: not per-row memory
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    probe = x[:1].detach().requires_grad_()
    devices = [x.device] if x.device.type == "cuda" else []
    # fork_rng: the probe must not shift the random stream of the attack that triggered it.
    with torch.random.fork_rng(devices=devices), torch.enable_grad(), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sample_outputs(model, probe, 1, (output or "logits",))
    return total


class EOT(nn.Module):
    """A model whose forward averages ``n_samples`` draws of ``model``'s randomness, computed in batched passes.

    reduction: ``logits`` returns the mean of the outputs over draws (so the gradient of any linear function of
    it is the mean of the per-draw gradients); ``probs`` returns the log of the mean softmax probabilities (the
    model's inference rule: softmax of it is the averaged prediction). output: decoder output of an LWTANet
    (``logits``, ``correlations``, ``raw``; default the model's current one). chunk_size: draws per batched
    pass (default :func:`auto_chunk_size`). checkpoint: recompute chunks in the backward pass to bound memory;
    ``None`` decides from a probe of the activation size per row (:data:`GRAPH_BYTES_BUDGET`).

    A deterministic model (``is_stochastic`` False) is called once and its output returned unchanged; so is a
    single draw (``n_samples=1``). A model that does not declare ``stochastic`` is probed on the first call
    (:func:`draw_plan`): random ones are averaged (with a warning), never scored with one pass. The wrapper does
    not change the model's train/eval mode.
    """

    def __init__(self, model: nn.Module, n_samples: int, chunk_size: int | None = None,
                 reduction: Reduction = "logits", output: str | None = None, stochastic: bool | None = None,
                 checkpoint: bool | None = None):
        super().__init__()
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
        self.model = model
        self.n_samples, self.chunk_size, self.reduction = int(n_samples), chunk_size, reduction
        self.output, self.stochastic_override, self.checkpoint = output, stochastic, checkpoint
        self._row_bytes: dict[tuple, int] = {}

    @property
    def stochastic(self) -> bool:
        return is_stochastic(self.model, self.stochastic_override)

    @property
    def n_classes(self) -> int | None:
        return getattr(self.model, "n_classes", None)

    def _draws(self, x: torch.Tensor, n: int, separate_passes: bool = False) -> torch.Tensor:
        """The wrapped model's outputs for ``n`` draws, ``[n, B, C]``."""
        return sample_outputs(self.model, x, n, (self.output or getattr(self.model, "output", "logits"),),
                              separate_passes)[0]

    def _use_checkpoint(self, x: torch.Tensor, n_chunks: int) -> bool:
        if n_chunks < 2 or not torch.is_grad_enabled():
            return False
        if self.checkpoint is not None:
            return bool(self.checkpoint)
        key = (tuple(x.shape[1:]), x.dtype, x.device, self.output)
        if key not in self._row_bytes:
            self._row_bytes[key] = _saved_bytes_per_row(self.model, x, self.output)
        return self._row_bytes[key] * x.shape[0] * self.n_samples > GRAPH_BYTES_BUDGET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, separate = draw_plan(self.model, x, self.n_samples, self.stochastic_override)
        if n == 1:
            return self._draws(x, 1)[0]
        chunk = self.chunk_size or auto_chunk_size(n, x.shape[0], x[0].numel())
        sizes = chunk_sizes(n, int(chunk))
        ckpt = self._use_checkpoint(x, len(sizes))
        reduced = []
        for k in sizes:
            def draw_and_reduce(xc: torch.Tensor, k: int = k) -> torch.Tensor:
                return reduce_chunk(self._draws(xc, k, separate), self.reduction)

            reduced.append(_checkpoint(draw_and_reduce, x, use_reentrant=False) if ckpt else draw_and_reduce(x))
        return combine_chunks(reduced, n, self.reduction)


# ------------------------------------------------------------------------------------------------- losses


def margin_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CW margin ``max_{j != y} out_j - out_y`` per row (positive = misclassified); attacks maximise it."""
    true = out.gather(1, y[:, None])[:, 0]
    other = out.masked_fill(F.one_hot(y, out.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


def ce_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row."""
    return F.cross_entropy(out, y, reduction="none")


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "margin": margin_loss}


def get_loss(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


@dataclass
class EOTGradient:
    """Result of :func:`eot_gradient`: the gradient w.r.t. the input, the per-example EOT loss ``[B]`` and the
    log of the mean class probabilities ``[B, C]`` of the decision output over the same draws (detached)."""

    grad: torch.Tensor
    loss: torch.Tensor
    log_probs: torch.Tensor


def eot_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str | LossFn = "ce",
                 n_samples: int = 1, chunk_size: int | None = None, output: str = "logits",
                 stochastic: bool | None = None) -> EOTGradient:
    """EOT gradient ``(1/n) sum_s grad_x loss(f_s(x), y)`` over ``n_samples`` independent draws.

    The draws are computed in batched passes of ``chunk_size`` draws (default :func:`auto_chunk_size`), each
    followed by its own backward pass, so memory stays at one chunk. ``loss(out, y)`` returns one value per row
    (``ce``, ``margin`` or a callable) on the decoder output ``output``; decisions use the ``logits`` output of
    the same draws. A deterministic model gets a single pass whatever ``n_samples`` (an undeclared one is probed:
    :func:`draw_plan`).
    """
    n, separate = draw_plan(model, x, n_samples, stochastic)
    if n < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    loss_fn = get_loss(loss)
    B = x.shape[0]
    chunk = int(chunk_size or auto_chunk_size(n, B, x[0].numel()))
    xg = x.detach().requires_grad_()
    grad = torch.zeros_like(xg)
    total = x.new_zeros(B)
    reduced = []
    outputs = (output, "logits") if output != "logits" else ("logits",)
    with torch.enable_grad():
        for k in chunk_sizes(n, chunk):
            outs = sample_outputs(model, xg, k, outputs, separate)
            per = loss_fn(outs[0].reshape(k * B, -1), y.repeat(k)).view(k, B)
            (g,) = torch.autograd.grad(per.sum() / n, xg)
            grad += g
            total += per.detach().sum(0)
            reduced.append(reduce_chunk(outs[-1].detach(), "probs"))
    return EOTGradient(grad, total / n, combine_chunks(reduced, n, "probs"))


@torch.inference_mode()
def eot_predict(model: nn.Module, x: torch.Tensor, n_samples: int = 1, chunk_size: int | None = None,
                stochastic: bool | None = None) -> torch.Tensor:
    """Log of the mean class probabilities over ``n_samples`` draws, ``[B, C]`` (scoring only, no autograd)."""
    n, separate = draw_plan(model, x, n_samples, stochastic)
    chunk = int(chunk_size or auto_chunk_size(n, x.shape[0], x[0].numel()))
    reduced = [reduce_chunk(sample_outputs(model, x, k, ("logits",), separate)[0], "probs")
               for k in chunk_sizes(n, chunk)]
    return combine_chunks(reduced, n, "probs")


@torch.inference_mode()
def eot_predictions(model: nn.Module, x: torch.Tensor, k: int, n_samples: int = 1,
                    stochastic: bool | None = None) -> torch.Tensor:
    """``k`` independent predictions, each :func:`eot_predict` of ``n_samples`` draws, ``[k, B, C]``, computed in
    batched passes of whole predictions (a deterministic model: one prediction, repeated)."""
    n, separate = draw_plan(model, x, k * n_samples, stochastic)
    if n == 1:
        return eot_predict(model, x, 1, stochastic=False).expand(k, -1, -1)
    B, s = x.shape[0], n_samples
    per = max(1, auto_chunk_size(n, B, x[0].numel()) // s)  # predictions per pass
    out = []
    for c in chunk_sizes(k, per):
        draws = sample_outputs(model, x, c * s, ("logits",), separate)[0].view(c, s, B, -1)
        out.append(reduce_samples(draws.transpose(0, 1).reshape(s, c * B, -1), "probs").view(c, B, -1))
    return torch.cat(out)

