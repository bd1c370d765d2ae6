"""Model zoo: the plugin's trained models by name, offline: the weight store, its manifest, ``load_model``.

Loading
-------
::

    import lwta_plugin
    model = lwta_plugin.load_model("lwta_ibp_tanh16", dataset="mnist")          # RobustBench not needed

    from robustbench.utils import load_model                                     # same model through RobustBench
    model = load_model("lwta_ibp_tanh16", dataset="mnist", threat_model="Linf")

Both return the :class:`~lwta_plugin.models.LWTANet` in eval mode, random at test time and averaging
``S = 5`` stochastic passes per call (the paper's inference rule), with input validation
(:mod:`lwta_plugin.validation`). ``S`` is set per call with ``load_model(..., samples=n)``, for every later load
(including through RobustBench, whose signature has no such argument) with
``lwta_plugin.set_default_samples(n)``, and on a loaded model with ``model.samples = n`` or
``with model.using(samples=n):``. How the models get into RobustBench's zoo (and MNIST into its data sets) is
:mod:`lwta_plugin.compat`'s job; this module does not import RobustBench.

Checkpoint resolution (first hit wins)
--------------------------------------
1. The plugin's weight store, ``lwta_plugin/weights/`` (or ``$LWTA_WEIGHTS_DIR``): ``manifest.json`` lists each
   shipped file ``<dataset>/<name>.pt`` with its sha256 and size. A listed file that does not match is refused
   with an error (never skipped in favour of another file).
2. ``model_dir`` in RobustBench's layout, ``<model_dir>/<dataset>/<threat_model>/<name>.pt``. There is no
   published hash for such a file; it is checked for format, internal weight hash, architecture name and data set.
3. Otherwise :class:`ModelNotAvailableError` says how to train the model (``lwta train ...``) and where to put it.

Every checkpoint is read with ``torch.load(weights_only=True)`` (:mod:`lwta_plugin.checkpoint`): a pickle that
would run code is refused.

Threat models
-------------
``Linf`` only. The networks are evaluated against L-inf attacks (and the ``_fgsm`` variants trained with L-inf
FGSM); nothing about them is an L2 result, so ``threat_model="L2"`` (or ``corruptions``) is refused with an error
rather than answered with the same weights, which a caller would take for an L2 model. The threat model also
selects RobustBench's sub-directory of ``model_dir``.

Unknown names raise :class:`UnknownModelError` (a ValueError and, as RobustBench's own lookup, a KeyError) with
the closest names ("did you mean").

Shipping a model
----------------
``lwta ship runs/lwta_ibp_tanh16_mnist_s0.pt --card`` (:mod:`lwta_plugin.ship`; also ``python
scripts/ship_model.py``) copies a final ``lwta train`` checkpoint to ``weights/<dataset>/<name>.pt`` with
:func:`register_checkpoint`, which records sha256, size, training command, epochs, seed and the validation/test
accuracies of the checkpoint's meta in ``weights/manifest.json``; ``--card`` also writes the model card
(:mod:`lwta_plugin.cards`). Manifest format (keys sorted, canonical JSON)::

    {"format": "lwta-plugin/weights-manifest-1",
     "models": {"mnist/lwta_ibp_tanh16": {
         "name": "lwta_ibp_tanh16", "dataset": "mnist", "file": "mnist/lwta_ibp_tanh16.pt",
         "sha256": "<hex>", "size": 1635082, "state_sha256": "<hex of the weights>",
         "config": {"activation": "lwta", "ibp": true, "code": "tanh16", "U": 2, "dataset": "mnist"},
         "training": {"command": "lwta train ...", "epochs": 5, "best_epoch": 5, "seed": 0, "fgsm_eps": 0.0,
                      "noise_std": null, "batch_size": 200, "lr": 0.001, "ibp_lr": 0.01,
                      "n_train": 55000, "n_val": 5000},
         "metrics": {<the checkpoint's meta["metrics"]: val_acc, test_acc_1pass, test_acc_5samples, n_test, ...>},
         "versions": {"plugin": "0.1.0", "torch": "2.14.1"}}}}
"""
from __future__ import annotations

