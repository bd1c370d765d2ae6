"""Stochastic LWTA layers with IBP utility variables (Panousis et al., AISTATS 2021, sections 2-3).

Conventions
-----------
* Competition: a layer with ``K*U`` outputs forms ``K`` blocks of ``U`` *adjacent* units (channels for conv
  layers, independently at every spatial location). Unit ``k*U + u`` belongs to block ``k``.
* IBP utilities ``z``: dense layers have one ``z[j, k]`` per (input, block) connection, conv layers one ``z[k]``
  per kernel (block). The ``U`` units of a block share their utility (paper eq. 4 and 9). Sticks ``v_k`` follow
  a Kumaraswamy posterior and ``pi_k = prod_{i<=k} v_i`` runs over the blocks ``K``.
* Sample groups: every layer's ``forward(x, n)`` receives a batch of ``n * B`` rows in sample-major order and
  draws ``z`` independently for each of the ``n`` groups. This is what makes a batched EOT pass (the input
  repeated ``n`` times) equivalent to ``n`` independent forward passes. Winners are drawn per row anyway.

Test-time behaviour is selected per layer by :class:`Sampling` (see :func:`set_sampling`).

Reference-code behaviour (``reference_code=True``, opt-in, models named ``*_refcode``): the layers replicate what
the authors' TensorFlow code computes where it differs from the paper's math (reference document, section 3 and
section 7 items 8-12): z tiled rather than repeated over the U units (unit ``j`` gets the utility of block
``j mod K``), dense sticks with one stick per (input, block) and the stick-breaking product over the *input* axis,
the Bernoulli KL without its (1 - q) term, logs floored at 1e-8, the winner KL divided by U (and by 60,000 once
more in conv layers), the sticks initialised at conc1 = 2.0, conc0 = 0.5453 and the parameters clipped after
each step. It exists to reproduce the authors' numbers, never as the default (``docs/differences.md``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

WinnerMode = Literal["sample", "concrete", "argmax", "expected"]
ZMode = Literal["sample", "concrete", "expected", "ones"]
ACTIVATIONS = ("relu", "lwta", "lwtamax", "none")
EULER_GAMMA = 0.5772156649015329
_EPS = 1e-7
REFERENCE_N = 60000  # the reference code's hard-coded data set size
_REF_LOG_FLOOR = math.log(1e-8)


@dataclass(frozen=True)
class Sampling:
    """How stochastic layers behave (at test time; training always uses the relaxations).

    winner: ``sample`` exact draw from Categorical(softmax(block)) (the paper), ``concrete`` the reference code's
        Gumbel-softmax at ``test_temperature``, ``argmax`` the deterministic most probable winner, ``expected``
        each unit scaled by its winning probability (the mean of the layer output given ``h``).
    z: ``sample`` exact Bernoulli draw (the paper), ``concrete`` the reference code's binary concrete at
        ``test_temperature`` times the mask sigmoid(t_pi) > ``prune_threshold``, ``expected`` sigmoid(t_pi),
        ``ones`` ignore the utilities.
    straight_through: with ``winner="sample"``, the forward pass uses the sampled one-hot winner and the backward
        pass the gradient of softmax probabilities (BPDA / straight-through estimator).
    """

    winner: WinnerMode = "sample"
    z: ZMode = "sample"
    straight_through: bool = False
    train_temperature: float = 0.67
    test_temperature: float = 0.01
    prune_threshold: float = 0.01

    def __post_init__(self) -> None:
        if self.winner not in ("sample", "concrete", "argmax", "expected"):
            raise ValueError(f"unknown winner mode {self.winner!r}; expected sample|concrete|argmax|expected")
        if self.z not in ("sample", "concrete", "expected", "ones"):
            raise ValueError(f"unknown z mode {self.z!r}; expected sample|concrete|expected|ones")

    @property
    def deterministic(self) -> bool:
        return self.winner in ("argmax", "expected") and self.z in ("expected", "ones")


PAPER = Sampling()
REFERENCE_CODE = Sampling(winner="concrete", z="concrete")
DETERMINISTIC = Sampling(winner="argmax", z="expected")
EXPECTED = Sampling(winner="expected", z="expected")
SAMPLINGS = {"paper": PAPER, "concrete": REFERENCE_CODE, "argmax": DETERMINISTIC, "expected": EXPECTED}


# ----------------------------------------------------------------------------------------------- LWTA


def _gumbel_like(h: torch.Tensor) -> torch.Tensor:
    # -log(E), E ~ Exp(1), is a standard Gumbel variable; exponential_ is a single fused kernel.
    return -torch.empty_like(h).exponential_().log_()


def _logistic_like(h: torch.Tensor) -> torch.Tensor:
    return torch.rand_like(h, memory_format=torch.contiguous_format).clamp_(1e-6, 1 - 1e-6).logit_()


class _RelaxedLWTA2(torch.autograd.Function):
    """U = 2 training competition and per-row winner KL with the backward pass written out (fewer temporaries and
    passes over memory than the autograd graph of the same expressions; same values up to rounding).

    With d = h0 - h1, s = sigmoid((d + L) / t) (L ~ Logistic, given as ``noise``), q = sigmoid(d):
    out0 = h0 s, out1 = h1 - h1 s, kl_row = sum(q d - softplus(d)) over the row's blocks
    (logsigmoid(-d) = -softplus(d)). Gradients: dh0 = g0 s + s(1 - s)/t (g0 h0 - g1 h1) + gkl q(1 - q) d,
    dh1 = g1 (1 - s) - (the same two last terms).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, noise: torch.Tensor, dim: int, temperature: float):
        h0, h1 = h.unbind(dim)
        d = h0 - h1
        s = torch.add(d, noise).div_(temperature).sigmoid_()
        out = torch.empty_like(h)
        o0, o1 = out.unbind(dim)
        torch.mul(h0, s, out=o0)
        torch.addcmul(h1, h1, s, value=-1.0, out=o1)  # h1 - h1 s
        q = torch.sigmoid(d)
        neg_kl = torch.addcmul(F.softplus(d), q, d, value=-1.0)  # -(KL(q || U(2)) - log 2) = softplus(d) - q d
        dkl = torch.addcmul(q, q, q, value=-1.0).mul_(d)  # d kl / d d = q (1 - q) d
        ctx.save_for_backward(h, s, dkl)
        ctx.dim, ctx.temperature = dim, temperature
        return out, neg_kl.flatten(1).sum(1).neg_()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out: torch.Tensor, g_kl: torch.Tensor):
        h, s, dkl = ctx.saved_tensors
        h0, h1 = h.unbind(ctx.dim)
        g0, g1 = g_out.unbind(ctx.dim)
        common = torch.mul(g0, h0).addcmul_(g1, h1, value=-1.0)
        common.mul_(torch.addcmul(s, s, s, value=-1.0)).div_(ctx.temperature)
        common.addcmul_(dkl, g_kl.view(-1, *([1] * (dkl.dim() - 1))))
        grad = torch.empty_like(h)
        r0, r1 = grad.unbind(ctx.dim)
        torch.mul(g0, s, out=r0).add_(common)
        torch.addcmul(g1, g1, s, value=-1.0, out=r1).sub_(common)
        return grad, None, None, None


