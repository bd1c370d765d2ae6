"""All RobustBench integration: the fixes that make robustbench 1.1.1 (as installed from PyPI) usable, and the
registration of MNIST and the plugin's models in its zoo.

Fixes and guards
----------------
* robustbench does ``from autoattack import AutoAttack`` and ``from autoattack.state import EvaluationState``, but
  its PyPI dependency ``pyautoattack`` installs the module ``pyautoattack``. This package ships a top-level module
  ``autoattack`` (``autoattack.py`` beside ``lwta_plugin/``) that aliases ``autoattack`` (and its submodules) to
  ``pyautoattack`` in ``sys.modules`` when no real ``autoattack`` package is installed (a real one, e.g. fra31's,
  always wins), so robustbench imports whether or not ``lwta_plugin`` was imported first.
  :func:`ensure_robustbench_importable` imports it (or loads it from beside the package when it is not
  importable, e.g. from an editable install made before it existed).
* robustbench imports ``pkg_resources`` (setuptools < 81); a missing one is reported with the fix.
* ``robustbench.eval.benchmark`` was written for fra31's AutoAttack: it passes ``log_path=`` to the constructor,
  ``bs=`` to ``run_standard_evaluation`` and expects a tensor back. pyautoattack 0.2.0 has no ``log_path``, takes
  ``batch_size=`` (keyword-only) and returns ``(x_adv, y_adv)``. :class:`AutoAttackAdapter` bridges both and is
  installed as ``robustbench.eval.AutoAttack`` (looked up at call time, so it also works for references to
  ``benchmark`` taken before this plugin was imported).
* Random models: ``benchmark()`` runs *standard* (single-pass, no EOT) AutoAttack and one random clean pass,
  which overestimates the robustness of a random model (Athalye et al. 2018; RobustBench itself admits only
  deterministic defenses). We **refuse** rather than silently re-route to ``version='rand'``: pyautoattack's
  ``rand`` still scores clean and robust accuracy with a single random pass, so its number would look like a
  RobustBench result while meaning something else. The error points to ``lwta evaluate --protocol
  autoattack-rand`` (EOT, accuracies averaged over passes with confidence intervals) and ``--protocol
  adaptive``. The adapter likewise refuses ``AutoAttack(random_model, version='standard' | 'plus')`` (no EOT).
  Deterministic models and deterministic surrogates (``with model.sampling("argmax"): benchmark(model, ...)``)
  run unchanged.
* ``import autoattack.<sub>`` after the alias returns ``pyautoattack.<sub>`` itself (a meta path finder installed
  by ``autoattack.py``), never a second copy of the module with its own classes.
* A post-import hook (:func:`install_robustbench_hook`, called by ``import lwta_plugin``) applies all of the
  above and registers the plugin's models when robustbench is first imported, so ``import lwta_plugin`` does not
  import robustbench (or torch) itself and works without robustbench installed.

How MNIST (and the plugin's models) are added to RobustBench 1.1.1
------------------------------------------------------------------
RobustBench resolves ``load_model(model_name, model_dir, dataset, threat_model)`` by parsing ``dataset`` into the
``BenchmarkDataset`` enum, ``threat_model`` into ``ThreatModel``, looking up
``model_dicts[dataset][threat_model][model_name] = {'model': factory, 'gdrive_id': ...}``, downloading the file to
``<model_dir>/<dataset>/<threat_model>/<name>.pt`` if missing and loading its state dict into ``factory()``.
:func:`register_robustbench` (run by the post-import hook when robustbench is first imported after
``import lwta_plugin``) does, idempotently:

1. **Enum member.** ``BenchmarkDataset`` is referenced by class identity from many modules and is the key type of
   several dicts (``model_dicts``, data loaders, ``DATASET_CLASSES``) and of references users already hold, so a
   new Enum class rebound in RobustBench's modules would orphan all of those. Instead the member ``mnist =
   'mnist'`` is added to the *existing* class in place (:func:`extend_enum`, the technique of
   ``aenum.extend_enum``: ``EnumType._add_member_`` on Python >= 3.13, else the ``_member_map_``,
   ``_member_names_`` and ``_value2member_map_`` tables), then checked (``BenchmarkDataset('mnist') is
   BenchmarkDataset.mnist``, iteration, membership). Existing members are untouched. If the check fails (a
   future Python), MNIST is not added to the enum and a warning says so; step 3 still serves ``dataset='mnist'``.
2. **Entries.** ``model_dicts[mnist][Linf]`` is created and the plugin's names appended to cifar10's Linf dict.
   Linf only: the models are evaluated against L-inf attacks, so ``threat_model='L2'`` must not return them as L2
   models (:mod:`lwta_plugin.zoo`). RobustBench's names are never replaced (a collision raises). The mnist dicts
   answer a missing threat model or name with the reason and the closest names (a KeyError, as RobustBench's).
3. **Interception.** ``robustbench.utils.load_model`` (and its re-exports ``robustbench.load_model``,
   ``robustbench.eval.load_model``) is wrapped: a plugin name, or any name on a data set where RobustBench has no
   models of its own (mnist, fashion_mnist), goes to :func:`lwta_plugin.zoo.load_model` (store lookup, sha256,
   ``weights_only``, validation, ``S``; unknown names with "did you mean", ``L2`` refused); everything else to
   RobustBench's original, unchanged except that an unknown name raises :class:`lwta_plugin.zoo.UnknownModelError`
   (a KeyError) with the closest names instead of a bare ``KeyError``. A reference to the original taken *before*
   the plugin was imported still works: each entry's
   ``gdrive_id`` is a sentinel ``lwta-plugin:<dataset>/<name>`` that the patched
   ``robustbench.utils.download_gdrive_new`` resolves by copying the sha256-verified checkpoint from the weight
   store to RobustBench's path (never downloading), and the entry's factory builds the architecture with
   validation and ``S``. A file already at that path is loaded by RobustBench without asking the plugin, so the
   architecture refuses weights other than the shipped ones (the manifest's ``state_sha256``).
4. **Data.** ``robustbench.data`` gets an offline MNIST test-set loader (via :mod:`lwta_plugin.data`) and
   ``DATASET_CLASSES[mnist] = 10``, so ``benchmark(..., dataset='mnist')`` works for deterministic models.
   ``benchmark()`` refuses random models (see above for why and what to run instead).

This module imports neither torch nor robustbench at import time (nor the plugin's torch-based modules: the
weight store, :mod:`lwta_plugin.zoo`, is imported when the models are registered).
"""
from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