import contextlib
import difflib
import enum
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint, state_sha256
from .io import atomic_write, atomic_write_json, directory_lock, sha256_file
from .models import ARCH_DATASETS, LWTANet, create_model, list_models
from .validation import enable_input_validation

DATASETS = tuple(ARCH_DATASETS)  # mnist, fashion_mnist, cifar10
THREAT_MODELS = ("Linf",)
MANIFEST_FORMAT = "lwta-plugin/weights-manifest-1"
WEIGHTS_ENV = "LWTA_WEIGHTS_DIR"
_DEFAULT_SAMPLES = 5


class ModelNotAvailableError(CheckpointError):
    """A known model has no checkpoint in the weight store or in ``model_dir``."""


class ZooKeyError(ValueError, KeyError):
    """An unknown name or threat model: a ValueError, and a KeyError like RobustBench's own lookups (code that
    catches either keeps working)."""

    __str__ = Exception.__str__  # KeyError's would print the message in quotes


class UnknownModelError(ZooKeyError):
    """No model of that name; the message lists the closest names."""


# ---------------------------------------------------------------------------------------------------------------
# samples


def get_default_samples() -> int:
    """Number of stochastic passes averaged by models loaded from now on (default 5, the paper's S)."""
    return _DEFAULT_SAMPLES


def set_default_samples(samples: int) -> int:
    """Set S for models loaded from now on (also through RobustBench); returns the previous value."""
    global _DEFAULT_SAMPLES
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    previous, _DEFAULT_SAMPLES = _DEFAULT_SAMPLES, samples
    return previous


@contextlib.contextmanager
def default_samples(samples: int) -> Iterator[None]:
    """``with default_samples(1): ...`` loads models with S = 1 inside the block."""
    previous = set_default_samples(samples)
    try:
        yield
    finally:
        set_default_samples(previous)


# ---------------------------------------------------------------------------------------------------------------
# weight store and manifest


def weights_dir() -> Path:
    """The weight store: ``$LWTA_WEIGHTS_DIR`` if set, else the package's ``weights/`` directory."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "weights"


def manifest_path(store: str | os.PathLike | None = None) -> Path:
    return Path(store or weights_dir()) / "manifest.json"


def _empty_manifest() -> dict:
    return {"format": MANIFEST_FORMAT, "models": {}}


_ENTRY_FIELDS = {"name": str, "dataset": str, "file": str, "sha256": str, "size": int}


def read_manifest(store: str | os.PathLike | None = None) -> dict:
    """The store's manifest (an empty one if the file does not exist); ValueError if it is malformed."""
    path = manifest_path(store)
    if not path.is_file():
        return _empty_manifest()
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"weight manifest {path} is unreadable: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("models"), dict):
        raise ValueError(f"weight manifest {path} is not a {MANIFEST_FORMAT!r} manifest")
    for key, entry in manifest["models"].items():
        bad = [f for f, t in _ENTRY_FIELDS.items() if not isinstance(entry, dict) or not isinstance(entry.get(f), t)]
        if bad:
            raise ValueError(f"weight manifest {path}: entry {key!r} lacks valid field(s) {bad}")
        if key != f"{entry['dataset']}/{entry['name']}":
            raise ValueError(f"weight manifest {path}: entry {key!r} describes {entry['dataset']}/{entry['name']}")
        file = Path(entry["file"])
        if file.is_absolute() or ".." in file.parts:
            raise ValueError(f"weight manifest {path}: entry {key!r} points outside the store ({entry['file']!r})")
    return manifest


def available_models(dataset: str | None = None, store: str | os.PathLike | None = None) -> list[dict]:
    """Manifest entries of the shipped models (optionally of one data set), sorted by data set and name."""
    entries = read_manifest(store)["models"].values()
    return sorted((e for e in entries if dataset is None or e["dataset"] == dataset),
                  key=lambda e: (e["dataset"], e["name"]))


# ---------------------------------------------------------------------------------------------------------------
# resolution and loading


