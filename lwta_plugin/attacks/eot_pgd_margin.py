"""EOT-PGD with a margin loss on the raw codeword correlations (Tramer et al. 2020, section 5.6).

The ECOC decoder's tanh and log-ReLU saturate, so cross-entropy gradients on its logits vanish; the adaptive
attack instead maximises ``max_{j != y} c_j - c_y`` on ``c = raw @ M.T`` (decoder output ``raw``). The best
iterate is still judged by the model's real decision (the ``logits`` output of the same draws).
"""
from __future__ import annotations

from torch import nn

from .pgd import PGD


class EOTPGDMargin(PGD):
    """PGD on the EOT-averaged margin of the raw codeword correlations."""

    name = "eot_pgd_margin"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_samples")

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 100,
                 random_start: bool = True, eot_samples: int = 20, loss: str = "margin", output: str = "raw",
                 chunk_size: int | None = None):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, loss=loss,
                         eot_samples=eot_samples, output=output, chunk_size=chunk_size)
