"""The paper's networks (Verma & Swami architectures with LWTA/IBP layers) and a timm-style model registry.

Model names read ``<activation>[_ibp]_<code>[_u<U>][_fgsm|_refcode]``, e.g. ``lwta_ibp_tanh16``, ``lwtamax_softmax``,
``relu_logistic``, ``lwta_ibp_softmax_u4``, ``lwta_ibp_softmax_fgsm``. The ``_fgsm`` suffix names a training variant
(FGSM adversarial training, paper 4.4) of the same architecture, so that both can be in the zoo side by side.
The ``_refcode`` suffix (IBP models only) reproduces the authors' code where it differs from the paper's math
(see :mod:`lwta_plugin.layers`); it is a reproduction tool, never a default. Activations: ``relu`` (baseline), ``lwtamax`` (deterministic LWTA,
eq. 3), ``lwta`` (stochastic LWTA). U defaults to 2. Every model takes images in [0, 1] (NCHW) and returns
class logits, so it can be attacked by torchattacks and benchmarked by RobustBench as is.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .codes import OUTPUTS, ECOCDecoder, get_code
from .eot import reduce_samples
from .layers import REFERENCE_N, Sampling, StochasticConv2d, StochasticLinear, set_sampling, stochastic_layers

CODES = ("softmax", "logistic", "tanh16", "logisticens10", "tanhens16")
ENSEMBLE_CODES = ("logisticens10", "tanhens16")
MODEL_ACTIVATIONS = ("relu", "lwtamax", "lwta")
ARCH_DATASETS = {"mnist": "mnist", "fashion_mnist": "mnist", "cifar10": "cifar10"}
_NAME = re.compile(r"^(relu|lwtamax|lwta)(_ibp)?_([a-z0-9]+?)(?:_u(\d+))?(?:_(fgsm|refcode))?$")
# Variants of an architecture: "fgsm" FGSM adversarial training; "refcode" the authors' code behaviour (layers.py
# module docstring), a reproduction tool for IBP models that changes the IBP parameters and the training objective.
VARIANTS = ("", "fgsm", "refcode")
# Rows (images x draws) per batched pass at inference. The first layer's activations are 200 KB per MNIST row, so a
# pass of 500 rows (S = 5 draws of 100 images) works far outside the caches: on this 2-core CPU with one thread,
# 128-row passes made S = 5 inference 1.3-1.9x faster than 1,024-row ones in every measurement
# (benchmarks/bench_inference.py; benchmarks/README.md). Same draws' distribution either way.
MAX_ROWS = 128


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every checkpoint."""

    activation: str
    ibp: bool
    code: str
    U: int
    dataset: str
    variant: str = ""  # VARIANTS; only "refcode" changes the layers

    @property
    def name(self) -> str:
        ibp = "_ibp" if self.ibp else ""
        u = "" if self.U == 2 else f"_u{self.U}"
        variant = f"_{self.variant}" if self.variant else ""
        return f"{self.activation}{ibp}_{self.code}{u}{variant}"

    @property
    def arch(self) -> str:
        """The architecture's name, without the variant."""
        return ModelConfig(self.activation, self.ibp, self.code, self.U, self.dataset).name

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.variant:  # checkpoints written before variants existed have no such key
            del d["variant"]
        return d


def parse_name(name: str, dataset: str = "mnist") -> ModelConfig:
    """Parse a registry name into a :class:`ModelConfig`; raises ValueError naming the valid forms."""
    m = _NAME.match(name)
    if not m or m.group(3) not in CODES:
        raise ValueError(f"unknown model {name!r}; names look like <relu|lwtamax|lwta>[_ibp]_<code>[_u<U>][_fgsm|_refcode] with "
                         f"code in {CODES}, e.g. 'lwta_ibp_tanh16'. Known: {', '.join(list_models()[:6])}, ...")
    if dataset not in ARCH_DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {sorted(ARCH_DATASETS)}")
    act, ibp, code, u = m.group(1), bool(m.group(2)), m.group(3), int(m.group(4) or 2)
    if act == "relu" and (ibp or m.group(4)):
        raise ValueError(f"{name!r}: the ReLU baseline has no IBP and no blocks (U)")
    if u not in (2, 4):
        raise ValueError(f"{name!r}: U must be 2 or 4 (the paper's settings)")
    if m.group(5) == "refcode" and not ibp:
        raise ValueError(f"{name!r}: the reference-code variant reproduces the authors' IBP code; it needs _ibp")
    return ModelConfig(act, ibp, code, u, dataset, m.group(5) or "")


