"""Tiny models and data shared by the attack, EOT and indicator tests (kept small: 1 thread, seconds)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lwta_plugin.checkpoint import save_checkpoint
from lwta_plugin.layers import StochasticConv2d, StochasticLinear
from lwta_plugin.models import LWTANet, _Flatten, _Stack, create_model

N_CLASSES = 4
SHAPE = (1, 8, 8)


def apgd_backend_available() -> bool:
    """apgd_rand runs on pyautoattack or torchattacks; the core-only install (`tox -e minimal`) has neither."""
    for name in ("pyautoattack", "torchattacks"):
        try:
            __import__(name)
            return True
        except ImportError:
            continue
    return False



def quadrant_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable 4-class problem on 1x8x8 images: class k = bright 4x4 quadrant k on a dim noisy background."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % N_CLASSES
    x = torch.rand((n, *SHAPE), generator=g) * 0.2
    bright = 0.6 + 0.3 * torch.rand((n, 1, 4, 4), generator=g)
    for k in range(N_CLASSES):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = bright[y == k]
    return x, y


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Linear(8 * 4 * 4, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Quantized(nn.Module):
    """A gradient-masking "defense": the CNN on inputs rounded to 1/4 steps (zero input gradient everywhere)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, lr: float = 1e-2,
          seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % len(x)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def trained_cnn(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    x, y = quadrant_data(256, seed=100 + seed)
    return train(SmallCNN(), x, y, seed=seed)


def tiny_lwta(code: str = "softmax", seed: int = 0) -> LWTANet:
    """An LWTANet (sampling, decoder, batched sample groups) with a tiny stochastic LWTA + IBP body for 1x8x8."""
    torch.manual_seed(seed)
    model = create_model(f"lwta_ibp_{code}", "mnist")
    bits = model.code.n_bits
    model.body = _Stack([StochasticConv2d(1, 8, 3, 2), StochasticConv2d(8, 8, 3, 2), _Flatten(),
                         StochasticLinear(8 * 2 * 2, 16), StochasticLinear(16, bits, 1, "none")])
    model.input_shape = SHAPE
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def fake_build_attack_for(spec, model):
    """A one-step signed-gradient attack factory, in place of ``lwta_plugin.evaluation.build_attack_for`` (runner
    and rendering tests pass it as ``evaluate(..., attack_factory=...)``)."""
    eps = spec.params.get("eps") or 0.5

    def attack(x, y):
        xa = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        return (x + eps * g.sign()).clamp(0, 1)

    return attack


def make_checkpoint(path, name: str = "lwta_ibp_softmax", seed: int = 0):
    """An untrained MNIST model saved as a checkpoint (seeded), for the evaluation and CLI tests."""
    torch.manual_seed(seed)
    save_checkpoint(path, create_model(name, "mnist"), {"name": name, "dataset": "mnist"})
    return path
