"""Diagnostic plots of a (random) model, written next to its leaderboard entries.

:func:`make_plots` writes, for one model, into ``out_dir`` (``<out-dir>/<dataset>/<threat_model>/plots`` when
called by ``lwta evaluate --plots`` or ``lwta plots``; the default ``<out-dir>`` is ``runs``):

``<name>__acc_vs_eps.png``
    Accuracy under L-inf PGD as eps grows (0 = clean). A robust-looking curve that does not reach 0 at large eps
    is a classic sign of gradient masking. The eps grid is refined where the curve falls steeply, so the range
    where it moves has points.
``<name>__acc_vs_eot.png``
    Accuracy under PGD at the data set's eps as the number of EOT samples per gradient grows: if accuracy keeps
    falling, the one-sample attack was weakened by the model's randomness.

Both curves carry 95 % confidence bands (:func:`lwta_plugin.statistics.confidence_interval` over the images and
the model's randomness) and, where a ReLU network with the same output code is given (``baseline``; ``lwta plots``
picks the shipped ``relu_<code>``), its curves on the same images, dashed.
``<name>__winners.png``
    The paper's Fig. 2: mean winning probability of each unit of an intermediate LWTA layer, per input class,
    for benign and PGD inputs (black = high). For conv layers the probability is averaged over positions.
``<name>__logits_pgd.png``
    The paper's Fig. 3: the raw output logits (codeword correlations ``raw @ M.T``; for the Softmax code the
    pre-softmax logits) of one test image, one stochastic pass per step, as PGD runs.

Layers are named for a person ("dense LWTA layer 2 of 2, 64 units in blocks of U = 2"), with the module path
in brackets.
``<name>__plots.json``
    Every plotted number and setting (seed, images, steps), so a plot can be checked or redrawn.

The attack is the package's L-inf PGD (:class:`lwta_plugin.attacks.PGD`: random start, step ``2.5 eps / steps``,
cross-entropy of the decoded logits, EOT = the mean loss gradient over ``eot`` stochastic passes, best iterate
returned), kept cheap on purpose: a few dozen images and a few steps (:class:`PlotSettings`). These are
diagnostics, not robustness estimates (those are the protocols of :mod:`lwta_plugin.protocols`). Accuracy = mean
over ``passes`` predictions per image, each averaging ``model.samples`` stochastic passes (the model's inference
rule). Each part is seeded from ``(seed, name, part)``.

Matplotlib is used through its object API with the Agg canvas: no pyplot, no global backend change.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .attacks import PGD
from .evaluation.config import DEFAULT_OUT_DIR
from .evaluation.loading import load_model_for_evaluation, load_test_data, pair_checkpoints
from .io import atomic_write, atomic_write_json
from .layers import StochasticConv2d, StochasticLinear
from .protocols import EPS
from .statistics import correct_counts, seed_everything, stable_seed, summarize_counts

PLOTS_FORMAT = "lwta-plugin/plots-1"
EPS_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
EOT_VALUES = (1, 2, 4, 8)


@dataclass(frozen=True)
class PlotSettings:
    """What :func:`make_plots` computes: the first ``n_images`` images; PGD with ``steps`` steps; ``passes``
    predictions per image; eps at ``eps_fractions`` of the data set's eps; ``eot_values`` EOT samples per
    gradient; a ``trajectory_steps``-step PGD for Fig. 3; ``winner_samples`` stochastic passes and at most
    ``max_units`` units shown for Fig. 2."""

    n_images: int = 32
    steps: int = 10
    refine: int = 3  # extra eps points, each halving the interval where accuracy falls most (>= 15 points)
    passes: int = 4
    eps_fractions: tuple[float, ...] = EPS_FRACTIONS
    eot_values: tuple[int, ...] = EOT_VALUES
    trajectory_steps: int = 40
    winner_samples: int = 5
    max_units: int = 32

    def __post_init__(self) -> None:
        if self.refine < 0:
            raise ValueError(f"refine must be >= 0, got {self.refine}")
        for name in ("n_images", "steps", "passes", "trajectory_steps", "winner_samples", "max_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "eps_fractions", tuple(self.eps_fractions))
        object.__setattr__(self, "eot_values", tuple(self.eot_values))
        if not self.eot_values or min(self.eot_values) < 1:
            raise ValueError(f"eot_values must be integers >= 1, got {self.eot_values}")


def _eps(dataset: str) -> float:
    if dataset not in EPS:
        raise ValueError(f"no eps for data set {dataset!r}; known: {sorted(EPS)}")
    return EPS[dataset]


def _bar(total: int, desc: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm  # slow to import: only when a bar is shown

    return tqdm(total=total, desc=desc, unit="setting", file=sys.stderr, leave=False)


# ---------------------------------------------------------------------------------------------------------------
# attack and accuracy


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, eot: int = 1,
        on_step: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """The package's L-inf PGD (:class:`~lwta_plugin.attacks.PGD`, step ``2.5 eps / steps``) with ``eot`` EOT
    samples per gradient; ``x`` itself for eps 0. ``on_step`` receives every point of the path (``steps + 1``)."""
    if eps <= 0:
        return x.clone()
    return PGD(model, eps=eps, steps=steps, eot_samples=eot, on_step=on_step)(x, y)


def raw_logits_recorder(model: torch.nn.Module, store: list[torch.Tensor]) -> Callable[[torch.Tensor], None]:
    """A PGD ``on_step`` callback appending the raw output logits (``output="raw"``) of one stochastic pass on the
    current adversarial images to ``store``."""
    def record(x_t: torch.Tensor) -> None:
        with torch.no_grad():
            store.append(model.forward_samples(x_t, 1, "raw")[0].detach().clone())

    return record


Point = dict[str, float]  # {"mean", "ci_low", "ci_high"}: accuracy and its 95 % interval


def accuracy_point(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int) -> Point:
    """Accuracy over images and ``passes`` predictions per image (each averaging ``model.samples`` passes), with
    its 95 % interval."""
    return summarize_counts(correct_counts(model, x, y, passes, model.samples), passes)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int) -> float:
    """Mean over images and ``passes`` predictions (each averaging ``model.samples`` passes) of correctness."""
    return accuracy_point(model, x, y, passes)["mean"]


def refine_eps(eps_values: Sequence[float], points: Sequence[Point], extra: int, min_drop: float = 0.15,
               min_width: float = 1e-3) -> float | None:
    """The next eps to measure: the midpoint of the interval where accuracy falls most (by at least
    ``min_drop``, interval wider than ``min_width``); None when there is none or ``extra`` is 0."""
    if extra <= 0:
        return None
    order = sorted(range(len(eps_values)), key=lambda i: eps_values[i])
    best, where = min_drop, None
    for a, b in itertools.pairwise(order):
        drop = points[a]["mean"] - points[b]["mean"]
        if drop >= best and eps_values[b] - eps_values[a] > min_width:
            best, where = drop, round((eps_values[a] + eps_values[b]) / 2, 6)
    return where


def accuracy_vs_eps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float],
                    steps: int, passes: int, progress: bool = False, refine: int = 0) -> tuple[list[float],
                                                                                                list[Point]]:
    """Accuracy under PGD (``steps`` steps, no EOT) for each eps (0: clean), then for up to ``refine`` eps
    inserted where the curve falls most (:func:`refine_eps`). Returns the sorted eps values and their points."""
    eps_values, out = list(eps_values), []
    bar = _bar(len(eps_values) + refine, "acc vs eps", progress)
    for eps in eps_values:
        out.append(accuracy_point(model, pgd(model, x, y, eps, steps), y, passes))
        if bar is not None:
            bar.update()
    for k in range(refine):
        eps = refine_eps(eps_values, out, refine - k)
        if eps is None or eps in eps_values:
            break
        eps_values.append(eps)
        out.append(accuracy_point(model, pgd(model, x, y, eps, steps), y, passes))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    order = sorted(range(len(eps_values)), key=lambda i: eps_values[i])
    return [eps_values[i] for i in order], [out[i] for i in order]


def accuracy_vs_eot(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    eot_values: Sequence[int], steps: int, passes: int, progress: bool = False) -> list[Point]:
    """Accuracy under PGD at ``eps`` for each number of EOT samples per gradient."""
    out = []
    bar = _bar(len(eot_values), "acc vs EOT", progress)
    for eot in eot_values:
        out.append(accuracy_point(model, pgd(model, x, y, eps, steps, eot=eot), y, passes))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return out


def _curve(xs: Sequence[float], points: Sequence[Point], key: str) -> dict[str, list[float]]:
    return {key: list(xs), "accuracy": [p["mean"] for p in points], "ci_low": [p["ci_low"] for p in points],
            "ci_high": [p["ci_high"] for p in points]}


def relu_baseline_name(model: torch.nn.Module, dataset: str) -> str | None:
    """The shipped ReLU network with ``model``'s output code (``relu_<code>``), or None (a ReLU model itself,
    no code, or no such shipped model)."""
    config = getattr(model, "config", None)
    code, activation = getattr(config, "code", None), getattr(config, "activation", None)
    if code is None or activation == "relu":
        return None
    from .zoo import available_models

    name = f"relu_{code}"
    return name if any(m["name"] == name for m in available_models(dataset)) else None


# ---------------------------------------------------------------------------------------------------------------
# winner probabilities (Fig. 2)


def lwta_layers(model) -> list[tuple[str, Any]]:
    """``(module name, layer)`` of every competitive (``lwta`` or ``lwtamax``) layer, in forward order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (StochasticConv2d, StochasticLinear)) and m.activation in ("lwta", "lwtamax")]