def _value(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x


def did_you_mean(value: Any, choices: list[str] | tuple[str, ...]) -> str:
    """`` Did you mean 'a' or 'b'?`` for the (case-insensitively) closest ``choices``, or ``""``."""
    if not isinstance(value, str):
        return ""
    lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lower), n=3, cutoff=0.6)
    return f" Did you mean {' or '.join(repr(lower[c]) for c in close)}?" if close else ""


def threat_model_error(threat_model: Any) -> ZooKeyError:
    """The error for a threat model other than ``Linf``."""
    if threat_model == "L2":
        return ZooKeyError("unknown threat model 'L2' for lwta-plugin models: they are published for Linf only "
                          "(evaluated against L-inf attacks; the _fgsm variants trained with L-inf FGSM), so there "
                          "is no L2 model to return; use threat_model='Linf'")
    return ZooKeyError(f"unknown threat model {threat_model!r} for lwta-plugin models; available: "
                       f"{', '.join(THREAT_MODELS)}")


def _check_request(model_name: str, dataset: str, threat_model: str, store: Path | None = None) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r} for lwta-plugin models; available: {', '.join(DATASETS)}."
                         + did_you_mean(dataset, DATASETS))
    if model_name not in list_models():
        shipped = [e["name"] for e in available_models(dataset, store)]
        raise UnknownModelError(
            f"unknown lwta-plugin model {model_name!r}.{did_you_mean(model_name, list_models())} Shipped for {dataset}: "
            f"{', '.join(shipped) if shipped else 'none'}. Architectures (loadable once trained, see `lwta models`): "
            f"{', '.join(list_models())}")
    if threat_model not in THREAT_MODELS:
        raise threat_model_error(threat_model)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    path: Path
    sha256: str | None  # the published hash (weight store) or None (model_dir: no published hash)
    source: str  # "store" | "model_dir" | "explicit"


def _verify_store_file(path: Path, entry: dict, data: bytes | None = None) -> None:
    """Raise CheckpointError unless the file (or ``data``, its contents as read) matches its manifest entry."""
    if data is None and not path.is_file():
        raise CheckpointError(f"the weight manifest lists {entry['dataset']}/{entry['name']} but {path} is missing; "
                              "reinstall the package or ship the checkpoint again (scripts/ship_model.py)")
    if data is None:
        size, sha = path.stat().st_size, sha256_file(path)
    else:
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    if size != entry["size"] or sha != entry["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} does not match the weight manifest: sha256 {sha} (expected {entry['sha256']}), "
            f"size {size} bytes (expected {entry['size']}). The file is corrupt, truncated or not the shipped "
            "one (e.g. another model's file); reinstall it or ship it again with scripts/ship_model.py")


def verify_store(store: str | os.PathLike | None = None) -> tuple[int, list[str]]:
    """Check every file of the weight store against its manifest entry (sha256 and size) and load it as
    :func:`load_model` would (format, architecture, dtypes, finite weights): how many files the manifest lists,
    and one line per file that fails (or the manifest's own error)."""
    store = Path(store or weights_dir())
    try:
        models = read_manifest(store)["models"]
    except ValueError as e:
        return 0, [str(e)]
    problems = []
    for key in sorted(models):
        item, path = models[key], store / models[key]["file"]
        try:
            _verify_store_file(path, item)
            model, _ = load_checkpoint(path, sha256=item["sha256"], expected_name=item["name"],
                                       expected_dataset=ARCH_DATASETS.get(item["dataset"]))
            _check_finite(model, path)
        except CheckpointError as e:
            problems.append(str(e))
    return len(models), problems