_HOOK_MARK = "_lwta_plugin_hook"
_PATCH_MARK = "_lwta_plugin_patched"
ROBUSTBENCH_DATASETS = ("mnist", "cifar10")  # the data sets whose RobustBench zoo lists the plugin's models
SENTINEL = "lwta-plugin:"  # gdrive_id prefix of the plugin's entries: "lwta-plugin:<dataset>/<name>"
_ENTRY_MARK = "lwta_plugin"  # key marking the plugin's entries in RobustBench's model_dicts
EVALUATE_HINT = "lwta evaluate --model <name> --dataset <dataset> --protocol autoattack-rand"


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


ALIAS_MODULE = Path(__file__).resolve().parent.parent / "autoattack.py"  # shipped beside the package


def alias_autoattack() -> bool:
    """Import ``autoattack``: the real one if installed, else this package's alias of ``pyautoattack``
    (``autoattack.py``, loaded from beside the package when it is not importable); ImportError naming the fix.

    Returns True if ``autoattack`` is the alias (now or before), False if a real ``autoattack`` module exists.
    """
    current = sys.modules.get("autoattack")
    if current is None:
        current = importlib.import_module("autoattack") if _have("autoattack") else _load_alias_module()
    return getattr(current, "__name__", "") == "pyautoattack"