def pick_layer(model) -> tuple[str, Any] | None:
    """An intermediate LWTA layer for Fig. 2: the last dense LWTA layer with at least 8 units (the last hidden
    competitive layer of the standard networks), else the middle LWTA layer; None for ReLU networks."""
    layers = lwta_layers(model)
    if not layers:
        return None
    dense = [(n, m) for n, m in layers if isinstance(m, StochasticLinear) and m.out_features >= 8]
    return dense[-1] if dense else layers[len(layers) // 2]


def describe_layer(model, name: str) -> str:
    """A person's name for the competitive layer ``name`` of ``model``: its kind and position among the layers of
    that kind in its network (or output head), its width and U, and the module path."""
    layers = lwta_layers(model)
    layer = dict(layers)[name]
    kind = "conv" if isinstance(layer, StochasticConv2d) else "dense"
    parent = name.rsplit(".", 1)[0]
    siblings = [n for n, m in layers if n.rsplit(".", 1)[0] == parent
                and isinstance(m, StochasticConv2d) == (kind == "conv")]
    where = ""
    if ".heads." in name:  # the ensemble networks: one small network per output bit
        head_of = [n.split(".heads.", 1)[1].split(".")[:2] for n, _ in layers if ".heads." in n]
        heads = list(dict.fromkeys(tuple(h) for h in head_of))
        where = f" of output head {heads.index(tuple(name.split('.heads.', 1)[1].split('.')[:2])) + 1} of {len(heads)}"
    width = layer.out_channels if kind == "conv" else layer.out_features
    unit = "channels" if kind == "conv" else "units"
    competition = "LWTA" if layer.activation == "lwta" else "LWTA-max"
    return (f"{kind} {competition} layer {siblings.index(name) + 1} of {len(siblings)}{where}, {width} {unit} in "
            f"blocks of U = {layer.U} ({name})")


@contextlib.contextmanager
def capture_winners(layer) -> Iterator[list[torch.Tensor]]:
    """Record, for every forward pass of ``layer``, each unit's winning probability: ``softmax`` of its block's
    pre-activations ``h`` for stochastic LWTA, the one-hot argmax for deterministic LWTA. Yields a list that
    receives ``[rows, units]`` tensors (conv layers: averaged over positions). Wraps the layer's ``_activate``
    on the instance only (no change to :mod:`lwta_plugin.layers`), restored on exit."""
    store: list[torch.Tensor] = []
    original = layer._activate

    def activate(h: torch.Tensor, view: tuple[int, ...], dim: int) -> torch.Tensor:
        hv = h.detach().reshape(view)
        if layer.activation == "lwta":
            p = torch.softmax(hv, dim)
        else:
            p = torch.zeros_like(hv).scatter_(dim, hv.argmax(dim, keepdim=True), 1.0)
        if p.dim() > 3:  # conv: [B, K, U, H, W] -> mean over positions
            p = p.flatten(3).mean(3)
        store.append(p.reshape(p.shape[0], -1).float())
        return original(h, view, dim)

    layer._activate = activate
    try:
        yield store
    finally:
        del layer._activate


@torch.no_grad()
def winner_probabilities(model, x: torch.Tensor, y: torch.Tensor, layer, samples: int = 5,
                         n_classes: int = 10) -> torch.Tensor:
    """``[n_classes, units]``: mean winning probability of each unit of ``layer`` over the images of each class
    and ``samples`` stochastic passes (NaN for a class without images)."""
    with capture_winners(layer) as store:
        model.forward_samples(x, samples)
    if len(store) != 1:
        raise RuntimeError(f"expected one forward pass through the layer, saw {len(store)}")
    p = store[0].view(samples, len(x), -1).mean(0)  # [B, units]
    out = torch.full((n_classes, p.shape[1]), float("nan"))
    for c in range(n_classes):
        sel = y == c
        if sel.any():
            out[c] = p[sel].mean(0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# drawing


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend); ImportError without matplotlib."""
    # matplotlib is optional (the "plots" extra) and slow to import: imported only when drawing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG atomically, without the software tag (so reruns give the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _line_plot(path: Path, xs: Sequence[float], curve: dict[str, list[float]], xlabel: str, title: str,
               log_x: bool = False, mark_x: float | None = None, label: str = "model",
               baseline: tuple[str, Sequence[float], dict[str, list[float]]] | None = None) -> Path:
    """Accuracy (%) against ``xs`` with its 95 % band; ``baseline``: (name, xs, curve) drawn dashed in gray."""
    fig = new_figure(5.4, 3.8)
    ax = fig.add_subplot()
    series = [(label, xs, curve, "tab:blue", "-")]
    if baseline is not None:
        series.append((baseline[0], baseline[1], baseline[2], "dimgray", "--"))
    for name, x_values, c, color, ls in series:
        ax.fill_between(x_values, [100 * v for v in c["ci_low"]], [100 * v for v in c["ci_high"]], color=color,
                        alpha=0.15, lw=0)
        ax.plot(x_values, [100 * v for v in c["accuracy"]], marker="o", ms=3.5, color=color, ls=ls,
                label=f"{name} (95 % interval shaded)")
    if mark_x is not None:
        ax.axvline(mark_x, color="tab:red", ls=":", lw=0.9, label=f"threat model eps = {mark_x:g}")
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(xs), [str(v) for v in xs])
    ax.set_ylim(-2, 102)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _winners_plot(path: Path, benign: torch.Tensor, adv: torch.Tensor, U: int, layer: str, title: str,
                  unit: str = "unit") -> Path:
    import matplotlib  # optional, see new_figure

    units = benign.shape[1]
    fig = new_figure(min(3 + 0.16 * units, 14), 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    cmap = matplotlib.colormaps["Greys"].with_extremes(bad="#f4d0d0")  # bad: a class without images
    im = None
    for ax, data, what in zip(axes, (benign, adv), ("benign", "PGD")):
        im = ax.imshow(data.numpy(), cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{what}", fontsize=9)
        ax.set_xlabel(f"{unit} (blocks of U = {U})")
        for b in range(1, units // U):
            ax.axvline(b * U - 0.5, color="tab:red", lw=0.3, alpha=0.5)
    axes[0].set_ylabel("input class")
    axes[0].set_yticks(range(benign.shape[0]))
    fig.colorbar(im, ax=list(axes), fraction=0.03, label="mean winning probability")
    fig.suptitle(f"{title}\n{layer}", fontsize=9)
    return save_figure(fig, path)


def _trajectory_plot(path: Path, traj: torch.Tensor, label: int, title: str) -> Path:
    fig = new_figure(5, 3.6)
    ax = fig.add_subplot()
    steps = list(range(traj.shape[0]))
    for c in range(traj.shape[1]):
        true = c == label
        ax.plot(steps, traj[:, c].numpy(), lw=2.2 if true else 0.9, color="black" if true else None,
                label=f"class {c}" + (" (true)" if true else ""), zorder=3 if true else 2)
    ax.set_xlabel("PGD step")
    ax.set_ylabel("logit value (raw, one pass)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# entry point


def make_plots(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dataset: str,
               out_dir: str | os.PathLike, name: str, seed: int = 0, settings: PlotSettings | None = None,
               progress: bool = True, baseline: tuple[str, torch.nn.Module] | None = None) -> list[Path]:
    """Write the diagnostic plots of ``model`` (see the module docstring) for the first ``settings.n_images`` of
    ``(x, y)`` into ``out_dir``; returns the written paths (PNG files, then the JSON data file).

    ``baseline``: ``(name, model)`` of a reference network (the ReLU one with the same code), whose accuracy
    curves are computed on the same images with the same settings and seeds and overlaid."""
    s = settings or PlotSettings()
    out = Path(out_dir)
    x, y = x[:s.n_images].detach(), y[:s.n_images].detach()
    eps = _eps(dataset)
    models = [model] + ([baseline[1]] if baseline is not None else [])
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    paths: list[Path] = []
    data: dict[str, Any] = {"format": PLOTS_FORMAT, "model": name, "dataset": dataset, "seed": seed,
                            "n_images": len(x), "steps": s.steps, "passes": s.passes, "samples": model.samples,
                            "eps": eps, "interval": "95 % (statistics.confidence_interval)"}
    label = f"{name}, {dataset}\n{len(x)} images, PGD {s.steps} steps, {s.passes} predictions/image"

    def seed_part(part: str) -> None:
        seed_everything(stable_seed(seed, name, dataset, "plots", part))

    try:
        with contextlib.ExitStack() as stack:
            for m in models:
                stack.enter_context(m.using(output="logits"))
            seed_part("eps")
            grid = [round(f * eps, 6) for f in s.eps_fractions]
            eps_values, acc_eps = accuracy_vs_eps(model, x, y, grid, s.steps, s.passes, progress, s.refine)
            data["acc_vs_eps"] = _curve(eps_values, acc_eps, "eps")
            seed_part("eot")
            data["acc_vs_eot"] = _curve(s.eot_values, accuracy_vs_eot(model, x, y, eps, s.eot_values, s.steps,
                                                                      s.passes, progress), "eot")
            base_eps = base_eot = None
            if baseline is not None:
                bname, bmodel = baseline
                seed_part("baseline-eps")  # the baseline's curves on the model's eps values (no own refinement)
                _, b_eps = accuracy_vs_eps(bmodel, x, y, eps_values, s.steps, s.passes, progress)
                seed_part("baseline-eot")
                b_eot = accuracy_vs_eot(bmodel, x, y, eps, s.eot_values, s.steps, s.passes, progress)
                data["baseline"] = {"model": bname, "samples": getattr(bmodel, "samples", 1),
                                    "acc_vs_eps": _curve(eps_values, b_eps, "eps"),
                                    "acc_vs_eot": _curve(s.eot_values, b_eot, "eot")}
                base_eps = (bname, eps_values, data["baseline"]["acc_vs_eps"])
                base_eot = (bname, list(s.eot_values), data["baseline"]["acc_vs_eot"])
            paths.append(_line_plot(out / f"{name}__acc_vs_eps.png", eps_values, data["acc_vs_eps"], "eps (L-inf)",
                                    f"accuracy vs eps: {label}", mark_x=eps, label=name, baseline=base_eps))
            paths.append(_line_plot(out / f"{name}__acc_vs_eot.png", list(s.eot_values), data["acc_vs_eot"],
                                    "EOT samples per gradient", f"accuracy vs EOT (eps={eps:g}): {label}",
                                    log_x=True, label=name, baseline=base_eot))

            seed_part("winners")
            data["winners"] = _winners_part(model, x, y, eps, s, out / f"{name}__winners.png", name, paths)

            seed_part("trajectory")
            data["logits_pgd"] = _trajectory_part(model, x, y, eps, s.trajectory_steps,
                                                  out / f"{name}__logits_pgd.png", name, paths)
    finally:
        for m, was in zip(models, was_training):
            m.train(was)
    paths.append(atomic_write_json(out / f"{name}__plots.json", data))
    return paths


def _winners_part(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, s: PlotSettings,
                  path: Path, name: str, paths: list[Path]) -> dict | None:
    """Fig. 2 for benign and PGD images; its data (None for a network without competition)."""
    picked = pick_layer(model)
    if picked is None:
        return None
    layer_name, layer = picked
    x_adv = pgd(model, x, y, eps, s.steps)
    benign = winner_probabilities(model, x, y, layer, s.winner_samples, model.n_classes)
    adv = winner_probabilities(model, x_adv, y, layer, s.winner_samples, model.n_classes)
    units = min(benign.shape[1], max(s.max_units - s.max_units % layer.U, layer.U))
    described = describe_layer(model, layer_name)
    paths.append(_winners_plot(path, benign[:, :units], adv[:, :units], layer.U, described,
                               f"winning probabilities per class, {name}",
                               "channel" if isinstance(layer, StochasticConv2d) else "unit"))
    return {"layer": layer_name, "layer_description": described, "U": layer.U, "activation": layer.activation, "units_shown": units,
            "samples": s.winner_samples, "benign": _nested(benign), "pgd": _nested(adv)}


def _trajectory_part(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                     path: Path, name: str, paths: list[Path]) -> dict:
    """Fig. 3: the raw logits of test image 0 at every point of a ``steps``-step PGD; its data."""
    record: list[torch.Tensor] = []
    pgd(model, x[:1], y[:1], eps, steps, on_step=raw_logits_recorder(model, record))
    traj = torch.cat(record, 0)  # [steps + 1, classes]
    paths.append(_trajectory_plot(path, traj, int(y[0]), f"logits of test image 0 during PGD (eps={eps:g}), {name}"))
    return {"label": int(y[0]), "steps": steps, "raw_logits": _nested(traj)}


def _nested(t: torch.Tensor) -> list:
    """A tensor as nested lists of 6-significant-digit floats (None for NaN) for the JSON data file."""
    return [[None if math.isnan(v) else float(f"{v:.6g}") for v in row] for row in t.tolist()]


# ---------------------------------------------------------------------------------------------------------------
# command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta plots``: :func:`make_plots` for zoo models or checkpoints (``lwta evaluate --plots`` does the same
    after an evaluation)."""
    p = subparsers.add_parser("plots", help="diagnostic plots (accuracy vs eps / EOT, LWTA winners, PGD logits)",
                              description="Write the diagnostic plots of lwta_plugin.plots for each model into "
                                          "<out-dir>/<dataset>/Linf/plots (cheap: a few dozen test images).")
    p.add_argument("--model", action="append", default=None, help="zoo name (repeatable)")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="checkpoint file (repeatable; paired with --model in order, or the name is read from it)")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist", "cifar10"])
    p.add_argument("--n-images", type=int, default=32, help="test images (default 32)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--passes", type=int, default=4, help="predictions per image (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks and predictions (default 0)")
    p.add_argument("--baseline", default="auto",
                   help="model whose accuracy curves are overlaid: a zoo name, 'auto' (default: the shipped ReLU "
                        "network with the same output code, relu_<code>) or 'none'")
    p.add_argument("--out-dir", default=DEFAULT_OUT_DIR,
                   help=f"output root, as lwta evaluate --out-dir (default {DEFAULT_OUT_DIR})")
    p.add_argument("--model-dir", default=None, help="RobustBench-style model directory for unshipped checkpoints")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_plots_command)
    return p


