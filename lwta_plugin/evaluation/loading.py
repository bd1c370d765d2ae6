"""What an evaluation reads: the models (zoo name or checkpoint) with their provenance, and the test images."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from .._version import __version__
from ..checkpoint import read_checkpoint
from ..data import load_tensors
from ..io import sha256_file
from ..models import LWTANet, ModelConfig
from ..zoo import load_model, resolve_checkpoint


@dataclass
class ModelInfo:
    """Where the evaluated model came from (recorded in the entry)."""

    name: str
    sha256: str
    source: str  # "store" | "model_dir" | "explicit"
    file: str
    config: dict
    training: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluationData:
    """The images an evaluation attacks, and where they came from (recorded in the entry)."""

    x: torch.Tensor
    y: torch.Tensor
    source: str  # "lwta_plugin.data:<dataset>" or "custom"


def _training_info(meta: dict) -> dict:
    tc = meta.get("train_config") or {}
    return {k: v for k, v in {"epochs": tc.get("epochs"), "seed": tc.get("seed"), "fgsm_eps": tc.get("fgsm_eps"),
                              "command": (tc.get("extra") or {}).get("command")}.items() if v is not None}


def checkpoint_model_name(path: str | os.PathLike) -> str:
    """The registry name of the model stored in a checkpoint (read and checked, not built)."""
    cfg = read_checkpoint(path)["config"]
    try:
        return ModelConfig(**cfg).name
    except TypeError as e:
        raise ValueError(f"checkpoint {path}: invalid model config {cfg!r} ({e})") from None


def load_model_for_evaluation(name: str | None, dataset: str = "mnist", threat_model: str = "Linf",
                              samples: int = 5, checkpoint: str | os.PathLike | None = None,
                              model_dir: str | os.PathLike | None = None) -> tuple[LWTANet, ModelInfo]:
    """Load a model by zoo name (weight store, then ``model_dir``) or from an explicit ``checkpoint``.

    Returns ``(model, ModelInfo)``. ``name`` may be None with ``checkpoint`` (the name is read from the file).
    """
    if checkpoint is not None:
        stored = checkpoint_model_name(checkpoint)
        if name is not None and stored != name:
            raise ValueError(f"checkpoint {checkpoint} holds model {stored!r}, not {name!r}")
        name, path, sha, source, file = stored, Path(checkpoint), None, "explicit", str(checkpoint)
        model = load_model(name, None, dataset, threat_model, samples=samples, checkpoint=path)
    else:
        if name is None:
            raise ValueError("give a model name or a checkpoint")
        resolved = resolve_checkpoint(name, dataset, threat_model, model_dir)
        path, sha, source = resolved.path, resolved.sha256, resolved.source
        file = f"{dataset}/{path.name}" if source == "store" else f"{dataset}/{threat_model}/{path.name}"
        # resolved again by the zoo, which checks the published sha256 of the very bytes it loads
        model = load_model(name, model_dir, dataset, threat_model, samples=samples)
    meta = read_checkpoint(path, sha)["meta"]
    info = ModelInfo(name=name, sha256=sha or sha256_file(path), source=source, file=file,
                     config=model.config.to_dict(), training=_training_info(meta))
    return model.eval(), info


def pair_checkpoints(models: list[str] | None, checkpoints: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """Pair ``--model`` and ``--checkpoint`` options in order (names read from the files when only checkpoints are
    given); returns the model names and ``{name: checkpoint}``."""
    if not checkpoints:
        if not models:
            raise ValueError("give --model NAME (repeatable), --checkpoint PATH or --config FILE")
        return models, {}
    if models and len(models) != len(checkpoints):
        raise ValueError(f"{len(models)} --model but {len(checkpoints)} --checkpoint options: give one checkpoint "
                         "per model, in the same order, or only --checkpoint")
    if not models:
        models = [checkpoint_model_name(c) for c in checkpoints]
    if len(set(models)) != len(models):
        dup = sorted({m for m in models if models.count(m) > 1})
        raise ValueError(f"several checkpoints of {', '.join(dup)}: an entry is named after its architecture "
                         "(<model>__<protocol>.json), so evaluate them one at a time with separate --out-dir")
    return models, dict(zip(models, checkpoints))


def load_test_data(dataset: str, n: int, data_root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images (``lwta_plugin.data.load_tensors``)."""
    return load_tensors(dataset, "test", root=data_root, limit=n)


def tensor_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """Content hash of an evaluation data set (shapes, dtypes, bytes of images and labels)."""
    h = hashlib.sha256()
    for t in (x.detach().to(torch.float32).contiguous(), y.detach().to(torch.int64).contiguous()):
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    """Versions of the plugin and of every library whose code decides a result (recorded in each entry)."""
    def ver(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {"plugin": __version__, "torch": torch.__version__.split("+")[0], "torchattacks": ver("torchattacks"),
            "pyautoattack": ver("pyautoattack"), "numpy": ver("numpy")}
