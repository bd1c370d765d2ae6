"""A model from outside the plugin (any ``nn.Module`` mapping images in [0, 1] to class logits) with the interface
the evaluation runner drives (:class:`UserModel`), and the measurement of its randomness.

The runner calls ``model.eval()``, ``model.sampling(name)``, ``model.using(samples=..., output="logits")``,
``model.stochastic`` and ``model.n_classes``; the EOT attacks draw ``n`` passes through
``model.forward_samples(x, n)``. :class:`UserModel` provides them for a plain logits model:

* randomness: declared (``stochastic=True/False``, or a ``stochastic`` attribute of the model) or measured by
  repeated passes on the same images (:func:`measure_randomness`); both are recorded. A model declared
  deterministic whose passes differ is refused. How the draws vary decides how ``n`` draws are computed: one pass
  over the repeated input when copies of an image in one pass differ (``per-row``), else ``n`` separate passes
  (``per-pass``; also used for a model declared random that looked deterministic).
* ``samples``: a prediction averages the class probabilities of ``samples`` passes (1: the model's own output).
* ``sampling``: only the model as given (``"paper"``, the protocols' default) exists; LWTA samplers
  (``concrete``, ``argmax``, ``expected``) raise. ``sampling("paper", straight_through=True)`` is BPDA's setting:
  the forward pass of the random model, the gradient of the user's surrogate (straight-through, Athalye et al.
  2018); without a surrogate it raises.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..eot import reduce_samples
from ..models import InferenceSamples

DETERMINISTIC, PER_ROW, PER_PASS = "deterministic", "per-row", "per-pass"
PROBE_ROWS = 8  # images a measurement passes
PROBE_REPEATS = 3  # passes compared per measurement
MODEL_SAMPLING = "paper"  # the protocols' sampling name for "the model as given"


def _differ(a: torch.Tensor, b: torch.Tensor) -> bool:
    # a tolerance, not equality: nondeterministic kernels must not make a deterministic model look random
    return a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def check_logits(out: object, n: int, where: str) -> torch.Tensor:
    """``out`` if it is a finite ``[n, C]`` float tensor with C >= 2 (class logits); ValueError naming ``where``."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"{where} returned {type(out).__name__}, not a tensor of class logits")  # noqa: TRY004
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 2 or not out.is_floating_point():
        raise ValueError(f"{where} returned {out.dtype} of shape {tuple(out.shape)} for {n} images; expected class "
                         f"logits of shape ({n}, n_classes) with n_classes >= 2")
    if not torch.isfinite(out).all():
        raise ValueError(f"{where} returned NaN or infinite logits")
    return out


def measure_randomness(model: nn.Module, x: torch.Tensor, rows: int = PROBE_ROWS,
                       repeats: int = PROBE_REPEATS) -> str:
    """How ``model``'s output varies on the same images (its current train/eval mode): ``per-row`` (two copies of
    an image in one pass differ), ``per-pass`` (copies in a pass agree, passes differ) or ``deterministic`` (every
    pass equal), from ``repeats`` passes over the first ``rows`` images of ``x``. Does not move the caller's random
    stream."""
    xb = x.detach()[:rows]
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        first = check_logits(model(xb), len(xb), type(model).__name__)
        for _ in range(repeats):
            pair = model(torch.cat([xb, xb]))
            if _differ(pair[:len(xb)], pair[len(xb):]):
                return PER_ROW
            if _differ(first, pair[:len(xb)]) or _differ(first, model(xb)):
                return PER_PASS
    return DETERMINISTIC


