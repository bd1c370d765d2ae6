"""What to evaluate: :class:`EvaluationConfig` (set by the command line, a config file or a Python caller), the
config-file loader, and the command that reproduces an entry."""
from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..protocols import (
    EPS,
    PROTOCOLS,
    Protocol,
    check_cascade,
    check_threat_model,
    get_protocol,
    resolve,
    select_attacks,
)
from ..zoo import available_models

CONFIG_FORMAT = "lwta-plugin/eval-config-1"
# Where entries go unless told otherwise: not the committed leaderboard/, which only the config files that name it
# ("out_dir": "leaderboard") write to.
DEFAULT_OUT_DIR = "runs"
CONFIG_KEYS = {"format", "description", "dataset", "threat_model", "seed", "out_dir", "runs"}
RUN_KEYS = {"models", "protocols", "attacks", "out_dir", "n_examples", "batch_size", "passes", "overrides",
            "checkpoints", "seed", "cascade", "early_exit"}

# options of `lwta evaluate` that, given beside --config, change results: the reproduction command lists them,
# in this order
RECORDED_OVERRIDES = ("dataset", "n_examples", "seed", "batch_size", "passes", "cascade", "early_exit")
SWITCHES = ("cascade", "early_exit")  # on by default; the command line says --no-cascade / --no-early-exit
COMMAND_LINE_KEYS = (*RECORDED_OVERRIDES, "threat_model", "out_dir", "model_dir", "data_root")


SEED_LIMIT = 2**63  # seeds are 0 <= seed < 2**63, as lwta train's (torch.manual_seed takes no more)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and str(value) != ""


def check_seed(value: Any, where: str = "seed") -> None:
    """Raise ValueError unless ``value`` is an integer seed in [0, 2**63)."""
    if not _is_int(value) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{where} must be an integer in [0, 2**63), got {value!r}")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _names(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(dict.fromkeys(value))
    if not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must be names (strings), got {value!r}")
    return names