def _load_alias_module() -> Any:
    if not ALIAS_MODULE.is_file():
        hint = ("pip install 'pyautoattack>=0.2,<0.3' (or fra31's auto-attack from its repository)"
                if not _have("pyautoattack") else f"reinstall lwta-plugin ({ALIAS_MODULE} is missing)")
        raise ImportError(f"robustbench imports the module `autoattack`, which is not importable: {hint}")
    spec = importlib.util.spec_from_file_location("autoattack", ALIAS_MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["autoattack"] = module
    try:
        spec.loader.exec_module(module)  # replaces sys.modules["autoattack"] (by pyautoattack or a real one)
    except BaseException:
        if sys.modules.get("autoattack") is module:
            del sys.modules["autoattack"]
        raise
    return sys.modules["autoattack"]


def ensure_robustbench_importable() -> None:
    """Install what robustbench 1.1.1 needs before it is imported; raises ImportError naming the fix."""
    if not _have("pkg_resources"):
        raise ImportError("robustbench 1.1.1 imports pkg_resources, which setuptools >= 81 no longer provides: "
                          "pip install 'setuptools<81'")
    alias_autoattack()


@contextlib.contextmanager
def _quiet_pkg_resources():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        yield


def import_robustbench():
    """Import robustbench with the shims applied (and the plugin registered); returns the package."""
    ensure_robustbench_importable()
    with _quiet_pkg_resources():
        import robustbench
    if not getattr(robustbench, "_lwta_plugin_registered", False):
        _after_robustbench_import()
    return robustbench


# ---------------------------------------------------------------------------------------------------------------
# benchmark(): AutoAttack signature bridge and the random-model guard


def random_lwta_modules(model: Any) -> list:
    """The LWTANet modules inside ``model`` that are random at test time (empty for deterministic models)."""
    from .models import LWTANet

    modules = model.modules() if hasattr(model, "modules") else []
    return [m for m in modules if isinstance(m, LWTANet) and m.stochastic]


def refuse_random_model(model: Any, what: str = "robustbench's benchmark()") -> None:
    """Raise ValueError if ``model`` contains a random LWTANet (see the module docstring for why)."""
    found = random_lwta_modules(model)
    if found:
        cfg = found[0].config
        dataset = getattr(found[0], "zoo_dataset", cfg.dataset)
        raise ValueError(
            f"{what} would evaluate the random model {cfg.name!r} ({dataset}) with single-pass standard "
            "AutoAttack and one random clean pass, which overestimates the robustness of random models "
            "(RobustBench only admits deterministic defenses). Evaluate it with EOT instead: "
            f"`{EVALUATE_HINT.replace('<name>', cfg.name).replace('<dataset>', dataset)}` "
            "(or `--protocol adaptive` for the full adaptive suite). "
            "To benchmark a deterministic surrogate on purpose: `with model.sampling('argmax'): benchmark(...)`.")


def _autoattack_adapter_class():
    from pyautoattack import AutoAttack as _PyAutoAttack

    class AutoAttackAdapter(_PyAutoAttack):
        """pyautoattack's AutoAttack with fra31's call signature, as robustbench 1.1.1 uses it."""

        def __init__(self, model, norm: str = "Linf", eps: float = 0.3, seed: int | None = None,
                     verbose: bool = True, attacks_to_run: list | None = None, version: str = "standard",
                     is_tf_model: bool = False, device: Any = "cuda", log_path: str | None = None):
            if is_tf_model:
                raise ValueError("TensorFlow models are not supported by pyautoattack")
            if version in ("standard", "plus"):  # no EOT: only 'rand' averages gradients over the randomness
                refuse_random_model(model, f"AutoAttack(version={version!r})")
            super().__init__(model, attacks=(attacks_to_run or None) if version == "custom" else None,
                             device=device, eps=eps, norm=norm, seed=seed, version=version)
            self.verbose = verbose
            self.log_path = log_path

        def run_standard_evaluation(self, x_orig, y_orig, bs: int | None = None, *, batch_size: int | None = None,
                                    state_path=None, return_labels: bool = False):
            if bs is not None and batch_size is not None and bs != batch_size:
                raise ValueError(f"conflicting batch sizes: bs={bs}, batch_size={batch_size}")
            import logging
            from pathlib import Path

            if state_path is not None:  # pyautoattack calls state_path.exists()
                state_path = Path(state_path)

            handler = None
            if self.log_path is not None:  # fra31's log_path: the attack log goes to this file
                handler = logging.FileHandler(self.log_path)
                self.logger.addHandler(handler)
                old_level = self.logger.level
                self.logger.setLevel(logging.DEBUG)
            try:
                x_adv, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=batch_size or bs or 250,
                                                               state_path=state_path)
            finally:
                if handler is not None:
                    self.logger.removeHandler(handler)
                    self.logger.setLevel(old_level)
                    handler.close()
            return (x_adv, y_adv) if return_labels else x_adv

    return AutoAttackAdapter


