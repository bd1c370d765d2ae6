"""Error-correcting output codes (Verma & Swami, NeurIPS 2019) and their decoders.

A code is a matrix ``M`` (classes x bits), an output activation applied to the network's raw per-bit outputs,
and the training loss of the bits. Decoding follows the reference code: correlations ``c = act(raw) @ M.T``,
then the "log-ReLU" logits ``log(max(c, 0) + 1e-6)`` whose softmax gives the class probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOG_RELU_EPS = 1e-6
OUTPUTS = ("logits", "correlations", "raw")


def identity_code(n_classes: int = 10) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)


def hadamard_code(n_classes: int = 10, length: int = 16, seed: int = 59) -> np.ndarray:
    """The reference Hadamard code: scipy's Hadamard matrix, column 0 set to -1 in the even rows, rows shuffled
    and columns permuted with numpy's legacy RandomState(seed), first ``n_classes`` rows kept."""
    from scipy.linalg import hadamard

    m = hadamard(length).astype(np.float32)
    m[np.arange(0, n_classes, 2), 0] = -1
    rng = np.random.RandomState(seed)  # np.random.seed(59); shuffle; permutation in the reference
    rng.shuffle(m)
    m = m[:, rng.permutation(length)]
    return m[:n_classes]


@dataclass(frozen=True)
class OutputCode:
    """An output code: name, matrix (classes x bits), output activation and training loss."""

    name: str
    matrix: np.ndarray
    activation: str  # softmax | sigmoid | tanh
    loss: str  # ce | bce | hinge
    chunks: int = 1  # number of independent sub-networks (ensemble models)

    @property
    def n_classes(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_bits(self) -> int:
        return self.matrix.shape[1]


def get_code(name: str) -> OutputCode:
    """Codes of Table 1 of the paper (plus TanhEns16 of Verma & Swami)."""
    codes = {
        "softmax": lambda: OutputCode("softmax", identity_code(10), "softmax", "ce"),
        "logistic": lambda: OutputCode("logistic", identity_code(10), "sigmoid", "bce"),
        "tanh16": lambda: OutputCode("tanh16", hadamard_code(10, 16), "tanh", "hinge"),
        "logisticens10": lambda: OutputCode("logisticens10", identity_code(10), "sigmoid", "bce", chunks=2),
        # The reference decodes TanhEns16 against all 16 rows (so it can predict "classes" 10-15); we decode
        # against the 10 rows that are real classes.
        "tanhens16": lambda: OutputCode("tanhens16", hadamard_code(16, 16)[:10], "tanh", "hinge", chunks=4),
    }
    if name not in codes:
        raise ValueError(f"unknown output code {name!r}; expected one of {sorted(codes)}")
    return codes[name]()


class ECOCDecoder(nn.Module):
    """Maps raw per-bit outputs to class scores.

    ``output`` selects what :meth:`forward` returns:
    ``logits``: log-ReLU decoded logits (the defended model as published; softmax gives its probabilities);
    ``correlations``: ``act(raw) @ M.T`` (before the log-ReLU);
    ``raw``: ``raw @ M.T``, the codeword correlations without the output activation (Tramer et al. 2020 attack
    these with a margin loss, bypassing tanh and the saturating log-ReLU).
    """

    def __init__(self, code: OutputCode):
        super().__init__()
        self.code = code
        self.register_buffer("M", torch.as_tensor(code.matrix, dtype=torch.float32))

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        act = self.code.activation
        if act == "softmax":
            return torch.softmax(raw, dim=-1)
        if act == "sigmoid":
            return torch.sigmoid(raw)
        if act == "tanh":
            return torch.tanh(raw)
        raise ValueError(f"unknown output activation {act!r}")

    def correlations(self, raw: torch.Tensor) -> torch.Tensor:
        return self.activate(raw) @ self.M.T

    def raw_correlations(self, raw: torch.Tensor) -> torch.Tensor:
        return raw @ self.M.T

    def forward(self, raw: torch.Tensor, output: str = "logits") -> torch.Tensor:
        if output == "logits":
            return torch.log(F.relu(self.correlations(raw)) + LOG_RELU_EPS)
        if output == "correlations":
            return self.correlations(raw)
        if output == "raw":
            return self.raw_correlations(raw)
        raise ValueError(f"unknown decoder output {output!r}; expected one of {OUTPUTS}")

    def loss(self, raw: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss of the code's bits, averaged over the batch. BCE is summed over bits (the negative
        log-likelihood of an example is the sum over its independent bits, as the ELBO needs and as the reference code
        computes); the hinge loss, not a likelihood, is averaged over bits as in the reference code."""
        kind = self.code.loss
        if kind == "ce":
            return F.cross_entropy(raw, y)
        target = self.M[y]
        if kind == "bce":
            return F.binary_cross_entropy_with_logits(raw, target, reduction="sum") / raw.shape[0]
        if kind == "hinge":  # on the pre-tanh outputs, targets in {-1, +1}
            return F.relu(1 - target * raw).mean()
        raise ValueError(f"unknown code loss {kind!r}")
