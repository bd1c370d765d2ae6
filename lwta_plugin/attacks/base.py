"""Shared base of the attacks: hyperparameters, input checks, eval mode, device/dtype, best-iterate tracking.

Every attack is called as ``attack(x, y) -> x_adv`` on images ``x`` in [0, 1] (NCHW) with integer labels ``y``
and returns detached images in [0, 1] on ``x``'s device and dtype. ``attack.hparams`` holds the resolved
hyperparameters (recorded in leaderboard entries); ``attack.last_info`` describes the last call (which examples
were adversarial somewhere on the attack path, the per-step loss), for the attack-failure indicators.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..eot import eot_predict, margin_loss


def model_device_dtype(model: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``model`` (its first parameter or buffer), else those of ``x``."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return x.device, x.dtype if x.is_floating_point() else torch.float32


def n_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """``model.n_classes`` if the model has it, else the width of its output on one image."""
    n = getattr(model, "n_classes", None)
    if n is not None:
        return int(n)
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 integer: bool = False, low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in the given range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {' and '.join(s for s in (lo, hi) if s)}, got {value!r}")


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project into the L-inf ball of radius ``eps`` around ``x`` and into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class BestIterate:
    """Per example, the point of the attack path with the largest decision margin seen so far.

    The margin is ``max_{j != y} log p_j - log p_y`` of the (averaged) prediction at that point, so an example is
    returned misclassified whenever any tracked point was (no "silent success", Pintor et al. 2022), and among
    misclassified points the most confidently misclassified one is kept.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x = x.detach().clone()
        self.y = y
        self.margin = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.ever_adversarial = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, x_t: torch.Tensor, log_probs: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Judge the points ``x_t`` by ``log_probs``; ``rows``: which examples they are (default: all, in order)."""
        if rows is None:
            rows = torch.arange(self.x.shape[0], device=self.x.device)
        m = margin_loss(log_probs.detach(), self.y[rows]).to(self.margin.dtype)
        better = m > self.margin[rows]
        self.x[rows[better]] = x_t.detach()[better]
        self.margin[rows] = torch.where(better, m, self.margin[rows])
        self.ever_adversarial[rows] |= m > 0


    @property
    def adversarial(self) -> torch.Tensor:
        return self.margin > 0


def confirmed_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int,
                          samples: int) -> torch.Tensor:
    """Which of the points ``x`` are misclassified by all of ``passes`` fresh predictions, each the average of
    ``samples`` draws (the evaluation's inference rule): early exit stops attacking only such images."""
    wrong = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(passes):
        idx = wrong.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        wrong[idx] = eot_predict(model, x[idx], samples).argmax(1) != y[idx]
    return wrong


class Attack:
    """Base class: subclasses set ``name`` and the facts below, and implement :meth:`perturb` on validated inputs.

    The class attributes ``bounded``, ``white_box``, ``iterative`` and ``budget_keys`` describe the attack for the
    attack-failure indicators (:mod:`lwta_plugin.attacks.indicators`), which read them through the registry.

    ``perturb(x, y)`` receives ``x`` detached on the model's device and dtype, ``y`` as int64 there, with the
    model in eval mode (restored afterwards); it may call the model with gradients enabled.
    """

    name: ClassVar[str] = "attack"
    bounded: ClassVar[bool] = True  # returns points within its eps-ball (unbounded attacks: False)
    white_box: ClassVar[bool] = True  # uses the attacked model's gradients (black-box attacks: False)
    iterative: ClassVar[bool] = True  # refines its point over several steps (one-step attacks: False)
    budget_keys: ClassVar[tuple[str, ...]] = ()  # hyperparameters that are budgets (steps, EOT samples, ...)

    def __init__(self, model: nn.Module, **hparams: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}: model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.hparams: dict[str, Any] = dict(hparams)
        self.last_info: dict[str, Any] = {}

    supports_early_exit: ClassVar[bool] = False  # set_early_exit() is available (iterative attacks that judge the model)

    def set_early_exit(self, passes: int, samples: int = 5) -> Attack:
        """Early exit: stop attacking an image once its point is misclassified by all of ``passes`` fresh
        predictions of ``samples`` draws each (0: off). Recorded in :attr:`hparams` when on. Returns the attack."""
        if not self.supports_early_exit:
            raise ValueError(f"{self.name} does not support early_exit")
        check_number("early_exit", passes, 0, integer=True)
        check_number("confirm_samples", samples, 1, integer=True)
        self.early_exit, self.confirm_samples = int(passes), int(samples)
        if self.early_exit:  # recorded only when on: entries of runs without it keep their hyperparameters
            self.hparams.update(early_exit=self.early_exit, confirm_samples=self.confirm_samples)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({params})"

    def validate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a finite NCHW float batch in [0, 1] and ``y`` integer labels for it
        (TypeError if they are not tensors)."""
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"{self.name}: images and labels must be tensors, got {type(x).__name__} and "
                             f"{type(y).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{self.name}: images must be a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: images must be floating point in [0, 1], got dtype {x.dtype}")
        if x.numel() and not torch.isfinite(x).all():
            raise ValueError(f"{self.name}: images contain NaN or infinite values")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{self.name}: images must lie in [0, 1], got values in [{x.min().item():.4g}, "
                             f"{x.max().item():.4g}] (normalise inside the model, not before the attack)")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{self.name}: labels must be integers, got dtype {y.dtype}")

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.validate(x, y)
        self.last_info = {}
        if x.shape[0] == 0:
            return x.detach().clone()
        device, dtype = model_device_dtype(self.model, x)
        xd = x.detach().to(device=device, dtype=dtype)
        yd = y.detach().to(device=device, dtype=torch.int64)
        with eval_mode(self.model):
            n = n_classes_of(self.model, xd)
            if yd.min() < 0 or yd.max() >= n:
                raise ValueError(f"{self.name}: labels must be in [0, {n - 1}], got values in "
                                 f"[{yd.min().item()}, {yd.max().item()}]")
            x_adv = self.perturb(xd, yd)
        if x_adv.shape != xd.shape:
            raise RuntimeError(f"{self.name} produced shape {tuple(x_adv.shape)} for input {tuple(xd.shape)}")
        return x_adv.detach().clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
