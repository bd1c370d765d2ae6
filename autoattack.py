"""``autoattack`` for robustbench 1.1.1, shipped by lwta-plugin so that robustbench imports in any order.

robustbench 1.1.1 does ``from autoattack import AutoAttack`` and ``from autoattack.state import EvaluationState``,
but its PyPI dependency ``pyautoattack`` installs the module ``pyautoattack``, so ``import robustbench`` failed
unless ``import lwta_plugin`` had run first. Importing this module

* loads a real ``autoattack`` (fra31's auto-attack) if one is installed elsewhere on ``sys.path``: it always wins
  (in the same directory its package wins over this file anyway);
* else makes ``autoattack`` *be* ``pyautoattack`` in ``sys.modules``, and ``autoattack.<sub>`` the module
  ``pyautoattack.<sub>`` itself (a meta path finder: never a second copy with its own classes);
* else raises ModuleNotFoundError saying what to install.

Standard library only, and it must not import lwta_plugin: robustbench is half-imported when this runs.
:func:`lwta_plugin.compat.alias_autoattack` loads this file too (from beside the package) when it is not
importable, e.g. in an editable install made before it existed.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

TARGET = "pyautoattack"
_FINDER_MARK = "_lwta_autoattack_alias"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _real_autoattack_spec() -> importlib.machinery.ModuleSpec | None:
    """The spec of another ``autoattack`` on sys.path (not this file), or None."""
    here = os.path.dirname(os.path.realpath(__file__))
    others = [p for p in sys.path if not (isinstance(p, str) and os.path.realpath(p or os.curdir) == here)]
    spec = importlib.machinery.PathFinder.find_spec(__name__, others)
    if spec is None or spec.loader is None or (spec.origin and _same_file(spec.origin, __file__)):
        return None
    return spec


def _load_real(spec: importlib.machinery.ModuleSpec) -> None:
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module  # the import system returns sys.modules[name] once this file has run
    spec.loader.exec_module(module)


class _AliasLoader(importlib.abc.Loader):
    """Makes ``import autoattack.x`` return the module ``pyautoattack.x`` itself."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        sys.modules[module.__name__] = importlib.import_module(self.target)


class _AliasFinder(importlib.abc.MetaPathFinder):
    _lwta_autoattack_alias = True

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("autoattack.") or getattr(sys.modules.get("autoattack"), "__name__", "") != TARGET:
            return None
        real = TARGET + fullname[len("autoattack"):]
        try:
            if importlib.util.find_spec(real) is None:
                return None
        except (ImportError, ValueError):
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real))


def _alias() -> None:
    target = importlib.import_module(TARGET)
    sys.modules[__name__] = target
    prefix = TARGET + "."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix):
            sys.modules.setdefault("autoattack." + name[len(prefix):], module)
    if not any(getattr(f, _FINDER_MARK, False) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())


def _target_installed() -> bool:
    try:
        return importlib.util.find_spec(TARGET) is not None
    except (ImportError, ValueError):
        return False


_spec = _real_autoattack_spec()
if _spec is not None:
    _load_real(_spec)
elif _target_installed():
    _alias()
else:
    raise ModuleNotFoundError("robustbench imports the module `autoattack`, which is not installed: pip install "
                              "'pyautoattack>=0.2,<0.3' (or fra31's auto-attack from its repository)",
                              name="autoattack")
