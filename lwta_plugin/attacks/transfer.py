"""Transfer attack: PGD on a deterministic surrogate, evaluated on the random model.

``surrogate="expected"`` attacks the LWTANet with every unit scaled by its winning probability and the IBP
utilities at their expected values (the mean-field network); ``"argmax"`` uses the most probable winners. Any
``nn.Module`` may be given instead. The best iterate is judged on the surrogate (the attack has no access to
the random model's decisions). A model without sampling controls is its own surrogate.
"""
from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from .base import eval_mode
from .pgd import PGD

SURROGATES = ("expected", "argmax")


class Transfer(PGD):
    """PGD on ``surrogate`` (``expected``, ``argmax`` or a module); adversarials are returned for the target."""

    name = "transfer"
    white_box, iterative = False, True  # gradients of the surrogate only
    budget_keys = ("steps",)
    supports_early_exit = False  # its steps judge the surrogate; the random model is never queried while attacking

    def __init__(self, model: nn.Module, *, eps: float = 0.3, alpha: float | None = None, steps: int = 100,
                 random_start: bool = True, loss: str = "ce", surrogate: str | nn.Module = "expected",
                 output: str = "logits", chunk_size: int | None = None):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, loss=loss,
                         eot_samples=1, output=output, chunk_size=chunk_size)
        if not isinstance(surrogate, (str, nn.Module)):
            raise TypeError(f"surrogate must be one of {SURROGATES} or an nn.Module, got {type(surrogate).__name__}")
        if isinstance(surrogate, str) and surrogate not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate!r}; expected one of {SURROGATES} or an nn.Module")
        self.surrogate = surrogate
        del self.hparams["eot_samples"]
        self.hparams["surrogate"] = surrogate if isinstance(surrogate, str) else type(surrogate).__name__

    def target(self) -> nn.Module:
        return self.surrogate if isinstance(self.surrogate, nn.Module) else self.model

    def context(self) -> contextlib.AbstractContextManager[Any]:
        if isinstance(self.surrogate, nn.Module):
            return eval_mode(self.surrogate)
        if hasattr(self.model, "sampling") and callable(self.model.sampling):
            return self.model.sampling(self.surrogate)
        return contextlib.nullcontext()