def patch_robustbench_benchmark() -> None:
    """Install the AutoAttack adapter in robustbench.eval and guard ``benchmark()`` against random models."""
    import robustbench
    import robustbench.eval as rb_eval

    aa = rb_eval.AutoAttack  # fra31's real autoattack already has robustbench's signature: leave it alone
    if not getattr(aa, _PATCH_MARK, False) and getattr(aa, "__module__", "").split(".")[0] == "pyautoattack":
        adapter = _autoattack_adapter_class()
        setattr(adapter, _PATCH_MARK, True)
        rb_eval.AutoAttack = adapter
    original = rb_eval.benchmark
    if getattr(original, _PATCH_MARK, False):
        return

    @functools.wraps(original)
    def benchmark(model, *args, **kwargs):
        refuse_random_model(model)  # fail before loading data and computing a clean accuracy
        return original(model, *args, **kwargs)

    setattr(benchmark, _PATCH_MARK, True)
    benchmark._lwta_original = original
    rb_eval.benchmark = benchmark
    if getattr(robustbench, "benchmark", None) is original:
        robustbench.benchmark = benchmark


# ---------------------------------------------------------------------------------------------------------------
# registration: MNIST and the plugin's models in RobustBench's zoo


def extend_enum(cls: type[enum.Enum], name: str, value: Any) -> enum.Enum:
    """Add member ``name = value`` to an existing Enum class in place (idempotent); returns the member."""
    if name in cls._member_map_:
        member = cls._member_map_[name]
        if member.value != value:
            raise ValueError(f"{cls.__name__}.{name} exists with value {member.value!r}, not {value!r}")
        return member
    if value in cls._value2member_map_:
        raise ValueError(f"{cls.__name__} already has value {value!r} ({cls._value2member_map_[value]})")
    member = object.__new__(cls)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = cls
    member.__init__(value)
    if hasattr(cls, "_add_member_"):  # Python >= 3.13: sets the attribute and _member_map_
        cls._add_member_(name, member)
    else:
        type.__setattr__(cls, name, member)
        cls._member_map_[name] = member
    if name not in cls._member_names_:  # iteration order, len()
        cls._member_names_.append(name)
    cls._value2member_map_[value] = member
    if not (cls(value) is member and cls[name] is member and getattr(cls, name) is member and member in cls
            and member in list(cls)):
        raise RuntimeError(f"extending {cls.__name__} with {name!r} did not produce a working member")
    return member


def is_plugin_model(model_name: Any, dataset: Any) -> bool:
    """Whether ``(model_name, dataset)`` is served by this plugin (used by the RobustBench interception)."""
    from .models import list_models
    from .zoo import DATASETS

    dataset = dataset.value if isinstance(dataset, enum.Enum) else dataset
    return isinstance(model_name, str) and model_name in list_models() and dataset in DATASETS


def is_plugin_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is one of the plugin's where RobustBench has no models of its own (every name there is
    the plugin's to resolve, or to refuse with "did you mean")."""
    from robustbench.model_zoo import model_dicts

    from .zoo import DATASETS

    dataset = dataset.value if isinstance(dataset, enum.Enum) else dataset
    return dataset in DATASETS and not any(
        getattr(member, "value", member) == dataset and not entry.get(_ENTRY_MARK)
        for member, per_threat in model_dicts.items() for names in per_threat.values() for entry in names.values())


