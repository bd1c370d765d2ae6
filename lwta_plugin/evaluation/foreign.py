"""Evaluating a model from outside the plugin: :func:`evaluate_model` (``lwta_plugin.evaluate``), the random-model
counterpart of RobustBench's ``benchmark()``, and ``lwta evaluate --model-factory``.

The model is any ``nn.Module`` mapping images in [0, 1] to class logits, wrapped by
:class:`~lwta_plugin.evaluation.user_model.UserModel` and run by the same :class:`ProtocolRun` as the zoo's models
(same seeds, state directory, resume, entry), with these differences, all recorded in the entry:

* the protocol (:func:`user_protocol`): ``paper``, ``adaptive``, ``autoattack-rand`` or ``smoke`` (the others need
  the LWTA samplers); the margin attack takes its margin on the logits; ``transfer`` (PGD on the surrogate) and
  ``bpda`` (forward pass of the model, gradients of the surrogate) need a surrogate, e.g. the model with its
  randomness switched off, and are dropped with the reason in the protocol's notes when there is none;
* the checkpoint record: source ``user``, sha256 of the model's ``state_dict``
  (:func:`lwta_plugin.checkpoint.state_sha256`), ``file`` = the factory's import path (empty from Python), and
  ``config`` = architecture, randomness (declared / measured), samples per prediction, surrogate;
* RobustBench's fields (``name``, ``authors``, ``link``, ``venue``, ``architecture``) from ``about`` (or the
  model's ``about`` attribute); no paper rows.

``lwta verify`` checks an entry with a factory by importing it again and comparing the state_dict sha256 (and the
measured randomness); an entry without one (written from Python) is checked against its own counts only.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import state_sha256
from ..figures import finalize_entry
from ..io import check_writable_directory
from ..models import list_models
from ..protocols import Protocol, resolve, select_attacks
from .config import EvaluationConfig
from .loading import EvaluationData, ModelInfo, load_test_data
from .runner import AttackFactory, Log, ProtocolRun, build_attack_for
from .user_model import UserModel, wrap_model

USER_PROTOCOLS = ("paper", "adaptive", "autoattack-rand", "smoke")
USER_SURROGATE = "user"  # transfer's ``surrogate`` hyperparameter when it attacks the user's surrogate
ABOUT_KEYS = {"name": str, "authors": str, "link": str, "venue": str, "architecture": str, "additional_data": bool,
              "training": dict}
NAME = re.compile(r"^[a-z0-9_]+$")
NOT_GIVEN = "(not given)"


# ---------------------------------------------------------------------------------------------------------------
# factories


def import_factory(spec: str, option: str = "--model-factory") -> Callable[[], Any]:
    """The function named by ``package.module:function`` (the working directory is importable, as for
    ``python -m``); ValueError naming the problem otherwise."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"{option} must look like package.module:function, got {spec!r}")
    module_name, attr = spec.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{option} {spec}: cannot import module {module_name!r} ({e})") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"{option} {spec}: module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"{option} {spec}: {attr!r} is a {type(fn).__name__}, not a function")  # noqa: TRY004
    return fn


def build_from_factory(spec: str, option: str = "--model-factory") -> nn.Module:
    """Call the factory ``spec`` without arguments; ValueError unless it returns an ``nn.Module``."""
    fn = import_factory(spec, option)
    model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(  # noqa: TRY004 (a bad factory is a user error: the CLI reports ValueErrors)
            f"{option} {spec} returned {type(model).__name__}, not a torch.nn.Module (a model mapping "
                         "images in [0, 1] to class logits)")
    return model


def default_name(spec: str) -> str:
    """The entry name of a factory's model when none is given: the function's name, lower case."""
    return re.sub(r"[^a-z0-9_]", "_", spec.rsplit(":", 1)[-1].rsplit(".", 1)[-1].lower())


# ---------------------------------------------------------------------------------------------------------------
# protocol, attacks