def list_models() -> list[str]:
    """All registered architecture names."""
    names = []
    for code in CODES:
        names.append(f"relu_{code}")
        for act in ("lwtamax", "lwta"):
            for ibp in ("", "_ibp"):
                names += [f"{act}{ibp}_{code}", f"{act}{ibp}_{code}_u4"]
    # the reference-code variant exists for IBP models only (parse_name refuses the others)
    return names + [f"{n}_{v}" for v in VARIANTS if v for n in names if v != "refcode" or "_ibp_" in n]


# What the parts of a name mean, for people: RobustBench's short ``architecture`` string and the model cards.
CODE_NAMES = {"softmax": "Softmax (I10)", "logistic": "Logistic (I10)", "tanh16": "Tanh16 (Hadamard H16)",
              "logisticens10": "LogisticEns10 (ensemble, I10)", "tanhens16": "TanhEns16 (ensemble, H16)"}
CODE_DESCRIPTIONS = {
    "softmax": "one-hot output code, softmax cross-entropy",
    "logistic": "one-hot output code with independent sigmoid bits (binary cross-entropy)",
    "tanh16": "16-bit Hadamard error-correcting output code with tanh bits (hinge loss)",
    "logisticens10": "ensemble of 2 sub-networks, 10 sigmoid bits (one-hot code)",
    "tanhens16": "ensemble of 4 sub-networks, 16-bit Hadamard code with tanh bits",
}
ACTIVATION_DESCRIPTIONS = {
    "lwta": "stochastic local winner-takes-all (LWTA): units form blocks of U = {U} that compete; the winner of "
            "each block is *sampled* from a softmax over the block (at training and at test time) and only it passes",
    "lwtamax": "deterministic local winner-takes-all: in each block of U = {U} units only the largest passes",
    "relu": "ReLU (the non-competitive baseline)",
}


def architecture_family(code: str) -> str:
    """``ensemble`` or ``standard``: which of Verma & Swami's network families a code uses."""
    return "ensemble" if code in ENSEMBLE_CODES else "standard"


def describe_architecture(config: dict) -> str:
    """RobustBench's ``architecture`` string from a model config dict (a model from outside the plugin carries its
    own: ``config["architecture"]``)."""
    if "activation" not in config and isinstance(config.get("architecture"), str):
        return config["architecture"]
    act = {"relu": "ReLU", "lwtamax": f"deterministic LWTA (U={config['U']})",
           "lwta": f"stochastic LWTA (U={config['U']})"}[config["activation"]]
    return (f"Verma & Swami {architecture_family(config['code'])} CNN, {act}{' + IBP' if config['ibp'] else ''}, "
            f"{CODE_NAMES.get(config['code'], config['code'])} output code")