def _plots_command(args: argparse.Namespace) -> int:
    for option in ("n_images", "steps", "passes"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    settings = PlotSettings(n_images=args.n_images, steps=args.steps, passes=args.passes)
    models, ckpts = pair_checkpoints(args.model, args.checkpoint)
    loaded = [load_model_for_evaluation(name, args.dataset, "Linf", 5, ckpts.get(name), args.model_dir)
              for name in models]
    x, y = load_test_data(args.dataset, args.n_images, args.data_root)
    baselines = BaselineCache(args.dataset, args.model_dir)
    for name, (model, _) in zip(models, loaded):
        baseline = baselines.get(args.baseline, name, model)
        paths = make_plots(model, x, y, args.dataset, Path(args.out_dir) / args.dataset / "Linf" / "plots", name,
                           args.seed, settings=settings, progress=not args.no_progress, baseline=baseline)
        for path in paths:
            if path.name.endswith("__plots.json"):  # the data file says what made it
                atomic_write_json(path, {**json.loads(path.read_text(encoding="utf-8")), "command": command_line()})
        for path in paths:
            print(f"wrote {path}")
    return 0


def command_line() -> str:
    """This process's command line as ``lwta ...`` (the entry point's path left out)."""
    return " ".join(["lwta", *(shlex.quote(a) for a in sys.argv[1:])])


class BaselineCache:
    """The overlaid baseline of each plotted model (``--baseline``), each loaded once."""

    def __init__(self, dataset: str, model_dir: str | os.PathLike | None = None):
        self.dataset, self.model_dir = dataset, model_dir
        self.loaded: dict[str, torch.nn.Module] = {}

    def get(self, choice: str | None, name: str, model: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
        """``(name, model)`` of the baseline for the plotted model ``name`` (None: no baseline, or the model is
        its own baseline)."""
        if choice in (None, "none"):
            return None
        bname = relu_baseline_name(model, self.dataset) if choice == "auto" else choice
        if bname is None or bname == name:
            return None
        if bname not in self.loaded:
            self.loaded[bname] = load_model_for_evaluation(bname, self.dataset, "Linf", 5, None, self.model_dir)[0]
        return bname, self.loaded[bname]