def user_protocol(protocol: Protocol, surrogate: str | None, samples: int, model_note: str) -> Protocol:
    """``protocol`` (resolved) for a model from outside the plugin: the margin loss on logits, transfer and BPDA
    on the ``surrogate`` (a description) or dropped with the reason, ``samples`` passes per prediction, and the
    model's description in the notes. ValueError for a protocol that needs the LWTA samplers."""
    if protocol.name not in USER_PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} needs the plugin's LWTA samplers; a model from outside the "
                         f"plugin can run {', '.join(USER_PROTOCOLS)}")
    specs, notes = [], [model_note]
    for spec in protocol.attacks:
        if spec.attack == "eot_pgd_margin":
            spec = replace(spec, params={**spec.params, "output": "logits"},
                           description=spec.description.split(" with a margin loss")[0]
                           + " with a margin loss on the logits (CW margin; LWTA networks use their raw codeword "
                             "correlations, which a plain model does not have)")
        elif spec.attack in ("transfer", "bpda") and surrogate is None:
            notes.append(f"{spec.key} skipped: it needs a surrogate (e.g. the model with its randomness switched "
                         "off; surrogate=, --surrogate-factory) and none was given.")
            continue
        elif spec.attack == "transfer":
            spec = replace(spec, params={**spec.params, "surrogate": USER_SURROGATE},
                           description=f"PGD on the user's surrogate ({surrogate}), transferred to the random model")
        elif spec.attack == "bpda":
            spec = replace(spec, description=f"BPDA: the forward pass of the random model, the gradients of the "
                                             f"user's surrogate ({surrogate}; straight-through), EOT "
                                             f"{spec.eot_samples}")
        specs.append(spec)
    scoring = replace(protocol.scoring, samples=samples)
    kept = replace(protocol, scoring=scoring, notes=(*protocol.notes, *notes))
    return select_attacks(replace(kept, attacks=tuple(specs)), [s.key for s in specs])  # the cascade: kept ones


def user_attack_factory(base: AttackFactory = build_attack_for) -> AttackFactory:
    """``base`` with the transfer attack's ``surrogate: "user"`` replaced by the model's surrogate module."""
    def build(spec: Any, model: Any) -> Any:
        if spec.attack == "transfer" and spec.params.get("surrogate") == USER_SURROGATE:
            attack = base(replace(spec, params={**spec.params, "surrogate": model.surrogate}), model)
            if isinstance(getattr(attack, "hparams", None), dict):
                attack.hparams["surrogate"] = USER_SURROGATE  # recorded as the protocol names it
            return attack
        return base(spec, model)

    return build


# ---------------------------------------------------------------------------------------------------------------
# the run


def check_about(about: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's description fields (:data:`ABOUT_KEYS`), checked; ValueError naming a bad one."""
    about = dict(about or {})
    bad = sorted(set(about) - set(ABOUT_KEYS))
    if bad:
        raise ValueError(f"about has unknown keys {bad}; allowed: {', '.join(sorted(ABOUT_KEYS))}")
    for key, value in about.items():
        if not isinstance(value, ABOUT_KEYS[key]):
            raise ValueError(f"about[{key!r}] must be a {ABOUT_KEYS[key].__name__}, got {value!r}")  # noqa: TRY004
    if about.get("link") and not re.match(r"^https?://", about["link"]):
        raise ValueError(f"about['link'] must be an http(s) address, got {about['link']!r}")
    return about


class UserRun(ProtocolRun):
    """A :class:`ProtocolRun` of a :class:`UserModel`: its own reproduction command, and the entry's description
    fields from ``about`` instead of the plugin's paper."""

    def __init__(self, model: UserModel, info: ModelInfo, data: EvaluationData, protocol: Protocol,
                 config: EvaluationConfig, attack_factory: AttackFactory, force: bool, command: str,
                 about: Mapping[str, Any]):
        super().__init__(model, info, data, protocol, config, attack_factory, force)
        self.command, self.about = command, dict(about)

    def assemble(self) -> tuple[dict, dict]:
        entry, timing = super().assemble()
        a = self.about
        entry.update(name=a.get("name") or self.info.name, authors=a.get("authors") or NOT_GIVEN,
                     link=a.get("link", ""), venue=a.get("venue", ""),
                     architecture=self.info.config["architecture"], additional_data=a.get("additional_data", False),
                     paper={"rows": [], "notes": []})
        entry.pop("reported", None)
        finalize_entry(entry)
        return entry, timing


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"name must be lower-case letters, digits and _ (it names the entry file), got {name!r}")
    if name in list_models():
        raise ValueError(f"name {name!r} is a model of the plugin's zoo; give the model from outside the plugin "
                         "another name")
    return name


