"""A small MNIST CNN (not an LWTA network), the base model of the example defenses, and its shipped weights.

Fully convolutional with global average pooling, so it accepts any image size (the resize-and-pad defense feeds it
31 x 31 images). Trained by :func:`train` (``python -m lwta_plugin.examples.mnist_cnn --out FILE``); the shipped
weights ``mnist_cnn.pt`` are loaded with ``weights_only=True`` after their sha256 is checked.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import state_sha256
from ..io import atomic_write

FORMAT = "lwta-plugin/example-cnn-1"
WEIGHTS = Path(__file__).resolve().parent / "mnist_cnn.pt"
# sha256 of the shipped files (each written by the command in its meta["command"])
WEIGHTS_SHA256 = "842b43217e90cc1abeabacc459caf70d2edf217314a889f90c6356970cf30760"
# the same CNN trained with Random Self-Ensemble noise (--noise-std 0.2 0.1), for the RSE defense
RSE_WEIGHTS = Path(__file__).resolve().parent / "mnist_cnn_rse.pt"
RSE_WEIGHTS_SHA256 = "826faf3fe1db491698b14cdfb458ce3d9150bbe52cf646f7f2823bf6915f155d"
Noise = Callable[[torch.Tensor, int], torch.Tensor]


class MnistCNN(nn.Module):
    """conv 3x3 (16) - max pool - conv 3x3 (32) - max pool - conv 3x3 (64) - global average pool - linear (10);
    batch norm and ReLU after every conv. Images in [0, 1] -> class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def features(self, x: torch.Tensor, noise: Noise | None = None) -> torch.Tensor:
        """The pooled features; ``noise(h, i)`` (if given) perturbs the input of conv ``i`` (1, 2, 3)."""
        def inp(h: torch.Tensor, i: int) -> torch.Tensor:
            return h if noise is None else noise(h, i)

        h = F.max_pool2d(F.relu(self.bn1(self.conv1(inp(x, 1) - 0.5))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(inp(h, 2)))), 2)
        h = F.relu(self.bn3(self.conv3(inp(h, 3))))
        return h.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def gaussian_noise(init_std: float, inner_std: float) -> Noise | None:
    """Random Self-Ensemble's noise layers for :meth:`MnistCNN.features`: N(0, std^2) added to the input of conv 1
    (``init_std``) and of conv 2 and 3 (``inner_std``); None when both are 0."""
    if init_std == 0 and inner_std == 0:
        return None

    def noise(h: torch.Tensor, i: int) -> torch.Tensor:
        std = init_std if i == 1 else inner_std
        return h + std * torch.randn_like(h) if std > 0 else h

    return noise


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels per image (zero fill): standard augmentation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def train(epochs: int = 2, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
          data_root: str | None = None, noise_std: tuple[float, float] = (0.0, 0.0)) -> tuple[MnistCNN, dict]:
    """Train :class:`MnistCNN` on the 60,000 MNIST training images (Adam, random shifts of up to 2 pixels), then
    recalibrate its batch-norm statistics on them (:func:`recalibrate_batch_norm`); ``noise_std = (init, inner)``:
    with Random Self-Ensemble's noise layers active (:func:`gaussian_noise`), in training and recalibration; returns
    the model (eval mode) and its meta data (test accuracy on the 10,000 test images, with that noise; settings)."""
    from ..data import load_tensors

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_tensors("mnist", "train", root=data_root)
    model = MnistCNN()
    noise = gaussian_noise(*noise_std)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model.fc(model.features(_shift(x[idx], g), noise)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    recalibrate_batch_norm(model, x, noise)
    model.eval()
    xt, yt = load_tensors("mnist", "test", root=data_root)
    with torch.no_grad():
        correct = sum(int((model.fc(model.features(xt[i:i + 1000], noise)).argmax(1) == yt[i:i + 1000]).sum())
                      for i in range(0, len(xt), 1000))
    meta = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "augmentation": "random shift <= 2 px",
            "batch_norm": "running statistics recomputed on the training images after training",
            "test_accuracy": correct / len(xt), "torch": torch.__version__.split("+")[0]}
    if noise is not None:
        meta["noise_std"] = list(noise_std)
    return model, meta


@torch.no_grad()
def recalibrate_batch_norm(model: MnistCNN, x: torch.Tensor, noise: Noise | None = None,
                           batch_size: int = 500) -> None:
    """Replace the batch-norm running statistics (an exponential average that lags behind the last Adam steps)
    by their exact average over ``x`` with the final weights (and ``noise``, as the model will be used)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(x), batch_size):
        model.features(x[i:i + batch_size], noise)
    for m in norms:
        m.momentum = 0.1


def save(model: MnistCNN, path: str | Path, meta: dict) -> str:
    """Atomically write the weights (plain tensors and data only); returns the file's sha256."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "state_sha256": state_sha256(state), "meta": meta}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return hashlib.sha256(buf.getvalue()).hexdigest()


def load(path: str | Path = WEIGHTS, sha256: str | None = WEIGHTS_SHA256) -> MnistCNN:
    """The CNN with the weights in ``path`` (default: the shipped ones, sha256-checked), in eval mode.

    ValueError naming the file if it is missing, not the expected bytes, or not plain tensors."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"example CNN weights not found: {path} (train them with `python -m "
                         "lwta_plugin.examples.mnist_cnn --out FILE`)")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if sha256 is not None and actual != sha256:
        raise ValueError(f"{path} has sha256 {actual}, expected {sha256}: not the shipped example weights")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"cannot load {path} with weights_only=True: {str(e).splitlines()[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an example-CNN weight file (expected format {FORMAT!r})")
    if state_sha256(payload["state_dict"]) != payload.get("state_sha256"):
        raise ValueError(f"{path}: weights do not match their recorded hash")
    model = MnistCNN()
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m lwta_plugin.examples.mnist_cnn --out FILE [--epochs N] [--seed S]``: train and save."""
    p = argparse.ArgumentParser(description="Train the example MNIST CNN and write its weights.")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--noise-std", type=float, nargs=2, default=(0.0, 0.0), metavar=("INIT", "INNER"),
                   help="train with Random Self-Ensemble noise layers (e.g. 0.2 0.1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, meta = train(args.epochs, seed=args.seed, noise_std=tuple(args.noise_std))
    meta["command"] = shlex.join(["python", "-m", "lwta_plugin.examples.mnist_cnn", *(argv or sys.argv[1:])])
    sha = save(model, args.out, meta)
    print(f"test accuracy {meta['test_accuracy']:.4f}; wrote {args.out} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
