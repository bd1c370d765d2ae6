"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps, one stochastic pass per gradient."""
from __future__ import annotations

import torch
from torch import nn

from ..eot import eot_gradient, eot_predict
from .base import BestIterate, check_number, project_linf
from .pgd import PGD


class FGSM(PGD):
    """``x + eps * sign(grad loss)``; the clean point and the step are both tracked (best iterate).

    select_samples: draws averaged by the prediction that judges the two points (which one is returned, and
    whether the attack met an adversarial point). With the gradient's single draw as judge, a noisy draw returned
    the clean point for images the step had broken, and the silent-success indicator fired on 332 of 10,000
    images of ``lwta_ibp_softmax`` (experiments/full-scale/README.md)."""

    name = "fgsm"
    white_box, iterative = True, False
    supports_early_exit = False  # one step: nothing to stop early
    budget_keys = ("eot_samples",)

    def __init__(self, model: nn.Module, *, eps: float = 0.3, loss: str = "ce", eot_samples: int = 1,
                 output: str = "logits", chunk_size: int | None = None, select_samples: int = 10):
        check_number("select_samples", select_samples, 1, integer=True)
        super().__init__(model, eps=eps, alpha=eps, steps=1, random_start=False, loss=loss,
                         eot_samples=eot_samples, output=output, chunk_size=chunk_size)
        self.select_samples = int(select_samples)
        self.hparams = {"eps": self.eps, "loss": loss, "eot_samples": self.eot_samples, "output": output,
                        "select_samples": self.select_samples}

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        model = self.target()
        sign = -1.0 if self.targeted else 1.0  # targeted: y are the targets, and their loss is minimised
        best = BestIterate(x, y, self.targeted)
        with self.context():
            g = eot_gradient(model, x, y, self.loss, self.eot_samples, self.chunk_size, self.output)
            step = project_linf(x + self.eps * (sign * g.grad).sign(), x, self.eps)
            for point in (x, step):
                best.update(point, eot_predict(model, point, self.select_samples, self.chunk_size))
        self.last_info = {"path_adversarial": best.ever_adversarial.cpu(),
                          "returned_adversarial": best.adversarial.cpu(),
                          "loss_trace": (sign * g.loss).detach().unsqueeze(0).cpu()}
        return best.x