@dataclass(frozen=True)
class EvaluationConfig:
    """Everything that decides an evaluation's entries: models, data set, protocols and their limits.

    ``models`` and ``protocols`` take a name or a sequence of names (stored as tuples, duplicates dropped).
    ``n_examples`` caps every attack's image count; ``batch_size`` and ``passes`` replace the protocol's;
    ``overrides`` = {protocol: {attack: {"n_examples"|"params"|"batch_size": ...}}}; ``checkpoints`` =
    {model: path} for models that are not in the weight store (or ``model_dir``). ``attacks``: run only these
    attacks (keys) of the protocols (AutoAttack's ``attacks_to_run``; empty: all), e.g. two rungs of the ladder
    on many checkpoints; the entry then holds only those. ``cascade`` / ``early_exit``: False switches the
    protocols' attack cascade / their attacks' early exit off (the adaptive protocol has both). ``config_file`` and
    ``cli_overrides`` (the names of the fields that the command line set over the file) only shape the
    reproduction command (:meth:`command`). Every value is checked when the config is made.
    """

    models: Sequence[str]
    dataset: str = "mnist"
    protocols: Sequence[str] = ("paper",)
    attacks: Sequence[str] = ()
    n_examples: int | None = None
    seed: int = 0
    out_dir: str | os.PathLike[str] = DEFAULT_OUT_DIR
    threat_model: str = "Linf"
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    model_dir: str | os.PathLike[str] | None = None
    batch_size: int | None = None
    passes: int | None = None
    cascade: bool = True
    early_exit: bool = True
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data_root: str | None = None
    config_file: str | None = None
    cli_overrides: Sequence[str] = ()

    def __post_init__(self) -> None:
        # frozen: the normalised values are set once, here
        set_ = object.__setattr__
        set_(self, "models", _names(self.models, "models"))
        set_(self, "protocols", _names(self.protocols, "protocols"))
        set_(self, "attacks", _names(self.attacks, "attacks"))
        set_(self, "checkpoints", dict(self.checkpoints or {}))
        set_(self, "overrides", dict(self.overrides or {}))
        unknown = set(self.cli_overrides) - set(RECORDED_OVERRIDES)
        if unknown:
            raise ValueError(f"cli_overrides names {sorted(unknown)}; allowed: {', '.join(RECORDED_OVERRIDES)}")
        set_(self, "cli_overrides", tuple(k for k in RECORDED_OVERRIDES if k in self.cli_overrides))
        self._check()

    def _check(self) -> None:
        if not self.models:
            raise ValueError("no model to evaluate")
        if not self.protocols:
            raise ValueError(f"no protocol given; expected one or more of {', '.join(PROTOCOLS)}")
        for name in self.protocols:
            if name not in PROTOCOLS:
                raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
        if not isinstance(self.dataset, str) or self.dataset not in EPS:
            raise ValueError(f"unknown data set {self.dataset!r}; expected one of {sorted(EPS)}")
        if self.threat_model != "Linf":
            raise ValueError(f"the evaluation protocols are L-inf attacks; threat model {self.threat_model!r} has "
                             "none")
        self._check_types()
        bad = sorted(set(self.overrides) - set(PROTOCOLS))
        if bad:
            raise ValueError(f"overrides name unknown protocols {bad}; expected {', '.join(PROTOCOLS)}")
        self.resolved_protocols()  # image counts, batch sizes, passes and per-attack overrides

    def _check_types(self) -> None:
        """Numbers, paths and mappings of the right kind (the config file's JSON can hold anything)."""
        check_seed(self.seed)
        for key in SWITCHES:
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}")  # noqa: TRY004 (a bad config value)
        for key in ("n_examples", "batch_size", "passes"):
            value = getattr(self, key)
            if value is not None and not _is_int(value):
                raise ValueError(f"{key} must be an integer, got {value!r}")
        if not _is_path(self.out_dir):
            raise ValueError(f"out_dir must be a directory path (a non-empty string), got {self.out_dir!r}")
        for key in ("model_dir", "data_root", "config_file"):
            value = getattr(self, key)
            if value is not None and not _is_path(value):
                raise ValueError(f"{key} must be a path (a non-empty string), got {value!r}")
        for model, path in self.checkpoints.items():
            if not isinstance(model, str) or not _is_path(path):
                raise ValueError(f"checkpoints must map model names to checkpoint paths, got {model!r}: {path!r}")
        for protocol, per_attack in self.overrides.items():
            if not isinstance(per_attack, Mapping):
                raise ValueError(  # noqa: TRY004 (a bad value in a config, reported like the others)
                    f"overrides[{protocol!r}] must map attack keys to settings, got {per_attack!r}")

    def resolved_protocols(self) -> list[Protocol]:
        """The protocols (in the order given) with this config's limits applied
        (:func:`lwta_plugin.protocols.resolve`)."""
        resolved = [resolve(get_protocol(p, self.dataset), self.n_examples, None, self.batch_size,
                            self.overrides.get(p), self.passes, cascade=self.cascade, early_exit=self.early_exit)
                    for p in self.protocols]
        for protocol in resolved:
            check_threat_model(protocol, EPS[self.dataset])
            check_cascade(protocol)
        if not self.attacks:
            return resolved
        known = {a.key for p in resolved for a in p.attacks}
        unknown = [a for a in self.attacks if a not in known]
        if unknown:
            raise ValueError(f"attacks {unknown} are not in protocol(s) {', '.join(self.protocols)}; they have "
                             f"{', '.join(sorted(known))}")
        selected = [select_attacks(p, self.attacks) for p in resolved]
        return [p for p in selected if p.attacks]

    def command(self, model: str, protocol: str) -> str:
        """The command that reproduces the entry of ``model`` / ``protocol`` (without shard, merge, progress or
        thread options, which do not change it).

        With a config file: ``lwta evaluate --config FILE --model M --protocol P`` plus the command line's own
        overrides of the file (e.g. ``--n-examples 20``)."""
        if self.config_file is not None:
            args = ["--config", str(self.config_file), "--model", model, "--protocol", protocol]
            for key in self.cli_overrides:
                if key in SWITCHES:
                    args += [] if getattr(self, key) else [_option("no_" + key)]
                else:
                    args += [_option(key), str(getattr(self, key))]
            return shlex.join(["lwta", "evaluate", *args])
        args = ["--model", model, "--dataset", self.dataset, "--protocol", protocol, "--seed", str(self.seed)]
        for attack in self.attacks:
            args += ["--attack", attack]
        if self.threat_model != "Linf":
            args += ["--threat-model", self.threat_model]
        for key in ("n_examples", "batch_size", "passes"):
            if getattr(self, key) is not None:
                args += [_option(key), str(getattr(self, key))]
        args += [_option("no_" + key) for key in SWITCHES if not getattr(self, key)]
        if self.checkpoints.get(model) is not None:
            args += ["--checkpoint", str(self.checkpoints[model])]
        return shlex.join(["lwta", "evaluate", *args])


