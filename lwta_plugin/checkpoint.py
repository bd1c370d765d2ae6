"""Checkpoints: untrusted input. Loaded with ``weights_only=True``, checked for structure, config and hashes."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .io import atomic_write
from .models import LWTANet, model_from_config

FORMAT = "lwta-plugin/checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, tampered with, or does not match the requested model."""


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, dtypes, shapes and bytes), independent of pickling details."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: LWTANet, meta: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> str:
    """Atomically write a checkpoint; returns the sha256 of the file.

    ``meta`` holds plain data (model name, data set, epoch, metrics, command); ``extra`` may hold tensors
    such as optimizer state for resuming.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state,
               "state_sha256": state_sha256(state), "meta": dict(meta or {})}
    if extra:
        payload["extra"] = extra
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return hashlib.sha256(buf.getvalue()).hexdigest()


def read_checkpoint(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint file without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = path.read_bytes()  # hashed and loaded from the same bytes
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise CheckpointError(f"checkpoint {path} has sha256 {actual}, expected {sha256}: the file is corrupt, "
                                  "truncated or not the published one; delete it and fetch/train it again")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # objects other than tensors and plain data (e.g. code), or garbage
        lines = str(e).splitlines()
        detail = next((ln.strip() for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        raise CheckpointError(f"refused to load checkpoint {path}: torch.load(weights_only=True) rejected it, so "
                              "it is not a plain tensor checkpoint (it may hold pickled code, which is never run); "
                              f"{detail}") from None
    except Exception as e:  # RuntimeError/EOFError/OSError/UnicodeDecodeError for truncated or damaged files
        first = str(e).splitlines()[0] if str(e) else "unexpected end of file"
        raise CheckpointError(f"cannot read checkpoint {path} (torch.load, weights_only=True): the file is "
                              f"truncated or corrupt ({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an lwta-plugin checkpoint (expected format {FORMAT!r})")
    for key, typ in (("config", dict), ("state_dict", dict), ("state_sha256", str), ("meta", dict)):
        if not isinstance(payload.get(key), typ):
            raise CheckpointError(f"{path}: field {key!r} missing or not a {typ.__name__}")
    bad = [k for k, v in payload["state_dict"].items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{path}: state_dict must map names to tensors; bad entries: {bad[:3]!r}")
    try:
        actual_state = state_sha256(payload["state_dict"])
    except (TypeError, RuntimeError) as e:  # e.g. sparse or exotic tensors: never written by save_checkpoint
        raise CheckpointError(f"{path}: unsupported tensor in state_dict ({type(e).__name__}: {e})") from None
    if actual_state != payload["state_sha256"]:
        raise CheckpointError(f"{path}: weights do not match their recorded hash (corrupted or edited)")
    return payload


def load_checkpoint(path: str | os.PathLike, sha256: str | None = None, expected_name: str | None = None,
                    expected_dataset: str | None = None, samples: int = 1) -> tuple[LWTANet, dict[str, Any]]:
    """Build the model stored in ``path`` (eval mode) and return it with the checkpoint's meta data."""
    payload = read_checkpoint(path, sha256)
    try:
        model = model_from_config(payload["config"], samples=samples)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if expected_name is not None and model.config.name != expected_name:
        raise CheckpointError(f"{path} holds model {model.config.name!r}, not {expected_name!r}")
    if expected_dataset is not None and model.config.dataset != expected_dataset:
        raise CheckpointError(f"{path} was built for {model.config.dataset!r}, not {expected_dataset!r}")
    load_state(model, payload["state_dict"], path)
    return model.eval(), payload["meta"]


def load_state(model: LWTANet, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` into ``model`` if it fits exactly: the same tensor names, shapes and dtypes.

    ``load_state_dict`` would cast silently: integer weights become an all-zero model, float16/float64 lose or
    invent precision, complex ones drop their imaginary part; CheckpointError naming the tensor instead."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    dtype = [f"{k} {state[k].dtype} (expected {v.dtype})" for k, v in expected.items()
             if k in state and state[k].dtype != v.dtype]
    if missing or unexpected or wrong or dtype:
        parts = [f"{len(x)} {what} (e.g. {', '.join(x[:2])})"
                 for x, what in ((missing, "missing"), (unexpected, "unexpected"), (wrong, "of the wrong shape"),
                                 (dtype, "of the wrong dtype")) if x]
        raise CheckpointError(f"{path}: weights do not fit architecture {model.config.name!r} named by its config: "
                              f"{'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit architecture {model.config.name!r}: "
                              f"{str(e).splitlines()[0]}") from None