def relaxed_lwta_with_kl(h: torch.Tensor, dim: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time competition (Gumbel-softmax relaxation) and the batch-mean winner KL, sharing work."""
    if h.shape[dim] != 2:
        return lwta(h, dim, "relaxed", temperature), categorical_kl_to_uniform(h, dim).mean()
    # softmax((h + G) / t) over two units == sigmoid((h0 - h1 + L) / t), L ~ Logistic.
    # KL(q || U(2)) = q0 log q0 + q1 log q1 + log 2 = logsigmoid(-d) + q0 d + log 2
    noise = _logistic_like(h.select(dim, 0))
    out, kl_rows = _RelaxedLWTA2.apply(h, noise, dim, temperature)
    return out, kl_rows.mean() + math.log(2.0) * noise[0].numel()


def _sample_winner0(h: torch.Tensor, dim: int) -> torch.Tensor:
    """For U = 2: 1.0 where unit 0 wins (probability sigmoid(h0 - h1)), else 0.0; one uniform per block.
    The comparison is done in place into the float uniforms: no bool temporaries, no bool->float copy."""
    h0, h1 = h.unbind(dim)
    p0 = torch.sigmoid(h0 - h1)
    return torch.rand_like(p0).lt_(p0)


def argmax_mask(h: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot mask of the first maximal unit along ``dim`` (as ``argmax``). The U axis is short and strided:
    ``torch.argmax`` along it is several times slower on CPU than this running comparison of U slices."""
    h = h.detach()
    U = h.shape[dim]
    if U == 2:
        h0, h1 = h.unbind(dim)
        win0 = torch.ge(h0, h1).to(h.dtype)
        return torch.stack((win0, 1 - win0), dim)
    best, idx = h.select(dim, 0), torch.zeros(h.select(dim, 0).shape, dtype=torch.long, device=h.device)
    for u in range(1, U):
        hu = h.select(dim, u)
        better = hu > best
        best, idx = torch.where(better, hu, best), idx.masked_fill(better, u)
    return torch.zeros_like(h).scatter_(dim, idx.unsqueeze(dim), 1.0)


def sample_winner_mask(h: torch.Tensor, dim: int) -> torch.Tensor:
    """One-hot mask of a winner drawn exactly from Categorical(softmax(h)) along ``dim``."""
    if h.shape[dim] == 2:
        win0 = _sample_winner0(h, dim)
        # Written into the unbound views of one buffer: 1.4-1.8x faster than torch.stack, same values.
        mask = torch.empty_like(h, dtype=win0.dtype)
        m0, m1 = mask.unbind(dim)
        m0.copy_(win0)
        torch.neg(win0, out=m1).add_(1.0)
        return mask
    return argmax_mask(h.detach() + _gumbel_like(h), dim)


def lwta(h: torch.Tensor, dim: int, mode: str, temperature: float, straight_through: bool = False) -> torch.Tensor:
    """Competition among the units of ``h`` along ``dim`` (the U axis of a [.., K, U, ..] view).

    ``mode``: ``relaxed`` (Gumbel-softmax with ``temperature``, training), ``sample``, ``concrete``, ``argmax``,
    ``expected`` (see :class:`Sampling`).
    """
    if mode in ("relaxed", "concrete") and h.shape[dim] == 2:
        # softmax((h + G) / t) over two units == sigmoid((h0 - h1 + L) / t), L ~ Logistic: half the work.
        h0, h1 = h.unbind(dim)
        xi0 = torch.sigmoid((h0 - h1 + _logistic_like(h0)) / temperature)
        return torch.stack((h0 * xi0, h1 - h1 * xi0), dim)
    if mode in ("relaxed", "concrete"):
        xi = torch.softmax((h + _gumbel_like(h)) / temperature, dim)
    elif mode == "sample":
        xi = sample_winner_mask(h.detach(), dim)
        if not h.requires_grad:  # no autograd (inference): multiply into the fresh mask, saving a temporary
            return xi.mul_(h)
        if straight_through:
            p = torch.softmax(h, dim)
            xi = xi + p - p.detach()
    elif mode == "argmax":
        xi = argmax_mask(h, dim)
    elif mode == "expected":
        xi = torch.softmax(h, dim)
    else:
        raise ValueError(f"unknown LWTA mode {mode!r}")
    return h * xi


def categorical_kl_to_uniform(h: torch.Tensor, dim: int) -> torch.Tensor:
    """KL(softmax(h) || Uniform(U)) per example, summed over all blocks (and positions)."""
    if h.shape[dim] == 2:
        h0, h1 = h.unbind(dim)
        d = h0 - h1
        q0 = torch.sigmoid(d)
        # q0 log q0 + q1 log q1 = logsigmoid(-d) + q0 * d
        kl = F.logsigmoid(-d) + q0 * d + math.log(2.0)
        return kl.flatten(1).sum(1)
    logq = torch.log_softmax(h, dim)
    kl = (logq.exp() * (logq + math.log(h.shape[dim]))).sum(dim)
    return kl.flatten(1).sum(1)


# ------------------------------------------------------------------------------------------------ IBP


def kumaraswamy_log_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log v for v ~ Kumaraswamy(a, b), reparameterised by the inverse CDF v = (1 - u^(1/b))^(1/a)."""
    u = torch.rand_like(a).clamp_(1e-6, 1 - 1e-6)
    return torch.log1p(-torch.exp(torch.log(u) / b).clamp(max=1 - 1e-7)) / a


def kumaraswamy_beta_kl(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Closed-form KL(Kumaraswamy(a, b) || Beta(alpha, 1)) (exact because the prior's beta is 1)."""
    return ((1 - alpha / a) * (-EULER_GAMMA - torch.digamma(b) - 1 / b)
            + torch.log(a * b / alpha) - (b - 1) / b)


def bernoulli_kl(logit_q: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """Elementwise full KL(Bernoulli(sigmoid(logit_q)) || Bernoulli(pi)), with pi given by its log."""
    log_q, log_1mq = F.logsigmoid(logit_q), F.logsigmoid(-logit_q)
    log_1mpi = torch.log1p(-log_pi.exp().clamp(max=1 - _EPS))
    return log_q.exp() * (log_q - log_pi) + log_1mq.exp() * (log_1mq - log_1mpi)


def _softplus_inv(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class IBPUtility(nn.Module):
    """Stick-breaking IBP utilities z over ``shape = (*connections, K)`` with Kumaraswamy sticks over K.

    Posterior q(z) = Bernoulli(sigmoid(t_pi)), q(v_k) = Kumaraswamy(a_k, b_k), prior v_k ~ Beta(alpha, 1),
    z ~ Bernoulli(pi_k), pi_k = prod_{i<=k} v_i. Initialisation follows the paper (a = K, b = 1) for the sticks
    and the reference code for t_pi (U(4, 5): utilities start switched on). ``reference_code``: the authors'
    sticks, KL, initialisation and clipping (module docstring).
    """

    def __init__(self, shape: tuple[int, ...], alpha: float = 1.0, reference_code: bool = False):
        super().__init__()
        K = shape[-1]
        self.alpha, self.reference_code = alpha, reference_code
        if reference_code:  # one stick per t_pi entry (dense: [D_in, K]); raw values as the reference initialises
            self.conc1 = nn.Parameter(torch.full(shape, 2.0))
            self.conc0 = nn.Parameter(torch.full(shape, 0.5453))
        else:
            self.conc1 = nn.Parameter(torch.full((K,), _softplus_inv(float(K))))
            self.conc0 = nn.Parameter(torch.full((K,), _softplus_inv(1.0)))
        self.t_pi = nn.Parameter(torch.empty(shape).uniform_(4.0, 5.0))

    @property
    def q(self) -> torch.Tensor:
        return torch.sigmoid(self.t_pi)

    def sample(self, n: int, mode: str, sampling: Sampling) -> torch.Tensor:
        """z with a leading group axis of size ``n`` (or 1 when it is the same for all groups)."""
        t = self.t_pi
        if mode == "relaxed":
            u = torch.rand((n, *t.shape), device=t.device, dtype=t.dtype).clamp_(1e-6, 1 - 1e-6)
            return torch.sigmoid((t + torch.log(u) - torch.log1p(-u)) / sampling.train_temperature)
        if mode == "sample":
            return (torch.rand((n, *t.shape), device=t.device, dtype=t.dtype) < torch.sigmoid(t)).to(t.dtype)
        if mode == "concrete":
            u = torch.rand((n, *t.shape), device=t.device, dtype=t.dtype).clamp_(1e-6, 1 - 1e-6)
            z = torch.sigmoid((t + torch.log(u) - torch.log1p(-u)) / sampling.test_temperature)
            return z * (torch.sigmoid(t) > sampling.prune_threshold).to(t.dtype)
        if mode == "expected":
            return torch.sigmoid(t).unsqueeze(0)
        if mode == "ones":
            return torch.ones((1, *t.shape), device=t.device, dtype=t.dtype)
        raise ValueError(f"unknown z mode {mode!r}")

    def kl(self) -> torch.Tensor:
        """KL(q(z) q(v) || p(z|v) p(v)) with one reparameterised sample of the sticks."""
        a, b = F.softplus(self.conc1), F.softplus(self.conc0)
        # dim 0 is the K blocks for the paper's sticks; for the reference code's dense sticks it is the input axis
        log_pi = torch.cumsum(kumaraswamy_log_sample(a, b), dim=0)
        sticks = kumaraswamy_beta_kl(a, b, self.alpha).sum()
        if self.reference_code:
            log_q = torch.log(self.q.clamp(min=1e-8))
            return (self.q * (log_q - log_pi.clamp(min=_REF_LOG_FLOOR))).sum() + sticks
        return bernoulli_kl(self.t_pi, log_pi).sum() + sticks

    @torch.no_grad()
    def constrain_(self) -> None:
        """The reference code's parameter constraints, applied after each optimisation step (no-op otherwise)."""
        if not self.reference_code:
            return
        self.conc1.clamp_(min=-6.0)
        self.conc0.clamp_(min=-6.0)
        self.t_pi.clamp_(min=-5.0 if self.t_pi.dim() > 1 else -7.0, max=600.0)

    def active_fraction(self, threshold: float = 0.01) -> float:
        return float((self.q > threshold).float().mean())


# ---------------------------------------------------------------------------------------------- layers


class _StochasticLayer(nn.Module):
    def __init__(self, out_features: int, U: int, activation: str, ibp_shape: tuple[int, ...] | None,
                 reference_code: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if out_features % U:
            raise ValueError(f"{out_features} units cannot be split into blocks of U={U}")
        self.U, self.K, self.activation = U, out_features // U, activation
        self.reference_code = reference_code
        self.ibp = IBPUtility(ibp_shape, reference_code=reference_code) if ibp_shape is not None else None
        self.sampling = PAPER
        self.kl_local: torch.Tensor | None = None

    @property
    def stochastic(self) -> bool:
        """True if the layer's test-time output is random."""
        s = self.sampling
        lw = self.activation == "lwta" and s.winner in ("sample", "concrete")
        return lw or (self.ibp is not None and s.z in ("sample", "concrete"))

    def _z(self, n: int) -> torch.Tensor | None:
        if self.ibp is None:
            return None
        mode = "relaxed" if self.training else self.sampling.z
        return self.ibp.sample(n, mode, self.sampling)

    def _units(self, z: torch.Tensor, dim: int) -> torch.Tensor:
        """Expand the K block utilities along ``dim`` to the K*U units: each block's U units share z[k] (the
        paper); the reference code tiles instead, so that unit j gets z[j mod K]."""
        if self.reference_code:
            return z.repeat(*([1] * dim), self.U, *([1] * (z.dim() - dim - 1)))
        return z.repeat_interleave(self.U, dim=dim)

    def _activate(self, h: torch.Tensor, view: tuple[int, ...], dim: int) -> torch.Tensor:
        if self.activation == "none":
            return h
        if self.activation == "relu":
            return F.relu(h)
        hv = h.view(view)
        if self.activation == "lwtamax":
            out = lwta(hv, dim, "argmax", 1.0)
        else:
            s = self.sampling
            if self.training:
                out, self.kl_local = relaxed_lwta_with_kl(hv, dim, s.train_temperature)
                if self.reference_code:  # averaged over U, and conv layers divide by N once more
                    self.kl_local = self.kl_local / (self.U * (REFERENCE_N if len(view) > 3 else 1))
            else:
                out, self.kl_local = lwta(hv, dim, s.winner, s.test_temperature, s.straight_through), None
        return out.view(h.shape)

    def kl(self) -> torch.Tensor:
        """Global KL of this layer's IBP variables plus the batch-mean winner KL of the last training pass."""
        total = self.ibp.kl() if self.ibp is not None else torch.zeros((), device=self._device())
        if self.kl_local is not None:
            total = total + self.kl_local
        return total

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class StochasticLinear(_StochasticLayer):
    """Dense layer y = act((W * z) x + b) with K = out/U competing blocks (paper eq. 4-7)."""

    def __init__(self, in_features: int, out_features: int, U: int = 2, activation: str = "lwta",
                 ibp: bool = True, bias_init: float = 0.1, reference_code: bool = False):
        super().__init__(out_features, U, activation, (in_features, out_features // U) if ibp else None,
                         reference_code)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), bias_init))
        nn.init.xavier_normal_(self.weight)

    def _masked_weight(self, z: torch.Tensor) -> torch.Tensor:
        # z: [g, in, K] -> [g, out, in], each of the U units of block k uses z[:, :, k].
        return self.weight * self._units(z.transpose(1, 2), 1)

    def forward(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        z = self._z(n)
        if z is None:
            h = F.linear(x, self.weight, self.bias)
        elif z.shape[0] == 1:
            h = F.linear(x, self._masked_weight(z)[0], self.bias)
        else:
            w = self._masked_weight(z)  # [n, out, in]
            h = torch.baddbmm(self.bias, x.view(n, -1, self.in_features), w.transpose(1, 2))
            h = h.reshape(-1, self.out_features)
        return self._activate(h, (h.shape[0], self.K, self.U), 2)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class StochasticConv2d(_StochasticLayer):
    """Conv layer with competition among U adjacent feature maps at every location and one z per kernel
    (paper eq. 9). 'SAME' padding as TensorFlow computes it (asymmetric for even sizes with stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, U: int = 2,
                 activation: str = "lwta", ibp: bool = True, batchnorm: bool = False, reference_code: bool = False):
        super().__init__(out_channels, U, activation, (out_channels // U,) if ibp else None, reference_code)
        self.stride, self.kernel_size, self.out_channels = stride, kernel_size, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.xavier_normal_(self.weight)
        self.bn = nn.BatchNorm2d(out_channels) if batchnorm else None

    def _same(self, x: torch.Tensor) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """TF 'SAME' padding without copying ``x``: an asymmetric pad (p, p + 1) of an axis equals the symmetric
        conv padding p + 1 with one leading zero row (column) added to the kernel. Returns the kernel's F.pad
        widths and the symmetric conv padding."""
        ph = same_padding(x.shape[2], self.kernel_size, self.stride)
        pw = same_padding(x.shape[3], self.kernel_size, self.stride)
        return (pw[1] - pw[0], 0, ph[1] - ph[0], 0), (ph[1], pw[1])

    def forward(self, x: torch.Tensor, n: int = 1, shared: bool = False) -> torch.Tensor:
        """``x``: ``n * B`` rows in sample-major order, or with ``shared=True`` the ``B`` rows common to all ``n``
        sample groups (an input not yet repeated): the convolution is then computed once and only the utility
        mask, bias and winners are drawn per group, the same as a pass over ``x`` repeated ``n`` times."""
        wpad, pad = self._same(x)
        z = self._z(n)
        w = self.weight
        if z is not None and z.shape[0] == 1:  # one draw for the whole batch: masking the small weight is cheapest
            w = w * self._units(z[0], 0)[:, None, None, None]
            z = None
        if any(wpad):
            w = F.pad(w, wpad)
        if z is None:
            h = F.conv2d(x, w, self.bias, self.stride, pad)
            if shared and n > 1:
                h = h.repeat(n, 1, 1, 1)
        else:
            # (z_k W_k) * x + b == z_k (W_k * x) + b: mask output channels instead of n copies of the weights.
            h = F.conv2d(x, w, None, self.stride, pad)
            zc = self._units(z, 1)[:, None, :, None, None]  # [g, 1, C, 1, 1]
            h = h.unsqueeze(0) if shared else h.view(zc.shape[0], -1, *h.shape[1:])
            h = torch.addcmul(self.bias[:, None, None], h, zc)  # [g, B, C, H, W]
            h = h.view(-1, *h.shape[2:])
        B, _, H, W = h.shape
        out = self._activate(h, (B, self.K, self.U, H, W), 2)
        return self.bn(out) if self.bn is not None else out


def stochastic_layers(model: nn.Module) -> list[_StochasticLayer]:
    return [m for m in model.modules() if isinstance(m, _StochasticLayer)]


def set_sampling(model: nn.Module, sampling: Sampling | str | None = None, **changes) -> Sampling:
    """Set the test-time behaviour of every stochastic layer; returns the previous setting.

    ``sampling`` may be a :class:`Sampling`, a preset name (``paper``, ``concrete``, ``argmax``, ``expected``) or
    None (keep the current one); keyword ``changes`` override single fields.
    """
    layers = stochastic_layers(model)
    previous = layers[0].sampling if layers else PAPER
    if isinstance(sampling, str):
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling preset {sampling!r}; expected one of {sorted(SAMPLINGS)}")
        sampling = SAMPLINGS[sampling]
    new = replace(sampling or previous, **changes)
    for layer in layers:
        layer.sampling = new
    return previous
