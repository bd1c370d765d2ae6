"""Input validation for models handed out by the zoo: bad images fail loudly instead of giving silent garbage.

The check runs as a forward pre-hook on the model itself, so the model returned by
:func:`lwta_plugin.load_model` is still the :class:`~lwta_plugin.models.LWTANet` (``forward_samples``,
``samples``, ``output``, ``sampling``, ``using``, ``training``, ``eval()`` all unchanged) and torchattacks,
AutoAttack and RobustBench can use it as is. The hook only reads its input (gradients flow untouched) and costs
one reduction with one host synchronisation per call (``aminmax``); shape and dtype checks are Python-only.
Only ``forward`` (``model(x)``) is checked: ``forward_samples`` and ``raw`` are left alone for attack code.

Attack internals: many torchattacks attacks legitimately query the model outside [0, 1] (Nesterov look-ahead
points, SPSA's finite differences, EAD's slack iterates, SparseFool, randomized smoothing's Gaussian noise), and the
values of such a query cannot be told apart from a unit mistake (normalised MNIST spans [-0.42, 2.82]; Gaussian
noise of sd 0.5 around an image spans more). The rule therefore looks at where the images came from, not at the
query: inside a ``torchattacks`` attack call (an ``Attack.__call__`` frame on the stack), the range check applies
to the images the user gave the attack (the outermost call's ``inputs``), and the model's query itself is only
checked for shape, dtype and finite values. A 0-255 or normalised batch handed to an attack is still refused,
and so is an attack set up with ``set_normalization_used`` (it would feed normalised images to a model that
shifts its inputs itself).

:func:`check_labels` does the same for class labels where the plugin takes them (e.g.
:func:`lwta_plugin.cards.measure_clean_accuracy`): a 1-D integer tensor of indices in ``[0, n_classes)``.
Every error is a ValueError that starts with who refused the input and names the expected form.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

TOLERANCE = 1e-4  # slack on [0, 1]: float rounding in attacks and preprocessing
_TOL = "_lwta_input_tolerance"


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def _expected(shape: Sequence[int]) -> str:
    return f"images of shape [B, {', '.join(str(s) for s in shape)}] with values in [0, 1]"


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


def check_images(x: Any, shape: Sequence[int], dtype: torch.dtype | None = None, tol: float = TOLERANCE,
                 who: str = "model", device: torch.device | None = None, value_range: bool = True) -> None:
    """Raise ValueError unless ``x`` is a non-empty float batch ``[B, *shape]`` with finite values in [0, 1].

    ``dtype``/``device``: the model's parameter dtype and device (a floating input of another dtype or on another
    device is refused, as the convolution would fail with a less clear message). ``tol`` is the slack allowed
    outside [0, 1]; ``value_range=False`` checks finiteness only (an attack's internal query).
    """
    want = _expected(shape)
    if not isinstance(x, torch.Tensor):
        hint = " (a numpy array? use torch.from_numpy(x))" if type(x).__module__ == "numpy" else ""
        raise ValueError(f"{who}: expected a torch.Tensor of {want}, got {type(x).__name__}{hint}")  # noqa: TRY004
    got = _fmt(x.shape)
    if x.dim() != len(shape) + 1:
        hint = ""
        if tuple(x.shape) == tuple(shape):
            hint = " (a single image? add the batch dimension with x.unsqueeze(0))"
        elif tuple(x.shape) == tuple(shape[1:]) and shape[0] == 1:
            hint = f" (a single grayscale image? use x.view(1, {', '.join(str(s) for s in shape)}))"
        raise ValueError(f"{who}: input has {x.dim()} dims: expected {want}, got {got}{hint}")
    if tuple(x.shape[1:]) != tuple(shape):
        hint = ""
        if tuple(x.shape[1:]) == (*shape[1:], shape[0]):
            hint = " (channels-last? use x.permute(0, 3, 1, 2))"
        what = "channel count" if x.shape[1] != shape[0] else "image size"
        raise ValueError(f"{who}: wrong {what}: expected {want}, got {got}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{who}: empty batch: expected at least one image; {want}, got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected floating-point {want}, got dtype {x.dtype}"
                         + (" (8-bit pixels? use x.float() / 255)" if x.dtype == torch.uint8 else ""))
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{who}: expected dtype {dtype} (the model's parameters), got {x.dtype}: "
                         f"convert the input with x.to({dtype}) or the model with model.to({dtype})")
    if device is not None and x.device != device:
        raise ValueError(f"{who}: input is on {x.device} but the model is on {device}: move it with x.to({str(device)!r})")
    if x.layout != torch.strided:
        raise ValueError(f"{who}: expected a dense tensor of {want}, got layout {x.layout}: use x.to_dense()")
    if x.device.type == "meta" or torch.jit.is_tracing() or _compiling():
        return  # no values to read, or a data-dependent check would break the trace/graph
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()  # aminmax propagates NaN
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{who}: input contains NaN: expected {want}")
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{who}: input contains Inf: expected {want}")
    if not value_range:
        return
    if lo < -tol or hi > 1 + tol:
        hint = ""
        if lo >= -tol and hi > 1.5:
            hint = " (pixels in [0, 255]? divide by 255)"
        elif lo < -tol:
            hint = " (normalized with a mean/std? pass the raw images in [0, 1]: the model shifts them itself)"
        raise ValueError(f"{who}: input values span [{lo:.4g}, {hi:.4g}], outside [0, 1] (tolerance {tol:g}): "
                         f"expected {want}{hint}")


def check_labels(y: Any, n_classes: int = 10, batch: int | None = None, who: str = "labels") -> None:
    """Raise ValueError unless ``y`` is a 1-D integer tensor of class indices in ``[0, n_classes)``.

    ``batch``: the number of images the labels belong to (their count must match).
    """
    want = f"a 1-D integer tensor of class indices in [0, {n_classes - 1}]" + (f" of length {batch}" if batch else "")
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{who}: expected {want}, got {type(y).__name__}")  # noqa: TRY004
    if y.dim() != 1:
        hint = " (one-hot labels? use y.argmax(1))" if y.dim() == 2 and y.shape[-1] == n_classes else ""
        raise ValueError(f"{who}: expected {want}, got shape {_fmt(y.shape)}{hint}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{who}: expected {want}, got dtype {y.dtype} (use y.long())")
    if batch is not None and len(y) != batch:
        raise ValueError(f"{who}: {len(y)} labels for {batch} images: expected {want}")
    if len(y) == 0:
        raise ValueError(f"{who}: empty: expected {want}")
    if y.device.type == "meta":
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{who}: class index out of range: values span [{lo}, {hi}], expected {want}"
                         + (" (labels counted from 1? subtract 1)" if lo >= 1 and hi == n_classes else ""))


def torchattacks_call() -> tuple[Any, Any] | None:
    """``(attack, inputs)`` of the outermost ``torchattacks`` ``Attack.__call__`` on the call stack (the attack
    and the images the user gave it), or None outside one (or when torchattacks was never imported)."""
    module = sys.modules.get("torchattacks.attack")
    attack_cls = getattr(module, "Attack", None)
    if attack_cls is None:
        return None
    code = attack_cls.__call__.__code__
    frame, outer = sys._getframe(1), None
    while frame is not None:
        if frame.f_code is code:
            outer = frame
        frame = frame.f_back
    if outer is None:
        return None
    local = outer.f_locals
    return local.get("self"), local.get("inputs")


def _pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
    x = args[0] if args else next(iter(kwargs.values()), None)
    param = next(module.parameters(), None)
    cfg = getattr(module, "config", None)
    who = f"{cfg.name} ({getattr(module, 'zoo_dataset', cfg.dataset)})" if cfg is not None else type(module).__name__
    dtype, device = (None, None) if param is None else (param.dtype, param.device)
    tol = getattr(module, _TOL, TOLERANCE)
    call = torchattacks_call()
    if call is None:
        check_images(x, module.input_shape, dtype, tol, who, device)
        return
    attack, inputs = call
    name = f"torchattacks.{type(attack).__name__}"
    if getattr(attack, "normalization_used", None) is not None:
        raise ValueError(f"{who}: {name} was set up with set_normalization_used(mean, std), so it feeds normalised "
                         "images to the model, which takes raw images in [0, 1] and shifts them itself: do not "
                         "set a normalization on the attack")
    check_images(x, module.input_shape, dtype, tol, who, device, value_range=False)  # the attack's own query
    if isinstance(inputs, torch.Tensor) and inputs.dim() == x.dim() and inputs.is_floating_point():
        check_images(inputs, module.input_shape, None, tol, f"{who}, images given to {name}")


def _hook_ids(model: nn.Module) -> list[int]:
    # Found by identity rather than by a stored handle, so copies (deepcopy, pickle) stay independent.
    return [k for k, hook in model._forward_pre_hooks.items() if hook is _pre_hook]


def enable_input_validation(model: nn.Module, tol: float = TOLERANCE) -> nn.Module:
    """Check every ``model(x)`` call's input (idempotent; returns ``model``). ``model`` needs ``input_shape``."""
    if not isinstance(getattr(model, "input_shape", None), tuple):
        raise ValueError(f"{type(model).__name__} has no input_shape tuple; cannot validate its inputs")  # noqa: TRY004
    if not tol >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tol}")
    setattr(model, _TOL, float(tol))
    if not _hook_ids(model):
        model.register_forward_pre_hook(_pre_hook, with_kwargs=True)
    return model


def disable_input_validation(model: nn.Module) -> nn.Module:
    """Remove the check installed by :func:`enable_input_validation` (no-op if absent)."""
    for k in _hook_ids(model):
        del model._forward_pre_hooks[k]
        model._forward_pre_hooks_with_kwargs.pop(k, None)
    return model


def has_input_validation(model: nn.Module) -> bool:
    return bool(_hook_ids(model))