def _data(x: torch.Tensor | None, y: torch.Tensor | None, dataset: str, need: int,
          data_root: str | None) -> EvaluationData:
    if (x is None) != (y is None):
        raise ValueError("give both x and y, or neither (then the data set's test images are used)")
    if x is None:
        x, y = load_test_data(dataset, need, data_root)
        return EvaluationData(x, y, f"lwta_plugin.data:{dataset}")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")  # noqa: TRY004
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x must be images (N, C, H, W) and y labels (N,) with the same N > 0, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if not x.is_floating_point() or x.min() < 0 or x.max() > 1:
        raise ValueError("x must be floating-point images in [0, 1] (normalise inside the model)")
    return EvaluationData(x, y.long(), "custom")


def python_command(name: str, protocol: str, **settings: Any) -> str:
    """How an entry written from Python records its command (there is no command line to rerun)."""
    shown = ", ".join(f"{k}={v!r}" for k, v in settings.items() if v not in (None, (), {}, False))
    return f"lwta_plugin.evaluate(model, x, y, protocol={protocol!r}, name={name!r}{', ' + shown if shown else ''})"


@dataclass(frozen=True)
class RunOptions:
    """How :func:`evaluate_model` runs (the keyword arguments after the model's own).

    dataset, n_examples, seed, batch_size, passes, attacks, data_root: as
    :class:`~lwta_plugin.evaluation.EvaluationConfig`; overrides: ``{attack key: {"n_examples" | "params" |
    "batch_size": ...}}`` for the protocol. out_dir: write the entry to ``<out_dir>/<dataset>/Linf/<name>__<protocol>
    .json`` (resumable: rerun to continue; a finished entry of another configuration is kept unless ``force``);
    None: a temporary directory (nothing kept). factory / surrogate_factory: the import paths the models came from
    (recorded; ``lwta verify`` rebuilds them). command: the entry's reproduction command (default: the Python
    call). attack_factory: builds each task's attack (tests pass fakes). resume, progress, log: as
    :func:`lwta_plugin.evaluation.evaluate`."""

    dataset: str = "mnist"
    n_examples: int | None = None
    seed: int = 0
    out_dir: str | os.PathLike | None = None
    batch_size: int | None = None
    passes: int | None = None
    overrides: Mapping[str, Any] | None = None
    attacks: Sequence[str] = ()
    data_root: str | None = None
    factory: str | None = None
    surrogate_factory: str | None = None
    command: str | None = None
    attack_factory: AttackFactory | None = None
    resume: bool = True
    force: bool = False
    progress: bool = False
    log: Log | None = None

    def config(self, name: str, protocol: str, out_dir: str | os.PathLike) -> EvaluationConfig:
        """The :class:`EvaluationConfig` of this run (checked)."""
        return EvaluationConfig([name], dataset=self.dataset, protocols=[protocol], attacks=self.attacks,
                                n_examples=self.n_examples, seed=self.seed, out_dir=out_dir,
                                batch_size=self.batch_size, passes=self.passes,
                                overrides={protocol: self.overrides} if self.overrides else {},
                                data_root=self.data_root)


def _surrogate_text(surrogate: nn.Module | None) -> str | None:
    """How the entry describes the surrogate: its ``about["architecture"]`` or class, and its state_dict hash."""
    if surrogate is None:
        return None
    about = getattr(surrogate, "about", None)
    arch = about.get("architecture") if isinstance(about, dict) else None
    return f"{arch or type(surrogate).__name__}, state_dict sha256 {state_sha256(surrogate.state_dict())[:12]}"