def _unknown_name_error(model_name: Any, dataset: Any, threat_model: Any) -> Exception | None:
    """The "did you mean" error for a name missing from RobustBench's zoo, or None if the name is there (then a
    KeyError came from somewhere else and is left alone)."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from .zoo import UnknownModelError, did_you_mean

    try:
        ds, tm = BenchmarkDataset(dataset), ThreatModel(threat_model)
    except ValueError:
        return None
    names = list(model_dicts.get(ds, {}).get(tm, {}))
    if model_name in names:
        return None
    return UnknownModelError(f"unknown model {model_name!r} in RobustBench's zoo for {ds.value} / {tm.value} (with "
                             f"lwta-plugin's models).{did_you_mean(model_name, names)}")


class _PluginThreatModels(OrderedDict):
    """``model_dicts[<plugin data set>]``: a missing threat model (``L2``) raises the reason, not a bare KeyError."""

    def __missing__(self, key: Any):
        from .zoo import threat_model_error

        raise threat_model_error(key.value if isinstance(key, enum.Enum) else key)


class _PluginNames(OrderedDict):
    """``model_dicts[<plugin data set>][Linf]``: a missing name raises "did you mean" (a KeyError too)."""

    def __missing__(self, key: Any):
        from .zoo import UnknownModelError, did_you_mean

        raise UnknownModelError(f"unknown lwta-plugin model {key!r}.{did_you_mean(key, list(self))} Registered: "
                                f"{', '.join(self)}")


def _robustbench_factory(name: str, dataset: str) -> Any:
    """Architecture for RobustBench's own loader (used by references to its original ``load_model``). That loader
    reads ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` itself when the file is already there (no copy from
    the store, no sha256 check), so the architecture checks the weights it is given against the weight manifest."""
    from .zoo import prepared_architecture

    return prepared_architecture(name, dataset, verify_shipped=True)


def _robustbench_download_hook(original):
    """``download_gdrive_new`` that serves the plugin's sentinel ids from the weight store (never downloading)."""
    @functools.wraps(original)
    def download_gdrive_new(gdrive_id, fname_save):
        if not (isinstance(gdrive_id, str) and gdrive_id.startswith(SENTINEL)):
            return original(gdrive_id, fname_save)
        from .zoo import copy_shipped

        dataset, name = gdrive_id[len(SENTINEL):].split("/", 1)
        copy_shipped(name, dataset, fname_save)

    setattr(download_gdrive_new, _PATCH_MARK, True)
    return download_gdrive_new


def _robustbench_load_model_wrapper(original):
    """RobustBench's ``load_model`` that hands the plugin's models to :func:`lwta_plugin.zoo.load_model`."""
    @functools.wraps(original)
    def load_model_(model_name, model_dir="./models", dataset="cifar10", threat_model="Linf",
                    custom_checkpoint="", norm=None):
        if is_plugin_model(model_name, dataset) or is_plugin_dataset(dataset):
            from .zoo import load_model

            return load_model(model_name, model_dir, dataset, threat_model, custom_checkpoint, norm)
        try:
            return original(model_name, model_dir, dataset, threat_model, custom_checkpoint, norm)
        except KeyError:
            error = _unknown_name_error(model_name, dataset, norm or threat_model)
            if error is None:
                raise
            raise error from None

    setattr(load_model_, _PATCH_MARK, True)
    load_model_._lwta_original = original
    return load_model_


def _load_mnist_for_robustbench(n_examples=None, data_dir="./data", transforms_test=None):
    """RobustBench's clean-data loader signature; ``data_dir`` is used if it holds torchvision's MNIST files,
    otherwise the offline copy (see :mod:`lwta_plugin.data`)."""
    from .data import load_tensors

    root = data_dir if data_dir and Path(data_dir).is_dir() else None  # RobustBench's default ./data may not exist
    return load_tensors("mnist", "test", root=root, limit=n_examples)


def _add_entries(model_dicts: dict, datasets: dict[str, enum.Enum], threat_models: list[enum.Enum]) -> None:
    """Append the plugin's names to ``model_dicts[dataset][threat_model]``; a RobustBench name is never replaced."""
    from .models import list_models

    for ds_name, member in datasets.items():
        per_threat = model_dicts.setdefault(member, _PluginThreatModels())  # cifar10: RobustBench's own dicts
        for tm in threat_models:
            entries = per_threat.setdefault(tm, _PluginNames())
            for name in list_models():
                if name in entries and not entries[name].get(_ENTRY_MARK):
                    raise RuntimeError(f"RobustBench already has a model named {name!r} ({ds_name}/{tm.value})")
                entries[name] = {"model": functools.partial(_robustbench_factory, name, ds_name),
                                 "gdrive_id": f"{SENTINEL}{ds_name}/{name}", "preprocessing": None,
                                 _ENTRY_MARK: True}


def register_robustbench() -> bool:
    """Register the plugin's models (and MNIST) in RobustBench's zoo; idempotent. False if robustbench is not
    installed; ImportError naming the fix if it is but cannot be imported (e.g. no autoattack)."""
    if not _have("robustbench"):  # before the shims: their errors are about robustbench's dependencies
        return False
    try:
        ensure_robustbench_importable()
        import robustbench
        import robustbench.data as rb_data
        import robustbench.eval as rb_eval
        import robustbench.utils as rb_utils
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ModuleNotFoundError as e:
        if e.name == "robustbench":
            return False
        raise

    datasets = {"cifar10": BenchmarkDataset.cifar_10}
    try:
        datasets["mnist"] = extend_enum(BenchmarkDataset, "mnist", "mnist")
    except (RuntimeError, ValueError, AttributeError, TypeError) as e:
        warnings.warn(f"lwta-plugin could not add MNIST to RobustBench's BenchmarkDataset ({e}); "
                      "robustbench.utils.load_model(..., dataset='mnist') still loads the plugin's models",
                      RuntimeWarning, stacklevel=2)
    _add_entries(model_dicts, datasets, [ThreatModel.Linf])
    if "mnist" in datasets:
        rb_data._clean_dataset_loaders.setdefault(datasets["mnist"], _load_mnist_for_robustbench)
        rb_utils.DATASET_CLASSES.setdefault(datasets["mnist"], 10)

    if not getattr(rb_utils.download_gdrive_new, _PATCH_MARK, False):
        rb_utils.download_gdrive_new = _robustbench_download_hook(rb_utils.download_gdrive_new)
    original = rb_utils.load_model
    if not getattr(original, _PATCH_MARK, False):
        wrapped = _robustbench_load_model_wrapper(original)
        for module in (rb_utils, robustbench, rb_eval):
            if getattr(module, "load_model", None) is original:
                module.load_model = wrapped
    return True


# ---------------------------------------------------------------------------------------------------------------
# post-import hook


def _after_robustbench_import() -> None:
    import robustbench

    try:
        patch_robustbench_benchmark()
        register_robustbench()
        robustbench._lwta_plugin_registered = True
    except Exception as e:  # never break robustbench's own models because of the plugin
        warnings.warn(f"lwta-plugin could not register its models in RobustBench: {type(e).__name__}: {e}",
                      RuntimeWarning, stacklevel=2)


class _HookedLoader(importlib.abc.Loader):
    """Wraps robustbench's loader: shims before its ``__init__`` runs, registration after."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader  # leave no trace of the wrapper (pkg_resources inspects the loader)
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        ensure_robustbench_importable()
        with _quiet_pkg_resources():
            self.loader.exec_module(module)
        _after_robustbench_import()


class _RobustBenchFinder(importlib.abc.MetaPathFinder):
    _lwta_plugin_hook = True

    def find_spec(self, fullname, path, target=None):
        if fullname != "robustbench":
            return None
        for finder in sys.meta_path:
            if getattr(finder, _HOOK_MARK, False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader)
        return spec


def install_robustbench_hook() -> None:
    """Register the plugin with robustbench now if it is imported, else when it gets imported (idempotent)."""
    if "robustbench" in sys.modules:  # already imported (None: import blocked on purpose)
        module = sys.modules["robustbench"]
        if module is not None and not getattr(module, "_lwta_plugin_registered", False):
            _after_robustbench_import()
        return
    if not any(getattr(f, _HOOK_MARK, False) for f in sys.meta_path):
        sys.meta_path.insert(0, _RobustBenchFinder())