def resolve_checkpoint(model_name: str, dataset: str = "mnist", threat_model: str = "Linf",
                       model_dir: str | os.PathLike | None = None, *,
                       store: str | os.PathLike | None = None) -> ResolvedCheckpoint:
    """Find the checkpoint of a known model: weight store (verified), then ``model_dir``; else raise."""
    dataset, threat_model = _value(dataset), _value(threat_model)
    store = Path(store or weights_dir())
    _check_request(model_name, dataset, threat_model, store)
    entry = read_manifest(store)["models"].get(f"{dataset}/{model_name}")
    if entry is not None:
        path = store / entry["file"]
        _verify_store_file(path, entry)
        return ResolvedCheckpoint(path, entry["sha256"], "store")
    candidate = None
    if model_dir is not None:
        candidate = Path(model_dir) / dataset / threat_model / f"{model_name}.pt"
        if candidate.is_file():
            return ResolvedCheckpoint(candidate, None, "model_dir")
    where = candidate or Path("<model_dir>") / dataset / threat_model / f"{model_name}.pt"
    raise ModelNotAvailableError(
        f"no checkpoint for {model_name!r} on {dataset}: it is not in the plugin's weight store "
        f"({manifest_path(store)}) and {where} does not exist. Train it with `lwta train --model {model_name} "
        f"--dataset {dataset} --epochs 5`, then either ship it into the store with `python scripts/ship_model.py "
        f"runs/{model_name}_{dataset}_s0.pt` or copy the checkpoint to {where}")


def _check_finite(model: LWTANet, path: Path) -> None:
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weight tensor(s) hold NaN or Inf (e.g. {bad[0]}): the training "
                              "run diverged or the file was edited; retrain the model")


def _prepare(model: LWTANet, samples: int, dataset: str | None = None) -> LWTANet:
    model.samples = samples
    model.zoo_dataset = dataset or model.config.dataset  # fashion_mnist shares mnist's architecture
    enable_input_validation(model)
    return model.eval()


def load_model(model_name: str, model_dir: str | os.PathLike | None = "./models", dataset: Any = "mnist",
               threat_model: Any = "Linf", custom_checkpoint: str | os.PathLike = "", norm: str | None = None, *,
               samples: int | None = None, checkpoint: str | os.PathLike | None = None,
               store: str | os.PathLike | None = None) -> LWTANet:
    """Load a trained plugin model by name, offline (RobustBench's ``load_model`` signature; RobustBench not needed).

    The positional parameters are RobustBench 1.1.1's: ``model_dir`` (RobustBench layout
    ``<model_dir>/<dataset>/<threat_model>/<name>.pt``, searched after the weight store), ``dataset`` and
    ``threat_model`` (strings or RobustBench's enums), ``custom_checkpoint`` (an explicit checkpoint file, as
    ``checkpoint``) and the deprecated ``norm`` (overrides ``threat_model``). The default data set is MNIST, where
    the plugin's models live (RobustBench's default is CIFAR-10).

    Returns the :class:`LWTANet` in eval mode, averaging ``samples`` stochastic passes per call (default:
    :func:`get_default_samples`, 5) and validating its inputs. ``checkpoint`` loads an explicit file instead of
    resolving one (still checked against the name and data set); ``store`` overrides the weight store. Raises
    ValueError for unknown names, data sets or threat models, :class:`ModelNotAvailableError` (saying how to train
    the model and where to put it) if no checkpoint exists, :class:`CheckpointError` if one is corrupt, unsafe or
    of another model.
    """
    if norm is not None:
        warnings.warn("`norm` is deprecated (as in RobustBench): use `threat_model`", DeprecationWarning,
                      stacklevel=2)
        threat_model = norm
    if custom_checkpoint:
        if checkpoint is not None and Path(checkpoint) != Path(custom_checkpoint):
            raise ValueError(f"conflicting checkpoints: checkpoint={checkpoint!r}, "
                             f"custom_checkpoint={custom_checkpoint!r}")
        checkpoint = custom_checkpoint
    dataset, threat_model = _value(dataset), _value(threat_model)
    S = get_default_samples() if samples is None else samples
    if isinstance(S, bool) or not isinstance(S, int) or S < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if checkpoint is not None:
        _check_request(model_name, dataset, threat_model)
        resolved = ResolvedCheckpoint(Path(checkpoint), None, "explicit")
    else:
        resolved = resolve_checkpoint(model_name, dataset, threat_model, model_dir, store=store)
    model, meta = load_checkpoint(resolved.path, sha256=resolved.sha256, expected_name=model_name,
                                  expected_dataset=ARCH_DATASETS[dataset], samples=S)
    if meta.get("dataset", dataset) != dataset:
        raise CheckpointError(f"{resolved.path} was trained on {meta.get('dataset')!r}, not {dataset!r}")
    if meta.get("name", model_name) != model_name:
        raise CheckpointError(f"{resolved.path}: its config builds {model_name!r} but its meta data names "
                              f"{meta.get('name')!r} (an edited or mixed-up checkpoint)")
    _check_finite(model, resolved.path)
    return _prepare(model, S, dataset)


