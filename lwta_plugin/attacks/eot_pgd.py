"""EOT-PGD: PGD on the expected cross-entropy over ``eot_samples`` draws of the model's randomness
(Athalye et al. 2018), computed in batched passes."""
from __future__ import annotations

from torch import nn

from .pgd import PGD


class EOTPGD(PGD):
    """PGD whose every gradient is ``mean_s grad CE(f_s(x), y)`` over ``eot_samples`` draws."""

    name = "eot_pgd"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_samples")

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 100,
                 random_start: bool = True, loss: str = "ce", eot_samples: int = 20, output: str = "logits",
                 chunk_size: int | None = None):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, loss=loss,
                         eot_samples=eot_samples, output=output, chunk_size=chunk_size)