class UserModel(InferenceSamples, nn.Module):
    """``model`` (images in [0, 1] -> logits) behind the runner's model interface (module docstring).

    ``draws``: :data:`PER_ROW`, :data:`PER_PASS` or :data:`DETERMINISTIC` (see :func:`measure_randomness`);
    ``surrogate``: optional deterministic stand-in for BPDA's backward pass (and the transfer attack)."""

    def __init__(self, model: nn.Module, draws: str, n_classes: int, samples: int = 1,
                 surrogate: nn.Module | None = None):
        super().__init__()
        if draws not in (DETERMINISTIC, PER_ROW, PER_PASS):
            raise ValueError(f"draws must be {DETERMINISTIC}, {PER_ROW} or {PER_PASS}, got {draws!r}")
        self.model, self.surrogate, self.draws, self.n_classes = model, surrogate, draws, int(n_classes)
        self.samples = samples
        self._straight_through = False

    @property
    def stochastic(self) -> bool:
        """Whether two predictions of the same image can differ."""
        return self.draws != DETERMINISTIC

    @contextlib.contextmanager
    def sampling(self, sampling: str | None = None, straight_through: bool | None = None,
                 **changes: object) -> Iterator[UserModel]:
        """The model as given (``sampling`` None or ``"paper"``); ``straight_through=True``: BPDA (needs a
        surrogate). Other samplers are settings of the plugin's LWTA layers and raise ValueError."""
        if sampling not in (None, MODEL_SAMPLING) or changes:
            what = repr(sampling) if sampling not in (None, MODEL_SAMPLING) else ", ".join(sorted(changes))
            raise ValueError(f"sampling {what} is a setting of the plugin's LWTA layers; a model from outside the "
                             "plugin has none (protocols paper-concrete, paper-literal and ladder need it)")
        if straight_through and self.surrogate is None:
            raise ValueError("straight-through (BPDA) gradients need a surrogate model (surrogate=, "
                             "--surrogate-factory); none was given")
        previous = self._straight_through
        self._straight_through = bool(straight_through) if straight_through is not None else previous
        try:
            yield self
        finally:
            self._straight_through = previous

    @contextlib.contextmanager
    def using(self, samples: int | None = None, output: str | None = None) -> Iterator[UserModel]:
        """Temporarily change ``samples``; ``output`` must be ``logits`` (the only output of a plain model)."""
        if output not in (None, "logits"):
            raise ValueError(f"output {output!r} is an output of the plugin's ECOC decoder; a model from outside "
                             "the plugin has only its logits")
        old = self.samples
        try:
            if samples is not None:
                self.samples = samples
            yield self
        finally:
            self.samples = old

    def forward_samples(self, x: torch.Tensor, n: int, output: str | None = None) -> torch.Tensor:
        """Logits of ``n`` independent draws, ``[n, B, C]`` (``output``: only ``logits``). Under straight-through
        sampling the values are the model's and the gradient the surrogate's."""
        if output not in (None, "logits"):
            raise ValueError(f"output {output!r} is an output of the plugin's ECOC decoder; a model from outside "
                             "the plugin has only its logits")
        B = x.shape[0]
        if self.draws == PER_ROW and n > 1:
            out = self.model(x.repeat(n, *([1] * (x.dim() - 1)))).view(n, B, -1)
        elif self.draws == PER_PASS and n > 1:
            out = torch.stack([self.model(x).view(B, -1) for _ in range(n)])
        else:
            one = self.model(x).view(1, B, -1)
            out = one.expand(n, *one.shape[1:]) if n > 1 else one
        if self._straight_through and self.surrogate is not None:
            s = self.surrogate(x).view(1, B, -1)
            out = s + (out - s).detach()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The prediction: the model's logits (``samples`` 1 or a deterministic model), else the log of the mean
        class probabilities of ``samples`` draws."""
        n = self.samples if self.stochastic else 1
        out = self.forward_samples(x, n)
        return out[0] if n == 1 else reduce_samples(out, "probs")


def wrap_model(model: nn.Module, x: torch.Tensor, stochastic: bool | None = None, samples: int = 1,
               surrogate: nn.Module | None = None) -> tuple[UserModel, dict]:
    """``model`` as a :class:`UserModel` (eval mode) and the record of its randomness for the entry:
    ``{"declared": True | False | None, "measured": kind, "draws": kind used}``.

    ``stochastic`` None: the model's own ``stochastic`` attribute if it has one, else only the measurement.
    ValueError if the model is not an ``nn.Module``, its output is not class logits, or it was declared
    deterministic and two passes differed."""
    if not isinstance(model, nn.Module):
        raise ValueError(  # noqa: TRY004 (a user error, reported like the others)
            f"the model must be a torch.nn.Module mapping images in [0, 1] to class logits, got {type(model).__name__}")
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise ValueError(f"the surrogate must be a torch.nn.Module (or None), got {type(surrogate).__name__}")
    declared = stochastic if stochastic is not None else getattr(model, "stochastic", None)
    if declared is not None and not isinstance(declared, bool):
        raise ValueError(f"stochastic must be True, False or None, got {declared!r}")
    model.eval()
    if surrogate is not None:
        surrogate.eval()
        with torch.no_grad():
            check_logits(surrogate(x[:PROBE_ROWS]), len(x[:PROBE_ROWS]), "the surrogate")
    measured = measure_randomness(model, x)
    if declared is False and measured != DETERMINISTIC:
        raise ValueError(f"{type(model).__name__} is declared deterministic (stochastic=False), but two passes on "
                         f"the same images differed ({measured} randomness): declare it random or leave it to the "
                         "measurement")
    draws = PER_PASS if (declared and measured == DETERMINISTIC) else measured
    with torch.no_grad():
        n_classes = model(x[:1]).shape[1]
    wrapped = UserModel(model, draws, n_classes, samples, surrogate).eval()
    return wrapped, {"declared": declared, "measured": measured, "draws": draws}