def prepared_architecture(model_name: str, dataset: str = "mnist", *, verify_shipped: bool = False) -> LWTANet:
    """The untrained architecture, prepared as :func:`load_model` prepares a loaded model (eval mode, input
    validation, the default S): for loaders that fill in the weights themselves.

    ``verify_shipped``: the first ``load_state_dict`` into it must bring the shipped weights of that model (the
    manifest's ``state_sha256``; :func:`verify_shipped_state`), whichever file they were read from."""
    model = _prepare(create_model(model_name, dataset), get_default_samples(), dataset)
    if verify_shipped:
        handle = None

        def check(module: Any, state: dict, prefix: str, *_: Any) -> None:
            if prefix == "":  # the whole state dict, once, at the root
                verify_shipped_state(state, model_name, dataset)
                handle.remove()  # later loads (fine-tuning, ...) are the caller's business

        handle = model.register_load_state_dict_pre_hook(check)
    return model


def verify_shipped_state(state: dict[str, torch.Tensor], model_name: str, dataset: str, *,
                         store: str | os.PathLike | None = None) -> None:
    """Raise :class:`CheckpointError` unless ``state`` holds the shipped weights of ``dataset/model_name`` (their
    hash in the weight manifest); a model the store does not ship has none to compare with. For loaders that read a checkpoint file themselves, e.g. RobustBench's own
    ``load_model``, which loads a file already present in its ``model_dir`` without asking the plugin."""
    entry = read_manifest(store)["models"].get(f"{dataset}/{model_name}")
    if entry is None:  # not shipped: no published weights to compare with (as a model_dir file in load_model)
        return
    try:
        actual = state_sha256(state)
    except (TypeError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"the weights loaded for {dataset}/{model_name} are not a state dict of tensors "
                              f"({type(e).__name__}: {e})") from None
    if actual != entry.get("state_sha256"):
        raise CheckpointError(
            f"the weights loaded for {dataset}/{model_name} are not the shipped ones (state sha256 {actual}, the "
            f"weight manifest says {entry.get('state_sha256')}): a checkpoint already in RobustBench's model_dir "
            f"(<model_dir>/{dataset}/Linf/{model_name}.pt) is an older, altered or other model's file. Delete it; "
            "RobustBench then copies the verified file from the weight store")


