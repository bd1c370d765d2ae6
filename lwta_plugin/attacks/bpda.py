"""BPDA (Athalye et al. 2018) for stochastic LWTA: EOT-PGD whose backward pass treats the sampled one-hot winner
as the softmax of its block (straight-through estimator, ``Sampling(straight_through=True)``); the forward pass
is the exact sampled network. Models without LWTA sampling controls are attacked as plain EOT-PGD."""
from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from .pgd import PGD


class BPDA(PGD):
    """EOT-PGD with straight-through winner gradients; ``sampling`` is the forward-pass preset (``paper``)."""

    name = "bpda"
    white_box, iterative = True, True
    budget_keys = ("steps", "eot_samples")

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 100,
                 random_start: bool = True, eot_samples: int = 20, loss: str = "ce", output: str = "logits",
                 sampling: str = "paper", chunk_size: int | None = None):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, loss=loss,
                         eot_samples=eot_samples, output=output, chunk_size=chunk_size)
        if sampling not in ("paper", "concrete"):
            raise ValueError(f"BPDA needs a sampled forward pass: sampling must be 'paper' or 'concrete', got "
                             f"{sampling!r}")
        self.sampling = sampling
        self.hparams["sampling"] = sampling
        self.hparams["straight_through"] = True

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if hasattr(self.model, "sampling") and callable(self.model.sampling):
            return self.model.sampling(self.sampling, straight_through=True)
        return contextlib.nullcontext()
