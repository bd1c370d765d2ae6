"""Uniform noise in the L-inf ball: a gradient-free sanity check (it must be weaker than gradient attacks)."""
from __future__ import annotations

import torch
from torch import nn

from ..eot import eot_predict
from .base import Attack, BestIterate, check_number, project_linf


class Noise(Attack):
    """``x + U(-eps, eps)`` clipped to [0, 1]; with ``draws > 1`` the draw with the largest misclassification
    margin (averaged prediction over ``eval_samples`` draws of the model) is kept per image."""

    name = "noise"
    white_box, iterative = False, False  # independent draws, no refinement
    budget_keys = ("draws",)

    def __init__(self, model: nn.Module, *, eps: float = 0.3, draws: int = 1, eval_samples: int = 1,
                 chunk_size: int | None = None):
        check_number("eps", eps, 0.0)
        check_number("draws", draws, 1, integer=True)
        check_number("eval_samples", eval_samples, 1, integer=True)
        super().__init__(model, eps=float(eps), draws=int(draws), eval_samples=int(eval_samples))
        self.eps, self.draws, self.eval_samples, self.chunk_size = float(eps), int(draws), int(eval_samples), chunk_size

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def draw() -> torch.Tensor:
            return project_linf(x + torch.empty_like(x).uniform_(-self.eps, self.eps), x, self.eps)

        if self.draws == 1:
            return draw()
        best = BestIterate(x, y)
        for _ in range(self.draws):
            xn = draw()
            best.update(xn, eot_predict(self.model, xn, self.eval_samples, self.chunk_size).clone())
        self.last_info = {"path_adversarial": best.ever_adversarial.cpu(), "returned_adversarial": best.adversarial.cpu()}
        return best.x
