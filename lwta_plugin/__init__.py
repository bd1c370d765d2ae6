"""lwta-plugin: stochastic LWTA + IBP + ECOC networks for RobustBench and torchattacks.

``import lwta_plugin`` is cheap (no torch, no robustbench): it installs a hook that registers the plugin's
models in RobustBench's zoo when robustbench is imported (see :mod:`lwta_plugin.compat`). The zoo API below
(:mod:`lwta_plugin.zoo`) is loaded on first use, and so is :func:`evaluate` (any ``nn.Module`` mapping images in
[0, 1] to class logits, evaluated with a protocol for random models: :mod:`lwta_plugin.evaluation.foreign`).
"""
from ._version import __version__ as __version__  # public (re-export)
from .compat import install_robustbench_hook as _install_robustbench_hook
from .compat import register_robustbench as register_robustbench  # public API (re-export)

_install_robustbench_hook()

_ZOO_API = ("load_model", "set_default_samples", "get_default_samples", "default_samples", "available_models",
            "register_checkpoint", "ModelNotAvailableError", "UnknownModelError")


def __getattr__(name: str):
    if name == "evaluate":
        from .evaluation.foreign import evaluate_model

        return evaluate_model
    if name in _ZOO_API:
        from . import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module 'lwta_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ZOO_API, "evaluate"])
