"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps, one stochastic pass per gradient."""
from __future__ import annotations

from torch import nn

from .pgd import PGD


class FGSM(PGD):
    """``x + eps * sign(grad loss)``; the clean point and the step are both tracked (best iterate)."""

    name = "fgsm"
    white_box, iterative = True, False
    budget_keys = ("eot_samples",)

    def __init__(self, model: nn.Module, *, eps: float = 0.3, loss: str = "ce", eot_samples: int = 1,
                 output: str = "logits", chunk_size: int | None = None):
        super().__init__(model, eps=eps, alpha=eps, steps=1, random_start=False, loss=loss,
                         eot_samples=eot_samples, output=output, chunk_size=chunk_size)
        self.hparams = {"eps": self.eps, "loss": loss, "eot_samples": self.eot_samples, "output": output}