def _repeat(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.repeat(n, *([1] * (x.dim() - 1))) if n > 1 else x


class _Stack(nn.ModuleList):
    """Sequential container whose layers receive the number of sample groups.

    ``base``: optionally the ``B`` rows of which ``x`` (``n * B`` rows) is the ``n``-fold repetition; a first conv
    layer then computes its linear part once for all groups (see :class:`StochasticConv2d`).
    """

    def forward(self, x: torch.Tensor, n: int, base: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self):
            if i == 0 and base is not None and n > 1 and isinstance(layer, StochasticConv2d):
                x = layer(base, n, shared=True)
            else:
                x = layer(x, n) if isinstance(layer, (StochasticLinear, StochasticConv2d)) else layer(x)
        return x


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _layers(cfg: ModelConfig):
    act = "relu" if cfg.activation == "relu" else cfg.activation
    U = 1 if cfg.activation == "relu" else cfg.U
    ibp, ref = cfg.ibp, cfg.variant == "refcode"

    def conv(cin, cout, k, s=1, bn=False):
        return StochasticConv2d(cin, cout, k, s, U, act, ibp, bn, reference_code=ref)

    def dense(din, dout, activation=act, u=U):
        return StochasticLinear(din, dout, u, activation, ibp, reference_code=ref)

    return conv, dense, U


def _standard_body(cfg: ModelConfig, in_ch: int, n_bits: int) -> _Stack:
    """Verma & Swami's single network (reference doc 1.2): MNIST filters [64,64,64], one conv per stage, no BN;
    CIFAR-10 filters [32,64,128], two convs per stage with BN after the activation."""
    conv, dense, _ = _layers(cfg)
    mnist = cfg.dataset == "mnist"
    filters, rep, bn = ([64, 64, 64], 1, False) if mnist else ([32, 64, 128], 2, True)
    layers, c = [], in_ch
    for stage, f in enumerate(filters):
        for _ in range(rep):
            layers.append(conv(c, f, 5 if stage == 0 else 3, 1, bn))
            c = f
        layers.append(conv(c, f, 3, 2))
    flat = c * 4 * 4
    layers += [_Flatten(), dense(flat, 128), dense(128, 64), dense(64, 64, "none"), dense(64, n_bits, "none", 1)]
    return _Stack(layers)


class _EnsembleHead(nn.Module):
    """One bit of the ensemble network: a side branch on the (grayscale) image joined with the chunk trunk."""

    def __init__(self, cfg: ModelConfig, trunk_ch: int):
        super().__init__()
        conv, dense, _ = _layers(cfg)
        fe = 4 if cfg.dataset == "mnist" else 16
        self.side = _Stack([conv(1, fe, 5, 2), conv(fe, fe, 3, 2), conv(fe, fe, 3, 2)])
        self.joint = _Stack([conv(trunk_ch + fe, fe, 2), conv(fe, fe, 2), _Flatten(),
                             dense(fe * 16, 16), dense(16, 8), dense(8, 4),
                             dense(4, 2, "none", 1), dense(2, 1, "none", 1)])

    def forward(self, gray: torch.Tensor, trunk: torch.Tensor, n: int,
                gray_base: torch.Tensor | None = None) -> torch.Tensor:
        return self.joint(torch.cat([trunk, self.side(gray, n, gray_base)], 1), n)


class _EnsembleBody(nn.Module):
    """Verma & Swami's ensemble (reference doc 1.3): ``chunks`` trunks, each with one head per bit."""

    def __init__(self, cfg: ModelConfig, in_ch: int, n_bits: int, chunks: int):
        super().__init__()
        conv, _, _ = _layers(cfg)
        mnist = cfg.dataset == "mnist"
        filters, bn = ([32, 32, 32], False) if mnist else ([32, 64, 128], True)
        self.gray = in_ch == 3
        self.trunks, self.heads = nn.ModuleList(), nn.ModuleList()
        for _ in range(chunks):
            layers, c = [], in_ch
            for stage, f in enumerate(filters):
                k = 5 if stage == 0 else 3
                layers += [conv(c, f, k, 1, bn), conv(f, f, k, 1, bn), conv(f, f, 3, 2, bn and stage < 2)]
                c = f
            self.trunks.append(_Stack(layers))
            self.heads.append(nn.ModuleList(_EnsembleHead(cfg, c) for _ in range(n_bits // chunks)))

    def _gray(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gray:
            return x
        w = x.new_tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)  # tf.image.rgb_to_grayscale
        return (x * w).sum(1, keepdim=True)

    def forward(self, x: torch.Tensor, n: int, base: torch.Tensor | None = None) -> torch.Tensor:
        """``base``: optionally the rows of which ``x`` is the ``n``-fold repetition (see :class:`_Stack`)."""
        g, g_base = self._gray(x), (self._gray(base) if base is not None else None)
        bits = []
        for trunk, heads in zip(self.trunks, self.heads):
            t = trunk(x, n, base)
            bits += [head(g, t, n, g_base) for head in heads]
        return torch.cat(bits, 1)


class InferenceSamples:
    """The ``samples`` setting of a random model's prediction (the number of passes it averages, >= 1); shared by
    :class:`LWTANet` and the evaluator's wrapper of a user's model."""

    _samples: int

    @property
    def samples(self) -> int:
        """Passes averaged by one prediction."""
        return self._samples

    @samples.setter
    def samples(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"samples must be >= 1, got {value}")
        self._samples = int(value)


class LWTANet(InferenceSamples, nn.Module):
    """A network of the paper: body (raw per-bit outputs) + ECOC decoder.

    Inputs are images in [0, 1]; they are shifted to [-0.5, 0.5] as in the reference code. ``samples`` is the
    number of stochastic forward passes averaged at inference (paper: S = 5): the output is then the log of the
    mean class probabilities (``output="logits"``) or the mean scores (other outputs), so that softmax of the
    output is the averaged prediction. ``output`` selects the decoder output (see :class:`ECOCDecoder`).
    """

    def __init__(self, cfg: ModelConfig, samples: int = 1, output: str = "logits"):
        super().__init__()
        self.config = cfg
        self.code = get_code(cfg.code)
        in_ch = 1 if cfg.dataset == "mnist" else 3
        self.input_shape = (in_ch, 28, 28) if cfg.dataset == "mnist" else (in_ch, 32, 32)
        if cfg.code in ENSEMBLE_CODES:
            self.body = _EnsembleBody(cfg, in_ch, self.code.n_bits, self.code.chunks)
        else:
            self.body = _standard_body(cfg, in_ch, self.code.n_bits)
        self.decoder = ECOCDecoder(self.code)
        self.samples = samples
        self.output = output
        self.max_rows = MAX_ROWS  # rows per batched pass at inference (see forward_samples_chunked)

    @property
    def n_classes(self) -> int:
        return self.code.n_classes

    @property
    def output(self) -> str:
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        if value not in OUTPUTS:
            raise ValueError(f"unknown output {value!r}; expected one of {OUTPUTS}")
        self._output = value

    @property
    def stochastic(self) -> bool:
        """Whether the forward pass in eval mode is random (with the current sampling setting)."""
        return any(layer.stochastic for layer in stochastic_layers(self))

    def raw(self, x: torch.Tensor, n: int = 1) -> torch.Tensor:
        """Raw per-bit outputs for ``n`` independent samples of the randomness: [n * B, bits], sample-major.

        The first conv layer's linear part is the same for all samples and is computed once (``base``)."""
        x = x - 0.5
        if n > 1 and isinstance(self.body, (_Stack, _EnsembleBody)):
            return self.body(_repeat(x, n), n, base=x)
        return self.body(_repeat(x, n), n)

    def forward_samples(self, x: torch.Tensor, n: int, output: str | None = None) -> torch.Tensor:
        """Decoder outputs of ``n`` independent stochastic passes in one batched pass: [n, B, classes]."""
        out = self.decoder(self.raw(x, n), output or self.output)
        return out.view(n, x.shape[0], -1)

    def forward_samples_chunked(self, x: torch.Tensor, n: int, output: str | None = None) -> torch.Tensor:
        """:meth:`forward_samples` in passes of at most ``max_rows`` rows (images x samples).

        On CPU, passes of about a hundred rows keep the activations in cache; one pass of thousands of rows is
        several times slower (page faults on the large temporaries). Same distribution, same result shape.
        """
        B = x.shape[0]
        if n * B <= self.max_rows:
            return self.forward_samples(x, n, output)
        per = max(1, self.max_rows // B)  # samples per pass
        if per > 1 or B <= self.max_rows:
            return torch.cat([self.forward_samples(x, min(per, n - i), output) for i in range(0, n, per)], 0)
        return torch.cat([self.forward_samples_chunked(x[i:i + self.max_rows], n, output)
                          for i in range(0, B, self.max_rows)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.samples if (self.stochastic and not self.training) else 1
        out = self.forward_samples(x, S) if self.training else self.forward_samples_chunked(x, S)
        if S == 1:
            return out[0]
        # the inference rule: mean class probabilities for the logits output, mean scores for the other outputs
        return reduce_samples(out, "probs" if self.output == "logits" else "logits")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training data loss of the code and the raw outputs of one pass."""
        raw = self.raw(x)
        return self.decoder.loss(raw, y), raw

    def kl(self) -> torch.Tensor:
        """Sum of all layers' KL terms (IBP globals + winner KL of the last training pass)."""
        terms = [layer.kl() for layer in stochastic_layers(self) if layer.ibp is not None or layer.kl_local is not None]
        return torch.stack(terms).sum() if terms else torch.zeros((), device=self.decoder.M.device)

    def kl_weight(self, n_train: int, batch_size: int) -> float:
        """Weight of :meth:`kl` beside the batch-mean data loss in the negative ELBO: 1 / N. The reference-code
        variant weighs it as the authors' loss does: sum of per-example CE/BCE + KL / 60,000, i.e.
        1 / (60,000 * B) beside the mean, and 1 / 60,000 beside the hinge loss, which it averages."""
        if self.config.variant != "refcode":
            return 1.0 / n_train
        return 1.0 / (REFERENCE_N * (1 if self.code.loss == "hinge" else batch_size))

    def constrain_(self) -> None:
        """Apply the parameter constraints after an optimisation step (only the reference-code variant has any)."""
        for layer in stochastic_layers(self):
            if layer.ibp is not None:
                layer.ibp.constrain_()

    def ibp_parameters(self) -> Iterator[nn.Parameter]:
        for layer in stochastic_layers(self):
            if layer.ibp is not None:
                yield from layer.ibp.parameters()

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        ibp = {id(p) for p in self.ibp_parameters()}
        return (p for p in self.parameters() if id(p) not in ibp)

    def set_sampling(self, sampling: Sampling | str | None = None, **changes) -> Sampling:
        return set_sampling(self, sampling, **changes)

    @contextlib.contextmanager
    def sampling(self, sampling: Sampling | str | None = None, **changes):
        """Temporarily change the test-time behaviour (e.g. ``with model.sampling("argmax"):``)."""
        previous = set_sampling(self, sampling, **changes)
        try:
            yield self
        finally:
            set_sampling(self, previous)

    @contextlib.contextmanager
    def using(self, samples: int | None = None, output: str | None = None):
        """Temporarily change ``samples`` and/or ``output``."""
        old = (self.samples, self.output)
        try:
            if samples is not None:
                self.samples = samples
            if output is not None:
                self.output = output
            yield self
        finally:
            self.samples, self.output = old


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Weights+biases, IBP variational parameters and BatchNorm parameters (incl. running stats, as Keras)."""
    ibp = sum(p.numel() for p in model.ibp_parameters()) if isinstance(model, LWTANet) else 0
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
             for p in [*m.parameters(), m.running_mean, m.running_var])
    total = sum(p.numel() for p in model.parameters())
    bn_trainable = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    return {"weights": total - ibp - bn_trainable, "ibp": ibp, "batchnorm": bn}


def create_model(name: str, dataset: str = "mnist", samples: int = 1, output: str = "logits") -> LWTANet:
    """Build an (untrained) model by registry name, e.g. ``create_model("lwta_ibp_tanh16", "mnist")``."""
    cfg = parse_name(name, ARCH_DATASETS.get(dataset, dataset))
    return LWTANet(cfg, samples=samples, output=output)


def model_from_config(cfg: dict | ModelConfig, samples: int = 1, output: str = "logits") -> LWTANet:
    if isinstance(cfg, dict):
        try:
            cfg = ModelConfig(**cfg)
        except TypeError as e:
            raise ValueError(f"invalid model config {cfg!r}: {e}") from None
    if cfg.name not in list_models():
        raise ValueError(f"model config {cfg} does not name a registered architecture")
    parse_name(cfg.name, cfg.dataset)
    return LWTANet(cfg, samples=samples, output=output)
