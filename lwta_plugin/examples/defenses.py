"""Two randomized defenses from the literature on top of the example CNN (:mod:`.mnist_cnn`), and their
surrogates (the same network with its randomness switched off).

* :class:`RandomResizePad` (Xie et al., "Mitigating adversarial effects through randomization", ICLR 2018): resize
  the image to a random ``r x r`` (nearest neighbour, as their code) and zero-pad it at a random offset to a fixed
  size, then classify. On MNIST: ``r`` uniform in [28, 31), padded to 31 x 31 (their ImageNet setting: 299 ->
  [299, 331), padded to 331: the same ratio). Drawn independently per image.
* :class:`NoiseInjection` (Random Self-Ensemble, Liu et al., ECCV 2018): Gaussian noise added before every
  convolution, std ``init_std`` at the input and ``inner_std`` before the inner ones (their values 0.2 / 0.1); the
  prediction is an ensemble of several noisy passes (the evaluation's ``samples``). As in RSE, the network is trained
  with the noise: the same CNN architecture, trained with ``--noise-std 0.2 0.1`` (``mnist_cnn_rse.pt``).

The factories (``rse``, ``resize_pad``, ``*_surrogate``) take no arguments and return modules that map images in
[0, 1] to class logits: ``lwta evaluate --model-factory lwta_plugin.examples.defenses:rse``. Each defense carries
``about`` (paper, authors, link, architecture) for its leaderboard entry.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mnist_cnn import RSE_WEIGHTS, RSE_WEIGHTS_SHA256, MnistCNN, gaussian_noise, load

RESIZE_MIN, PAD_TO = 28, 31  # r uniform in [RESIZE_MIN, PAD_TO), padded to PAD_TO x PAD_TO (31 / 28 = 331 / 299)


class RandomResizePad(nn.Module):
    """Xie et al. 2018 on MNIST: random resize to ``r x r`` (r in [28, 31), nearest) and random zero padding to
    31 x 31, then ``classifier``. ``randomize=False``: the deterministic surrogate (no resize, centred padding).
    It does not declare ``stochastic``: the evaluation measures it."""

    def __init__(self, classifier: nn.Module, randomize: bool = True):
        super().__init__()
        self.classifier, self.randomize = classifier, randomize
        self.about = {
            "name": "Mitigating Adversarial Effects Through Randomization", "authors": "Cihang Xie, Jianyu Wang, "
            "Zhishuai Zhang, Zhou Ren, Alan Yuille", "venue": "ICLR 2018", "link": "https://arxiv.org/abs/1711.01991",
            "architecture": (f"random resize to r x r, r uniform in [{RESIZE_MIN}, {PAD_TO}) (nearest), random zero "
                             f"padding to {PAD_TO} x {PAD_TO}, per image; on the example MNIST CNN "
                             "(lwta_plugin.examples.mnist_cnn)" if randomize else
                             f"centred zero padding to {PAD_TO} x {PAD_TO} (no resize); on the example MNIST CNN"),
        }

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The random (or, without ``randomize``, centred) resize-and-pad of a batch: ``[N, C, 31, 31]``."""
        n, c = x.shape[:2]
        if not self.randomize:
            r = torch.full((n,), x.shape[-1], dtype=torch.long)
            top = left = (PAD_TO - r) // 2
        else:
            r = torch.randint(RESIZE_MIN, PAD_TO, (n,))
            top = (torch.rand(n) * (PAD_TO - r + 1)).long()
            left = (torch.rand(n) * (PAD_TO - r + 1)).long()
        canvas = x.new_zeros(n, c, PAD_TO, PAD_TO)
        resized = x.new_zeros(n, c, PAD_TO, PAD_TO)  # each image resized, in the top-left corner
        for size in r.unique().tolist():
            idx = (r == size).nonzero().squeeze(1)
            small = F.interpolate(x[idx], size=(size, size), mode="nearest")
            resized = resized.index_copy(0, idx, F.pad(small, (0, PAD_TO - size, 0, PAD_TO - size)))
        # move each image to its offset: out[a, b] = resized[a - top, b - left] inside, 0 outside
        ar = torch.arange(PAD_TO)
        rows, cols = ar[None] - top[:, None], ar[None] - left[:, None]  # [N, PAD_TO]
        inside = ((rows >= 0) & (rows < r[:, None]))[:, :, None] & ((cols >= 0) & (cols < r[:, None]))[:, None, :]
        batch = torch.arange(n)[:, None, None]
        moved = resized[batch, :, rows.clamp(0, PAD_TO - 1)[:, :, None], cols.clamp(0, PAD_TO - 1)[:, None, :]]
        canvas = canvas + moved.permute(0, 3, 1, 2) * inside[:, None].to(x.dtype)
        return canvas

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(x))


class NoiseInjection(nn.Module):
    """Random Self-Ensemble (Liu et al. 2018) on a :class:`MnistCNN`: N(0, std^2) noise before every convolution
    (``init_std`` at the input, ``inner_std`` before conv2 and conv3), drawn per image and pass, in train and eval
    mode alike. Both stds 0: the deterministic surrogate. Declares ``stochastic``."""

    def __init__(self, cnn: MnistCNN, init_std: float = 0.2, inner_std: float = 0.1):
        super().__init__()
        self.cnn, self.init_std, self.inner_std = cnn, float(init_std), float(inner_std)
        self.stochastic = self.init_std > 0 or self.inner_std > 0
        self.about = {
            "name": "Towards Robust Neural Networks via Random Self-ensemble", "authors": "Xuanqing Liu, Minhao "
            "Cheng, Huan Zhang, Cho-Jui Hsieh", "venue": "ECCV 2018", "link": "https://arxiv.org/abs/1712.00673",
            "architecture": (f"Gaussian noise layers (std {self.init_std:g} at the input, {self.inner_std:g} before "
                             "each inner conv) on the example MNIST CNN trained with that noise "
                             "(lwta_plugin/examples/mnist_cnn_rse.pt)" if self.stochastic else
                             "the example MNIST CNN trained with RSE noise, run without noise"),
            "training": {"description": "with its noise (RSE)"},
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.fc(self.cnn.features(x, gaussian_noise(self.init_std, self.inner_std)))


def resize_pad() -> RandomResizePad:
    """Xie et al.'s random resize-and-pad on the shipped example CNN."""
    return RandomResizePad(load())


def resize_pad_surrogate() -> RandomResizePad:
    """Its randomness switched off: the CNN on the image padded to 31 x 31 in the centre (no resize)."""
    return RandomResizePad(load(), randomize=False)


def rse() -> NoiseInjection:
    """Random Self-Ensemble noise (std 0.2 / 0.1) on the example CNN trained with it."""
    return NoiseInjection(load(RSE_WEIGHTS, RSE_WEIGHTS_SHA256))


def rse_surrogate() -> NoiseInjection:
    """Its randomness switched off: the same network without noise."""
    return NoiseInjection(load(RSE_WEIGHTS, RSE_WEIGHTS_SHA256), 0.0, 0.0)


def cnn() -> MnistCNN:
    """The undefended example CNN (deterministic)."""
    return load()