def _model_info(model: nn.Module, name: str, arch: str, randomness: dict, samples: int,
                surrogate: nn.Module | None, about: Mapping[str, Any], opts: RunOptions) -> ModelInfo:
    """The entry's checkpoint record of a user model."""
    settings = {"architecture": arch, "randomness": randomness, "samples": samples, "factory": opts.factory,
                "surrogate": None if surrogate is None else {"description": _surrogate_text(surrogate),
                                                             "factory": opts.surrogate_factory,
                                                             "sha256": state_sha256(surrogate.state_dict())}}
    return ModelInfo(name=name, sha256=state_sha256(model.state_dict()), source="user", file=opts.factory or "",
                     config=settings, training=dict(about.get("training", {})))


def _model_note(name: str, arch: str, randomness: dict, samples: int) -> str:
    how = ("declared " + ("random" if randomness["declared"] else "deterministic")
           if randomness["declared"] is not None else "not declared")
    return (f"Model from outside the plugin: {name} ({arch}); randomness {how}, measured {randomness['measured']} by "
            f"repeated passes on the same images; each prediction averages {samples} pass(es).")


def evaluate_model(model: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                   protocol: str = "adaptive", *, name: str, stochastic: bool | None = None, samples: int = 1,
                   surrogate: nn.Module | None = None, about: Mapping[str, Any] | None = None,
                   **options: Any) -> dict:
    """Evaluate ``model`` (images in [0, 1] -> class logits) with ``protocol`` and return its leaderboard entry.

    x, y: the test images and labels (default: the first images of the data set's test split). name: the entry's
    model name (lower case, digits, _). stochastic: declare the model random or deterministic (default: its
    ``stochastic`` attribute, else measured by repeated passes; both recorded). samples: passes averaged per
    prediction (1: the model's own output). surrogate: a deterministic stand-in (e.g. the model with its
    randomness switched off) for the transfer and BPDA attacks, which are skipped without one. about: the entry's
    ``name`` (paper title), ``authors``, ``link``, ``venue``, ``architecture``, ``additional_data``, ``training``
    (default: the model's ``about`` attribute). options: :class:`RunOptions` (``n_examples``, ``seed``,
    ``out_dir``, ...; TypeError for an unknown one).
    """
    opts = RunOptions(**options)
    _check_name(name)
    about = check_about(about if about is not None else getattr(model, "about", None))
    if protocol not in USER_PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not available for a model from outside the plugin; expected one "
                         f"of {', '.join(USER_PROTOCOLS)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    with tempfile.TemporaryDirectory(prefix="lwta-evaluate-") as tmp:
        config = opts.config(name, protocol, opts.out_dir if opts.out_dir is not None else tmp)
        check_writable_directory(config.out_dir, "output directory (out_dir, --out-dir)")
        base = config.resolved_protocols()[0]
        need = max(a.start + a.n_examples for a in base.attacks if a.kind != "random_score")
        data = _data(x, y, opts.dataset, need, opts.data_root)
        wrapped, randomness = wrap_model(model, data.x, stochastic, samples, surrogate)
        arch = about.get("architecture") or type(model).__name__
        user = resolve(user_protocol(base, _surrogate_text(surrogate), samples,
                                     _model_note(name, arch, randomness, samples)), available=len(data.x))
        info = _model_info(model, name, arch, randomness, samples, surrogate, about, opts)
        command = opts.command or python_command(name, protocol, samples=samples if samples != 1 else None,
                                                 n_examples=opts.n_examples, seed=opts.seed or None,
                                                 passes=opts.passes)
        run = UserRun(wrapped, info, data, user, config, user_attack_factory(opts.attack_factory or build_attack_for),
                      opts.force, command, about)
        run.check_replace()
        run.check_attacks()
        status = run.advance(None, opts.resume, None, opts.progress, opts.log or (lambda _m: None))
        if status["status"] not in ("up-to-date", "written"):
            raise RuntimeError(f"evaluation of {name} / {protocol} did not finish: {status}")
        return json.loads(Path(status["path"]).read_text(encoding="utf-8"))