def copy_shipped(model_name: str, dataset: str, dest: str | os.PathLike, *,
                 store: str | os.PathLike | None = None) -> None:
    """Copy a shipped checkpoint, verified against the manifest, to ``dest``.

    Raises :class:`ModelNotAvailableError` (saying how to train the model) if the store does not hold it, and
    :class:`CheckpointError` if the stored file does not match its manifest entry.
    """
    store = Path(store or weights_dir())
    entry = read_manifest(store)["models"].get(f"{dataset}/{model_name}")
    if entry is None:
        raise ModelNotAvailableError(
            f"no checkpoint for {model_name!r} on {dataset} in the plugin's weight store ({manifest_path(store)}); "
            f"train it with `lwta train --model {model_name} --dataset {dataset} --epochs 5` and copy the "
            f"checkpoint to {dest} (or ship it with scripts/ship_model.py)")
    src = store / entry["file"]
    _verify_store_file(src, entry)
    data = src.read_bytes()
    _verify_store_file(src, entry, data)  # exactly the bytes that are copied
    atomic_write(dest, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------------------------
# shipping


def _training_record(meta: dict) -> dict:
    tc = meta.get("train_config") or {}
    metrics = meta.get("metrics") or {}
    return {"command": (tc.get("extra") or {}).get("command"), "epochs": tc.get("epochs"),
            "best_epoch": metrics.get("best_epoch", meta.get("epoch")), "seed": tc.get("seed"),
            "fgsm_eps": tc.get("fgsm_eps"), "noise_std": tc.get("noise_std"), "batch_size": tc.get("batch_size"),
            "lr": tc.get("lr"), "ibp_lr": tc.get("ibp_lr"), "n_train": meta.get("n_train"),
            "n_val": meta.get("n_val"), **_parent_record(meta.get("parent"))}


def _parent_record(parent: dict | None) -> dict:
    """For a run that continued another checkpoint (``lwta train --init-from``): that run's command and epochs."""
    if not parent:
        return {}
    tc = parent.get("train_config") or {}
    return {"continued_from": {"sha256": parent.get("sha256"), "command": (tc.get("extra") or {}).get("command"),
                               "epochs": tc.get("epochs"), "seed": tc.get("seed")}}


def register_checkpoint(path: str | os.PathLike, name: str | None = None, dataset: str | None = None,
                        store: str | os.PathLike | None = None, *, require_metrics: bool = True) -> dict:
    """Ship a checkpoint into the weight store: copy to ``<store>/<dataset>/<name>.pt``, update the manifest.

    The checkpoint is validated first (safe load, internal hash, architecture). ``name``/``dataset`` default to
    the checkpoint's own and must agree with it. ``require_metrics``: refuse checkpoints without the final
    metrics that ``lwta train`` records (intermediate or untrained checkpoints). Returns the manifest entry.
    """
    src = Path(path)
    if not src.is_file():
        raise CheckpointError(f"checkpoint not found: {src}")
    data = src.read_bytes()  # one snapshot: what is validated is exactly what is shipped
    sha = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="lwta-ship-") as tmp:
        snapshot = Path(tmp) / src.name
        snapshot.write_bytes(data)
        try:  # full validation: weights_only, hashes, weights fit the architecture, finite
            model, meta = load_checkpoint(snapshot)
            payload = read_checkpoint(snapshot)
            _check_finite(model, snapshot)
        except CheckpointError as e:
            raise CheckpointError(str(e).replace(str(snapshot), str(src))) from None
    arch = model.config.name
    name = name or meta.get("name") or arch
    if name != arch:
        raise ValueError(f"{src} holds model {arch!r}, not {name!r}")
    dataset = dataset or meta.get("dataset") or model.config.dataset
    if dataset not in DATASETS:
        raise ValueError(f"unknown data set {dataset!r}; available: {', '.join(DATASETS)}")
    if ARCH_DATASETS[dataset] != model.config.dataset or meta.get("dataset", dataset) != dataset:
        raise ValueError(f"{src} was built for {meta.get('dataset', model.config.dataset)!r}, not {dataset!r}")
    if require_metrics and not meta.get("metrics"):
        raise ValueError(f"{src} has no final metrics in its meta (an intermediate .best/.last checkpoint or an "
                         "untrained model?): ship the final checkpoint written by `lwta train`")
    store = Path(store or weights_dir())
    rel = f"{dataset}/{name}.pt"
    dest = store / rel
    with directory_lock(store):
        if not (dest.is_file() and sha256_file(dest) == sha):
            atomic_write(dest, lambda f: f.write(data))
        if sha256_file(dest) != sha:
            raise CheckpointError(f"copy of {src} to {dest} does not match the validated sha256 (changed meanwhile?)")
        entry = {"name": name, "dataset": dataset, "file": rel, "sha256": sha, "size": dest.stat().st_size,
                 "state_sha256": payload["state_sha256"], "config": model.config.to_dict(),
                 "training": _training_record(meta), "metrics": meta.get("metrics"),
                 "versions": {"plugin": meta.get("plugin_version"), "torch": meta.get("torch")}}
        manifest = read_manifest(store)
        manifest["models"][f"{dataset}/{name}"] = entry
        atomic_write_json(manifest_path(store), manifest)
    return entry
