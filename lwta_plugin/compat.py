"""Import shims and fixes that make robustbench 1.1.1 (as installed from PyPI) usable with this plugin.

* robustbench does ``from autoattack import AutoAttack`` and ``from autoattack.state import EvaluationState``, but
  its PyPI dependency ``pyautoattack`` installs the module ``pyautoattack``.
  :func:`ensure_robustbench_importable` aliases ``autoattack`` (and its loaded submodules) to ``pyautoattack`` in
  ``sys.modules`` when no real ``autoattack`` package is installed (a real one, e.g. fra31's, always wins).
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
* ``import autoattack.<sub>`` after the alias returns ``pyautoattack.<sub>`` itself (a meta path finder), never a
  second copy of the module with its own classes.
* A post-import hook (:func:`install_robustbench_hook`, called by ``import lwta_plugin``) applies all of the
  above and registers the plugin's models when robustbench is first imported, so ``import lwta_plugin`` does not
  import robustbench (or torch) itself and works without robustbench installed.

This module imports neither torch nor robustbench at import time.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any

_HOOK_MARK = "_lwta_plugin_hook"
_PATCH_MARK = "_lwta_plugin_patched"
EVALUATE_HINT = "lwta evaluate --model <name> --dataset <dataset> --protocol autoattack-rand"


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def alias_autoattack() -> bool:
    """Make ``import autoattack`` resolve to ``pyautoattack`` if no real ``autoattack`` is installed.

    Returns True if the alias is in place (now or before), False if a real ``autoattack`` module exists.
    """
    current = sys.modules.get("autoattack")
    if current is not None:
        return getattr(current, "__name__", "") == "pyautoattack"
    if _have("autoattack"):
        return False
    if not _have("pyautoattack"):
        raise ImportError("robustbench imports the module `autoattack`, which is not installed: "
                          "pip install 'pyautoattack>=0.2,<0.3' (or fra31's auto-attack from its repository)")
    import pyautoattack

    sys.modules["autoattack"] = pyautoattack
    prefix = "pyautoattack."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix):
            sys.modules.setdefault("autoattack." + name[len(prefix):], module)
    if not any(isinstance(f, _AutoAttackAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoAttackAliasFinder())  # submodules imported later: the same module objects
    return True


class _AliasLoader(importlib.abc.Loader):
    """Makes ``import autoattack.x`` return the module ``pyautoattack.x`` itself (never a second copy)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        # the import system returns sys.modules[name] after exec_module, i.e. the real module
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _AutoAttackAliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("autoattack.") or getattr(sys.modules.get("autoattack"), "__name__", "") \
                != "pyautoattack":
            return None
        real = "pyautoattack." + fullname[len("autoattack."):]
        if not _have(real):
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


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
# post-import hook


def _after_robustbench_import() -> None:
    import robustbench

    try:
        patch_robustbench_benchmark()
        from .zoo import register_robustbench

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
