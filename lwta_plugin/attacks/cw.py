"""Carlini-Wagner L2 (Carlini & Wagner 2017), batched, with cleverhans 3.0.1's binary search over the constant.

Every image is optimised independently, as cleverhans does with its default ``batch_size=1``: per image it keeps
its own constant, binary-search bounds and early-abort state, inside one batched computation. Unbounded: the
smallest successful adversarial per image is returned (the image itself where no success was found).
"""
from __future__ import annotations

import torch
from torch import nn

from ..eot import EOT
from .base import Attack, check_number, n_classes_of

_ABORT_RATIO = 0.9999  # cleverhans: abort when the loss did not drop by 0.01 % over steps // 10 iterations
_NO_BOUND = 1e10


class CW(Attack):
    """CW-L2 on the decoded logits (cleverhans ``CarliniWagnerL2`` semantics), untargeted, or targeted with
    torchattacks' ``set_mode_targeted_*`` (the loss term ``max(max_{j != t} z_j - z_t + confidence, 0)``).

    c: initial constant. lr: Adam learning rate. binary_search_steps: constant updates (with >= 10 the last one
    reuses the upper bound, as cleverhans). steps: Adam steps per search step. confidence: required logit margin.
    abort_early: stop an image's search step when its loss stalls. eot_samples: draws of the model's randomness
    averaged (logits) per step; 1 = one stochastic pass per step, as the reference.
    """

    name = "cw"
    bounded = False
    white_box, iterative = True, True
    budget_keys = ("binary_search_steps", "steps", "eot_samples")
    supports_targeted = True

    def __init__(self, model: nn.Module, *, c: float = 1e-2, lr: float = 5e-3, binary_search_steps: int = 5,
                 steps: int = 1000, confidence: float = 0.0, abort_early: bool = True, eot_samples: int = 1,
                 chunk_size: int | None = None):
        check_number("c", c, 0.0, low_open=True)
        check_number("lr", lr, 0.0, low_open=True)
        check_number("binary_search_steps", binary_search_steps, 1, integer=True)
        check_number("steps", steps, 0, integer=True)
        check_number("confidence", confidence, 0.0)
        check_number("eot_samples", eot_samples, 1, integer=True)
        super().__init__(model, c=float(c), lr=float(lr), binary_search_steps=int(binary_search_steps),
                         steps=int(steps), confidence=float(confidence), abort_early=bool(abort_early),
                         eot_samples=int(eot_samples))
        self.c, self.lr, self.bss, self.steps = float(c), float(lr), int(binary_search_steps), int(steps)
        self.confidence, self.abort_early, self.eot_samples = float(confidence), bool(abort_early), int(eot_samples)
        self.chunk_size = chunk_size

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv, l2 = self.cw(x, y)
        found = torch.isfinite(l2)
        self.last_info = {"path_adversarial": found.cpu(), "returned_adversarial": found.cpu(), "l2": l2.sqrt().cpu()}
        return adv

    def cw(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best adversarial per image and its squared L2 distance (inf where none was found)."""
        f = EOT(self.model, self.eot_samples, self.chunk_size, reduction="logits", output="logits")
        B = x.shape[0]
        onehot = torch.nn.functional.one_hot(y, n_classes_of(self.model, x)).bool()
        w0 = torch.atanh((2 * x - 1) * 0.999999)
        x_ref = (torch.tanh(w0) + 1) / 2  # cleverhans measures distances to the tanh round trip of the input
        lower = torch.zeros(B, device=x.device, dtype=x.dtype)
        upper = torch.full_like(lower, _NO_BOUND)
        const = torch.full_like(lower, self.c)
        best_l2 = torch.full_like(lower, float("inf"))
        best_x = x.clone()
        check_every = max(self.steps // 10, 1)
        for outer in range(self.bss):
            if self.bss >= 10 and outer == self.bss - 1:
                const = upper.clone()
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            success_here = torch.zeros(B, dtype=torch.bool, device=x.device)
            prev = torch.full_like(lower, 1e6)
            active = torch.ones_like(success_here)
            for it in range(self.steps):
                with torch.enable_grad():
                    x_new = (torch.tanh(w) + 1) / 2
                    z = f(x_new)
                    real = z.gather(1, y[:, None])[:, 0]
                    other = z.masked_fill(onehot, float("-inf")).amax(1)
                    l2 = (x_new - x_ref).pow(2).flatten(1).sum(1)
                    gap = other - real if self.targeted else real - other
                    loss = l2 + const * (gap + self.confidence).clamp(min=0)
                with torch.no_grad():
                    if self.abort_early and it % check_every == 0:
                        active &= ~(loss > prev * _ABORT_RATIO)
                        prev = torch.where(active, loss, prev)
                        if not active.any():
                            break
                    if self.targeted:
                        success = ((z - self.confidence * onehot).argmax(1) == y) & active
                    else:
                        success = ((z + self.confidence * onehot).argmax(1) != y) & active
                    success_here |= success
                    better = success & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_x[better] = x_new[better]
                # the gradient of w only: .backward() would also compute (and store) every model weight's gradient
                (w.grad,) = torch.autograd.grad(loss.sum(), w)
                opt.step()
            with torch.no_grad():
                upper = torch.where(success_here, torch.minimum(upper, const), upper)
                lower = torch.where(success_here, lower, torch.maximum(lower, const))
                const = torch.where(upper < 1e9, (lower + upper) / 2, torch.where(success_here, const, const * 10))
        return best_x.detach(), best_l2