# ---------------------------------------------------------------------------------------------------------------
# shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; ValueError with the expected form otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {text!r}")
    return i, n


def check_shard(shard: tuple[int, int] | str | None) -> tuple[int, int] | None:
    """A shard given as ``"i/N"`` or ``(i, N)``, checked; None stays None (the whole run)."""
    if isinstance(shard, str):
        return parse_shard(shard)
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
        return i, n
    return None


# ---------------------------------------------------------------------------------------------------------------
# config files


def read_config_file(path: str | os.PathLike) -> dict:
    """Read an evaluation config file (``leaderboard/mnist-smoke.json`` etc.) and check its structure.

    Format: ``{"format": "lwta-plugin/eval-config-1", "description": str, "dataset": "mnist", "seed": 0,
    "out_dir": "runs", "runs": [{"models": [names] | "shipped", "protocols": [...], "attacks": [keys],
    "n_examples": int,
    "batch_size": int, "passes": int, "overrides": {protocol: {attack: {...}}}, "checkpoints": {name: path},
    "seed": int, "out_dir": str}]}``; every key but ``format`` and ``runs`` (and ``models`` in a run) is optional; a
    run's ``out_dir`` replaces the file's (e.g. one directory per checkpoint of the same model); without either,
    entries go to :data:`DEFAULT_OUT_DIR`. Relative checkpoint paths are relative to the working directory."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read evaluation config {path}: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT:
        raise ValueError(f"{path} is not an evaluation config (expected \"format\": \"{CONFIG_FORMAT}\")")
    bad = set(cfg) - CONFIG_KEYS
    if bad:
        raise ValueError(f"{path}: unknown keys {sorted(bad)}; allowed: {sorted(CONFIG_KEYS)}")
    dataset = cfg.get("dataset", "mnist")
    if not isinstance(dataset, str) or dataset not in EPS:
        raise ValueError(f"{path}: unknown data set {dataset!r}; expected one of {sorted(EPS)}")
    for key, kind in (("description", "a string"), ("out_dir", "a path (string)")):
        if key in cfg and not (isinstance(cfg[key], str) and (key == "description" or cfg[key])):
            raise ValueError(f"{path}: \"{key}\" must be {kind}, got {cfg[key]!r}")
    if "seed" in cfg:
        check_seed(cfg["seed"], f"{path}: \"seed\"")
    runs = cfg.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: \"runs\" must be a non-empty list")
    for i, run in enumerate(runs):
        _check_run(path, i, run)
    return cfg


def _check_run(path: Path, i: int, run: Any) -> None:
    if not isinstance(run, dict):
        raise ValueError(f"{path}: run {i} must be an object")  # noqa: TRY004 (a bad file, not a bad call)
    bad = set(run) - RUN_KEYS
    if bad:
        raise ValueError(f"{path}: run {i} has unknown keys {sorted(bad)}; allowed: {sorted(RUN_KEYS)}")
    models = run.get("models")
    if not (models == "shipped" or (isinstance(models, list) and models
                                    and all(isinstance(m, str) for m in models))):
        raise ValueError(f"{path}: run {i}: \"models\" must be a non-empty list of names or \"shipped\"")
    protos = run.get("protocols", ["paper"])
    if not isinstance(protos, list) or not protos:
        raise ValueError(f"{path}: run {i}: \"protocols\" must be a non-empty list")
    for p in protos:
        if p not in PROTOCOLS:
            raise ValueError(f"{path}: run {i}: unknown protocol {p!r}; expected one of {', '.join(PROTOCOLS)}")
    attacks = run.get("attacks", [])
    if not (isinstance(attacks, list) and all(isinstance(a, str) for a in attacks)):
        raise ValueError(f"{path}: run {i}: \"attacks\" must be a list of attack keys")
    if not (isinstance(run.get("out_dir", "x"), str) and run.get("out_dir", "x")):
        raise ValueError(f"{path}: run {i}: \"out_dir\" must be a path (string)")
    for key in ("n_examples", "batch_size", "passes"):
        if key in run and not (_is_int(run[key]) and run[key] >= 1):
            raise ValueError(f"{path}: run {i}: \"{key}\" must be an integer >= 1, got {run[key]!r}")
    if "seed" in run:
        check_seed(run["seed"], f"{path}: run {i}: \"seed\"")
    for key in SWITCHES:
        if not isinstance(run.get(key, True), bool):
            raise ValueError(f"{path}: run {i}: \"{key}\" must be true or false, got {run[key]!r}")  # noqa: TRY004
    for key in ("overrides", "checkpoints"):
        if not isinstance(run.get(key, {}), dict):
            raise ValueError(f"{path}: run {i}: \"{key}\" must be an object, got {run[key]!r}")  # noqa: TRY004


def _run_models(run: dict, dataset: str) -> list[str]:
    if run["models"] != "shipped":
        return list(run["models"])
    names = [e["name"] for e in available_models(dataset)]
    if not names:
        raise ValueError(f"the config asks for the shipped {dataset} models, but the weight store has none; ship "
                         "models with scripts/ship_model.py or list checkpoints in the config")
    return names


def load_config(path: str | os.PathLike, *, models: Sequence[str] | None = None,
                protocols: Sequence[str] | None = None, **command_line: Any) -> list[EvaluationConfig]:
    """The evaluations a config file asks for: one :class:`EvaluationConfig` per run of the file that has a model
    in ``models`` and a protocol in ``protocols`` (None: every one), narrowed to those.

    ``command_line``: values of the command line that override the file or add to it (keys
    :data:`COMMAND_LINE_KEYS`; None means not given). ``"models": "shipped"`` lists the weight store's models.
    """
    unknown = sorted(set(command_line) - set(COMMAND_LINE_KEYS))
    if unknown:
        raise TypeError(f"load_config() got unexpected keyword arguments {unknown}")
    given = {k: v for k, v in command_line.items() if v is not None}
    cfg = read_config_file(path)
    file_wide = {"dataset": cfg.get("dataset", "mnist"), "threat_model": cfg.get("threat_model", "Linf"),
                 "out_dir": cfg.get("out_dir", DEFAULT_OUT_DIR)}
    dataset = given.get("dataset", file_wide["dataset"])
    configs = []
    for run in cfg["runs"]:
        names = [n for n in _run_models(run, dataset) if not models or n in models]
        protos = [p for p in run.get("protocols", ["paper"]) if not protocols or p in protocols]
        if not (names and protos):
            continue
        settings = {**file_wide, "out_dir": run.get("out_dir", file_wide["out_dir"]),
                    "seed": run.get("seed", cfg.get("seed", 0)), "n_examples": run.get("n_examples"),
                    "batch_size": run.get("batch_size"), "passes": run.get("passes"),
                    "cascade": run.get("cascade", True), "early_exit": run.get("early_exit", True), **given}
        configs.append(EvaluationConfig(names, protocols=protos, attacks=run.get("attacks", ()),
                                        checkpoints=run.get("checkpoints") or {},
                                        overrides=run.get("overrides") or {}, config_file=str(path),
                                        cli_overrides=[k for k in given if k in RECORDED_OVERRIDES],
                                        **settings))
    if not configs:
        raise ValueError(f"no run in {path} matches the --model/--protocol selection")
    return configs
