"""Blind-spot attack (Zhang et al. 2019) as the reference code runs it: CW-L2 on a contrast-reduced image.

The image is scaled towards mid-gray, ``x' = alpha * x + (1 - alpha) * 0.5`` (``alpha = 0.8``: ``0.8 x + 0.1`` in
[0, 1] space, i.e. ``0.8 x`` in the reference's [-0.5, 0.5] space), then attacked with CW-L2. The output is the
adversarial of the *scaled* image (the scaled image itself where CW found nothing), and the evaluation compares it
with the original ``x``: its distance includes the scaling. Unbounded by default, as the reference; with ``eps``
the final point is projected into the L-inf ball of radius ``eps`` around the original ``x`` (a bounded variant;
the projection may undo a success).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import check_number, project_linf
from .cw import CW


def blind_spot(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * x + (1 - alpha) * 0.5``: contrast scaling towards mid-gray in [0, 1] space."""
    return alpha * x + (1 - alpha) * 0.5


class BSA(CW):
    """CW-L2 on :func:`blind_spot` images; ``eps`` (optional) bounds the result around the original image.

    ``cw_params`` are CW-L2's hyperparameters with CW's defaults (:class:`~lwta_plugin.attacks.cw.CW`: ``c``,
    ``lr``, ``binary_search_steps``, ``steps``, ``confidence``, ``abort_early``, ``eot_samples``, ``chunk_size``).
    """

    name = "bsa"
    bounded = False  # by default; an instance with ``eps`` is bounded
    white_box, iterative = True, True
    budget_keys = ("binary_search_steps", "steps", "eot_samples")

    def __init__(self, model: nn.Module, *, alpha: float = 0.8, eps: float | None = None, **cw_params: Any):
        super().__init__(model, **cw_params)
        check_number("alpha", alpha, 0.0, 1.0, low_open=True)
        if eps is not None:
            check_number("eps", eps, 0.0)
        self.alpha, self.eps = float(alpha), None if eps is None else float(eps)
        self.bounded = eps is not None
        self.hparams.update(alpha=self.alpha, eps=self.eps)

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = super().perturb(blind_spot(x, self.alpha), y)
        return adv if self.eps is None else project_linf(adv, x, self.eps)
