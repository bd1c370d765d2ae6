"""Shared base of the attacks: hyperparameters, input checks, eval mode, device/dtype, best-iterate tracking.

Every attack is called as ``attack(x, y) -> x_adv`` on images ``x`` in [0, 1] (NCHW) with integer labels ``y``
and returns detached images in [0, 1] on ``x``'s device and dtype. ``attack.hparams`` holds the resolved
hyperparameters (recorded in leaderboard entries); ``attack.last_info`` describes the last call (which examples
were adversarial somewhere on the attack path, the per-step loss), for the attack-failure indicators.

Where torchattacks is installed the attacks are ``torchattacks.attack.Attack`` subclasses with its interface:
targeted modes (``set_mode_targeted_by_label`` and the others, for the attacks whose ``supported_mode`` lists
``targeted``), ``set_model_training_mode``, ``save`` / ``load`` of adversarial examples and composition with
``torchattacks.MultiAttack``. The interface is implemented here, so it behaves the same without torchattacks.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..eot import eot_predict, eot_predictions, margin_loss

try:  # optional dependency: the attacks are torchattacks attacks where it is installed
    from torchattacks.attack import Attack as _TorchattacksAttack
except ImportError:  # pragma: no cover - exercised by tox -e minimal
    _TorchattacksAttack = object


def model_device_dtype(model: nn.Module, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of ``model`` (its first parameter or buffer), else those of ``x``."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return x.device, x.dtype if x.is_floating_point() else torch.float32


def n_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """``model.n_classes`` if the model has it, else the width of its output on one image."""
    n = getattr(model, "n_classes", None)
    if n is not None:
        return int(n)
    with torch.no_grad():
        return int(model(x[:1]).shape[-1])


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """Put ``model`` in eval mode and restore its previous mode afterwards (:func:`training_mode` with its
    defaults)."""
    return training_mode(model)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 integer: bool = False, low_open: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number in the given range."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"<= {high}"
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what} {' and '.join(s for s in (lo, hi) if s)}, got {value!r}")


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project into the L-inf ball of radius ``eps`` around ``x`` and into [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


class BestIterate:
    """Per example, the point of the attack path with the largest decision margin seen so far.

    The margin is ``max_{j != y} log p_j - log p_y`` of the (averaged) prediction at that point, so an example is
    returned misclassified whenever any tracked point was (no "silent success", Pintor et al. 2022), and among
    misclassified points the most confidently misclassified one is kept. ``targeted``: ``y`` are target labels
    and the margin is ``log p_y - max_{j != y} log p_j`` (positive where the target is predicted).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, targeted: bool = False):
        self.x = x.detach().clone()
        self.y = y
        self.sign = -1.0 if targeted else 1.0
        self.margin = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
        self.ever_adversarial = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, x_t: torch.Tensor, log_probs: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Judge the points ``x_t`` by ``log_probs``; ``rows``: which examples they are (default: all, in order)."""
        if rows is None:
            rows = torch.arange(self.x.shape[0], device=self.x.device)
        m = self.sign * margin_loss(log_probs.detach(), self.y[rows]).to(self.margin.dtype)
        better = m > self.margin[rows]
        self.x[rows[better]] = x_t.detach()[better]
        self.margin[rows] = torch.where(better, m, self.margin[rows])
        self.ever_adversarial[rows] |= m > 0

    @property
    def adversarial(self) -> torch.Tensor:
        return self.margin > 0


def confirmed_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int,
                          samples: int, targeted: bool = False) -> torch.Tensor:
    """Which of the points ``x`` are misclassified by all of ``passes`` fresh predictions, each the average of
    ``samples`` draws: early exit stops attacking only such images.
    ``targeted``: ``y`` are target labels, and a point counts where all predictions are the target.

    Predictions stop at an image's first correct one; they are computed in batched passes of 1, 2, 4, ...
    predictions of the images still wrong (:func:`~lwta_plugin.eot.eot_predictions`)."""
    wrong = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    done, block = 0, 1
    while done < passes:
        idx = wrong.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        k = min(block, passes - done)
        pred = eot_predictions(model, x[idx], k, samples).argmax(-1)
        wrong[idx] = (pred == y[idx]).all(0) if targeted else (pred != y[idx]).all(0)
        done, block = done + k, block * 2
    return wrong


class ExitBackoff:
    """Which images' misclassified iterates an early exit confirms at a step. A failed confirmation (a fresh draw
    still classifies the point right) doubles that image's wait before its next try: a point at the decision
    boundary costs a handful of confirmations per attack instead of up to ``passes`` draws at every step."""

    def __init__(self, n: int, device: torch.device | str):
        self.next_try = torch.zeros(n, dtype=torch.long, device=device)
        self.wait = torch.ones(n, dtype=torch.long, device=device)

    def confirm(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, step: int,
                passes: int, samples: int, targeted: bool = False) -> torch.Tensor:
        """Of the points ``x`` (images ``rows``) at ``step``, which are confirmed adversarial now (by
        :func:`confirmed_adversarial`); images still waiting are not checked and count as not confirmed."""
        out = torch.zeros(rows.numel(), dtype=torch.bool, device=rows.device)
        due = (self.next_try[rows] <= step).nonzero().squeeze(1)
        if due.numel() == 0:
            return out
        out[due] = confirmed_adversarial(model, x[due], y[due], passes, samples, targeted)
        failed = rows[due[~out[due]]]
        self.next_try[failed] = step + self.wait[failed]
        self.wait[failed] *= 2
        return out


@contextlib.contextmanager
def training_mode(model: nn.Module, model_training: bool = False, batchnorm_training: bool = False,
                  dropout_training: bool = False) -> Iterator[nn.Module]:
    """The model in eval mode, or in training mode with BatchNorm and Dropout in eval unless asked otherwise
    (torchattacks' ``set_model_training_mode`` semantics); every module's own mode is restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        if model_training:
            model.train()
            for m in model.modules():
                kind = type(m).__name__
                if ("BatchNorm" in kind and not batchnorm_training) or ("Dropout" in kind and not dropout_training):
                    m.eval()
        else:
            model.eval()
        yield model
    finally:
        for m, was in modes:
            m.training = was


class Attack(_TorchattacksAttack):
    """Base class: subclasses set ``name`` and the facts below, and implement :meth:`perturb` on validated inputs.

    The class attributes ``bounded``, ``white_box``, ``iterative`` and ``budget_keys`` describe the attack for the
    attack-failure indicators (:mod:`lwta_plugin.attacks.indicators`), which read them through the registry;
    ``supports_targeted`` says whether it has torchattacks' targeted modes.

    ``perturb(x, y)`` receives ``x`` detached on the model's device and dtype, ``y`` as int64 there (the target
    labels in a targeted mode, with :attr:`targeted` set), with the model in eval mode (or the mode chosen with
    :meth:`set_model_training_mode`; restored afterwards); it may call the model with gradients enabled.

    ``predict_samples`` is the number of draws averaged where the attack itself judges the model through
    torchattacks' interface (:meth:`get_logits`: ``save``'s robust accuracy, least-likely targets); 5 = the
    paper's inference rule.
    """

    name: ClassVar[str] = "attack"
    bounded: ClassVar[bool] = True  # returns points within its eps-ball (unbounded attacks: False)
    white_box: ClassVar[bool] = True  # uses the attacked model's gradients (black-box attacks: False)
    iterative: ClassVar[bool] = True  # refines its point over several steps (one-step attacks: False)
    budget_keys: ClassVar[tuple[str, ...]] = ()  # hyperparameters that are budgets (steps, EOT samples, ...)
    supports_targeted: ClassVar[bool] = False  # torchattacks' set_mode_targeted_* are available
    predict_samples: int = 5

    def __init__(self, model: nn.Module, **hparams: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}: model must be a torch.nn.Module, got {type(model).__name__}")
        # torchattacks' attributes, set here rather than by its __init__ (which prints when the model has no
        # parameters and whose attribute hook keeps every value ever assigned alive)
        self._attacks: OrderedDict[str, Any] = OrderedDict()
        self.attack = type(self).__name__
        self.set_model(model)
        self.device = model_device_dtype(model, torch.empty(0))[0]
        self.attack_mode = "default"
        self.supported_mode = ["default", "targeted"] if self.supports_targeted else ["default"]
        self.targeted = False
        self._target_map_function: Callable[..., torch.Tensor] | str | None = None
        self._kth_min = 1
        self.normalization_used = None
        self._normalization_applied = None
        self._model_training = self._batchnorm_training = self._dropout_training = False
        self.hparams: dict[str, Any] = dict(hparams)
        self.last_info: dict[str, Any] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        attacks = self.__dict__.get("_attacks")
        if attacks is not None and _TorchattacksAttack is not object and isinstance(value, _TorchattacksAttack):
            attacks[name] = value  # a sub-attack: torchattacks' mode setters reach it

    supports_early_exit: ClassVar[bool] = False  # set_early_exit() is available (iterative attacks that judge the model)

    def set_early_exit(self, passes: int, samples: int = 5) -> Attack:
        """Early exit: stop attacking an image once its point is misclassified by all of ``passes`` fresh
        predictions of ``samples`` draws each (0: off). Recorded in :attr:`hparams` when on. Returns the attack."""
        if not self.supports_early_exit:
            raise ValueError(f"{self.name} does not support early_exit")
        check_number("early_exit", passes, 0, integer=True)
        check_number("confirm_samples", samples, 1, integer=True)
        self.early_exit, self.confirm_samples = int(passes), int(samples)
        if self.early_exit:  # recorded only when on: entries of runs without it keep their hyperparameters
            self.hparams.update(early_exit=self.early_exit, confirm_samples=self.confirm_samples)
        return self

    # torchattacks' interface ----------------------------------------------------------------------------------
    def set_model(self, model: nn.Module) -> None:
        self.model = model
        self.model_name = type(model).__name__

    def set_device(self, device: torch.device | str | None) -> None:
        self.device = device

    def set_normalization_used(self, mean: Iterable[float], std: Iterable[float]) -> None:
        raise NotImplementedError(f"{self.name}: the attacks of lwta_plugin take images in [0, 1] and call the model "
                                  "directly; put the normalisation inside the model (e.g. nn.Sequential(normalize, "
                                  "model)) instead of set_normalization_used")

    def set_model_training_mode(self, model_training: bool = False, batchnorm_training: bool = False,
                                dropout_training: bool = False) -> None:
        """Attack the model in training mode (default: eval mode); BatchNorm / Dropout stay in eval unless set.
        An LWTANet in training mode uses its training relaxation, not its test-time sampling."""
        self._model_training, self._batchnorm_training = bool(model_training), bool(batchnorm_training)
        self._dropout_training = bool(dropout_training)
        if model_training:
            self.hparams["model_training"] = True
        else:
            self.hparams.pop("model_training", None)
        for sub in self._attacks.values():
            sub.set_model_training_mode(model_training, batchnorm_training, dropout_training)

    def get_mode(self) -> str:
        return self.attack_mode

    def _set_mode(self, mode: str, function: Callable[..., torch.Tensor] | str | None, quiet: bool) -> None:
        if mode != "default" and "targeted" not in self.supported_mode:
            raise ValueError(f"Targeted mode is not supported by {self.name} (attacks with targeted modes: the PGD "
                             "family, FGSM, BPDA, transfer, CW, BSA, torchattacks_pgd)")
        self.attack_mode, self.targeted, self._target_map_function = mode, mode != "default", function
        if self.targeted:
            self.hparams["attack_mode"] = mode
        else:
            self.hparams.pop("attack_mode", None)
        if not quiet:
            print(f"Attack mode is changed to '{mode}'.")

    def set_mode_default(self, quiet: bool = False) -> None:
        """Untargeted (the default)."""
        self._set_mode("default", None, quiet)

    def set_mode_targeted_by_label(self, quiet: bool = False) -> None:
        """Targeted: the labels passed to the attack are the target labels."""
        self._set_mode("targeted(label)", "labels", quiet)

    def set_mode_targeted_by_function(self, target_map_function: Callable[..., torch.Tensor],
                                      quiet: bool = False) -> None:
        """Targeted: targets are ``target_map_function(images, labels)``, e.g. ``lambda x, y: (y + 1) % 10``."""
        if not callable(target_map_function):
            raise TypeError("target_map_function must be callable (images, labels) -> target labels")
        self._set_mode("targeted(custom)", target_map_function, quiet)

    def set_mode_targeted_random(self, quiet: bool = False) -> None:
        """Targeted: a uniformly random class other than the true one, per image."""
        self._set_mode("targeted(random)", self.get_random_target_label, quiet)

    def set_mode_targeted_least_likely(self, kth_min: int = 1, quiet: bool = False) -> None:
        """Targeted: the class with the ``kth_min``-th smallest averaged probability other than the true one."""
        check_number("kth_min", kth_min, 1, integer=True)
        self._kth_min = int(kth_min)
        self._set_mode("targeted(least-likely)", self.get_least_likely_label, quiet)

    def get_target_label(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The target labels of a targeted mode for ``inputs`` with true ``labels``."""
        if self._target_map_function is None:
            raise ValueError("target_map_function is not initialized by set_mode_targeted.")
        if self._target_map_function == "labels":
            return labels
        return self._target_map_function(inputs, labels)

    def get_logits(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Log of the class probabilities averaged over :attr:`predict_samples` draws (a random model's
        prediction; one pass of a deterministic one)."""
        return eot_predict(self.model, inputs, self.predict_samples)

    @torch.no_grad()
    def get_output_with_eval_nograd(self, inputs: torch.Tensor) -> torch.Tensor:
        with training_mode(self.model):
            return self.get_logits(inputs)

    def get_random_target_label(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        n = n_classes_of(self.model, inputs)
        shift = torch.randint(1, n, labels.shape, device=labels.device)
        return (labels + shift) % n

    def get_least_likely_label(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.get_output_with_eval_nograd(inputs).clone()
        out[torch.arange(out.shape[0]), labels] = float("inf")  # the true class is never the target
        if self._kth_min > out.shape[1] - 1:
            raise ValueError(f"kth_min={self._kth_min} exceeds the {out.shape[1] - 1} classes other than the true one")
        return out.topk(self._kth_min, dim=1, largest=False).indices[:, -1]

    def save(self, data_loader: Iterable[tuple[torch.Tensor, torch.Tensor]], save_path: str | Path | None = None,
             verbose: bool = True, return_verbose: bool = False, save_predictions: bool = False,
             save_clean_inputs: bool = False, save_type: str = "float") -> tuple[float, float, float] | None:
        """torchattacks' ``save``: attack every batch of ``data_loader`` and write ``adv_inputs`` and ``labels``
        (and ``preds`` / ``clean_inputs`` if asked) to ``save_path`` in its format, read by
        ``torchattacks.Attack.load``. Differences: the file is written once, atomically, at the end; robust
        accuracy is that of the averaged prediction (:meth:`get_logits`); a progress bar on stderr.
        Returns (robust accuracy %, mean L2 of the successes, seconds) with ``return_verbose``."""
        if save_type not in ("float", "int"):
            raise ValueError(f"{save_type} is not a valid type. [Options: float, int]")
        from tqdm.auto import tqdm

        advs, labs, preds, cleans = [], [], [], []
        correct = total = 0
        l2: list[torch.Tensor] = []
        start = time.perf_counter()
        bar = tqdm(data_loader, desc=f"{self.name} save", unit="batch", file=sys.stderr, disable=not verbose)
        for inputs, labels in bar:
            adv = self(inputs, labels)
            pred = self.get_output_with_eval_nograd(adv).argmax(1).cpu()
            right = pred == labels.cpu()
            correct, total = correct + int(right.sum()), total + len(labels)
            l2.append((adv.cpu() - inputs.cpu()).flatten(1).norm(dim=1)[~right])
            bar.set_postfix(robust_acc=f"{100 * correct / total:.2f}%")
            advs.append(adv.detach().cpu())
            labs.append(labels.detach().cpu())
            preds.append(pred)
            cleans.append(inputs.detach().cpu())
        bar.close()
        rob_acc = 100 * correct / max(total, 1)
        successes = torch.cat(l2) if l2 else torch.empty(0)
        dist = successes.mean().item() if successes.numel() else 0.0
        elapsed = time.perf_counter() - start
        if save_path is not None:
            def as_type(t: torch.Tensor) -> torch.Tensor:
                return (t * 255).round().to(torch.uint8) if save_type == "int" else t

            out: dict[str, Any] = {"adv_inputs": as_type(torch.cat(advs)), "labels": torch.cat(labs),
                                   "save_type": save_type}
            if save_predictions:
                out["preds"] = torch.cat(preds)
            if save_clean_inputs:
                out["clean_inputs"] = as_type(torch.cat(cleans))
            path = Path(save_path)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save(out, tmp)
            os.replace(tmp, path)
        if verbose:
            print(f"- Save complete: robust accuracy {rob_acc:.2f} % (mean of {self.predict_samples} draws per "
                  f"prediction) / L2 {dist:.5f} / {elapsed:.1f} s", file=sys.stderr)
        return (rob_acc, dist, elapsed) if return_verbose else None

    # ------------------------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({params})"

    def validate(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is a finite NCHW float batch in [0, 1] and ``y`` integer labels for it
        (TypeError if they are not tensors)."""
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"{self.name}: images and labels must be tensors, got {type(x).__name__} and "
                             f"{type(y).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{self.name}: images must be a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: images must be floating point in [0, 1], got dtype {x.dtype}")
        if x.numel() and not torch.isfinite(x).all():
            raise ValueError(f"{self.name}: images contain NaN or infinite values")
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{self.name}: images must lie in [0, 1], got values in [{x.min().item():.4g}, "
                             f"{x.max().item():.4g}] (normalise inside the model, not before the attack)")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"{self.name}: labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{self.name}: labels must be integers, got dtype {y.dtype}")

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The attack (torchattacks' name for it): validated ``inputs`` in [0, 1] and their true labels (the
        target labels in ``targeted(label)`` mode) -> adversarial images on ``inputs``' device and dtype."""
        if labels is None:
            raise TypeError(f"{self.name}: labels are required: attack(images, labels)")
        x, y = inputs, labels
        self.validate(x, y)
        self.last_info = {}
        if x.shape[0] == 0:
            return x.detach().clone()
        device, dtype = model_device_dtype(self.model, x)
        xd = x.detach().to(device=device, dtype=dtype)
        yd = y.detach().to(device=device, dtype=torch.int64)
        with training_mode(self.model, self._model_training, self._batchnorm_training, self._dropout_training):
            n = n_classes_of(self.model, xd)
            if yd.min() < 0 or yd.max() >= n:
                raise ValueError(f"{self.name}: labels must be in [0, {n - 1}], got values in "
                                 f"[{yd.min().item()}, {yd.max().item()}]")
            if self.targeted:
                yd = self._targets(xd, yd, n)
            x_adv = self.perturb(xd, yd)
        if x_adv.shape != xd.shape:
            raise RuntimeError(f"{self.name} produced shape {tuple(x_adv.shape)} for input {tuple(xd.shape)}")
        return x_adv.detach().clamp(0.0, 1.0).to(device=x.device, dtype=x.dtype)

    __call__ = forward

    def _targets(self, x: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
        t = self.get_target_label(x, y)
        if not isinstance(t, torch.Tensor) or t.shape != y.shape or t.is_floating_point():
            got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{self.name}: target labels must be an integer tensor of shape {tuple(y.shape)}, "
                             f"got {got}")
        t = t.to(device=y.device, dtype=torch.int64)
        if t.min() < 0 or t.max() >= n:
            raise ValueError(f"{self.name}: target labels must be in [0, {n - 1}]")
        return t

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
