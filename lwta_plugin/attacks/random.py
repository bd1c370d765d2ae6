"""The paper's "Random" score (reference_implementations.md section 5): the fraction of uniform-noise images
``U[0, 1)`` (``U[0, 1) - 0.5`` in the reference's centred space) whose predicted maximum class probability is
below ``threshold`` (0.9). Higher is better; it is not an accuracy. The counting is
:func:`lwta_plugin.statistics.low_confidence_counts` (one implementation, shared with the evaluation runner)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..statistics import low_confidence_counts


def uniform_noise_images(n: int, shape: Sequence[int], generator: torch.Generator | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` images of ``shape`` (C, H, W) with pixels drawn i.i.d. from U[0, 1)."""
    return torch.rand((int(n), *shape), generator=generator, dtype=dtype)


def random_score(model: nn.Module, n_images: int = 1000, input_shape: Sequence[int] | None = None,
                 threshold: float = 0.9, samples: int = 5, passes: int = 1,
                 generator: torch.Generator | None = None) -> float:
    """The paper's Random score of ``model`` (an LWTANet, or any module with ``using`` and ``stochastic``) on
    ``n_images`` fresh uniform-noise images.

    ``input_shape`` defaults to ``model.input_shape``. Each image is predicted ``passes`` times, each prediction
    the average of ``samples`` stochastic passes (the paper: one prediction of the S = 5 average).
    """
    shape = tuple(input_shape or getattr(model, "input_shape", ()))
    if len(shape) != 3:
        raise ValueError("random_score needs input_shape=(C, H, W) for a model without input_shape")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    x = uniform_noise_images(n_images, shape, generator)
    was_training = model.training
    model.eval()
    try:
        counts = low_confidence_counts(model, x, passes, samples, threshold)
    finally:
        model.train(was_training)
    return sum(counts) / (passes * len(counts))
