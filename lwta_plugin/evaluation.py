"""Evaluation runner: ``lwta evaluate``. Runs a protocol (:mod:`lwta_plugin.protocols`) on a model and writes
its leaderboard entry (:mod:`lwta_plugin.leaderboard`).

Work units, seeds, resume, shards
---------------------------------
A protocol is split into tasks ``(attack, batch)``: batch ``b`` of an attack holds test images
``[b * batch_size, (b + 1) * batch_size)`` (of the first ``n_examples``). Before a task runs, every RNG (torch,
numpy, random) is seeded with ``stable_seed(seed, model, protocol, attack, b)`` (sha256 of those values), and the
scoring of its adversarial images with another derived seed. The attack object is built afresh for every task,
after seeding. No RNG or attack state is carried from one task to the next, so a task's result does not depend
on which tasks ran before it, in which process, or on which shard.

Each finished task is written atomically to the state directory beside the entry,
``.<model>__<protocol>.partial/<attack>/<b>.json``, with ``config.json`` holding the run's configuration (model,
checkpoint sha256, data hash, resolved protocol, seed, versions). A rerun with ``resume=True`` (the default)
skips finished tasks; a configuration mismatch is an error (delete the directory or pass ``resume=False``).
``shard=(i, N)`` runs every task whose index in the protocol's task list is ``i`` modulo ``N``. Shards may run
at the same time (they write disjoint files; state checks and assembly hold an flock on the entry's directory)
or on different machines (copy the state directories together, then ``--merge``).
When every task is present, the entry is assembled (the last shard does it automatically; ``merge=True``,
``lwta evaluate --merge``, only assembles) and the state directory is removed. The result is byte-identical to an
uninterrupted, unsharded run on the same software and hardware (floating-point results can differ across torch
builds, CPU types and thread counts).

Time-dependent data (seconds per attack, dates, threads) never enters the entry; it goes to
``<model>__<protocol>.timing.json`` beside it. ``--plots`` also writes :func:`lwta_plugin.plots.make_plots` into
``<dataset>/<threat_model>/plots/``.

Before the first batch runs, every model is resolved and loaded and the data set is read, so an unknown name or
missing data fails at once rather than after hours of work on the other models.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import __version__
from .entries import FORMAT, entry_path, pct, validate_entry
from .io import atomic_write_json, directory_lock, dumps_json, sha256_file
from .models import describe_architecture
from .paper import PAPER_AUTHORS, PAPER_LINK, PAPER_NAME, PAPER_NOTES, PAPER_VENUE, paper_rows, paper_value
from .protocols import EPS, EPS_TEXT, PROTOCOLS, AttackSpec, Protocol, get_protocol, resolve
from .statistics import (
    correct_counts,
    decode_counts,
    encode_counts,
    low_confidence_counts,
    median,
    round_stat,
    seed_everything,
    stable_seed,
    summarize_counts,
    worst_case,
)

if TYPE_CHECKING:
    from .models import LWTANet

CONFIG_FORMAT = "lwta-plugin/eval-config-1"
STATE_FORMAT = "lwta-plugin/eval-state-1"
LINF_TOLERANCE = 1e-5  # float slack when checking that a bounded attack stayed inside the eps-ball

BatchHook = Callable[[str, int], None]


class EvaluationError(RuntimeError):
    """An evaluation cannot go on (a broken attack, a vanished state directory, ...); the message says why."""


class IncompleteRunError(EvaluationError):
    """The state directory does not (yet) hold every task of the run."""


# ---------------------------------------------------------------------------------------------------------------
# models and data


@dataclass
class ModelInfo:
    """Where the evaluated model came from (recorded in the entry)."""

    name: str
    sha256: str
    source: str  # "store" | "model_dir" | "explicit"
    file: str
    config: dict
    training: dict = field(default_factory=dict)


def _training_info(meta: dict) -> dict:
    tc = meta.get("train_config") or {}
    return {k: v for k, v in {"epochs": tc.get("epochs"), "seed": tc.get("seed"), "fgsm_eps": tc.get("fgsm_eps"),
                              "command": (tc.get("extra") or {}).get("command")}.items() if v is not None}


def checkpoint_model_name(path: str | os.PathLike) -> str:
    """The registry name of the model stored in a checkpoint (read and checked, not built)."""
    from .checkpoint import read_checkpoint
    from .models import ModelConfig

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
    from .checkpoint import read_checkpoint
    from .zoo import load_model, resolve_checkpoint

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


def load_test_data(dataset: str, n: int, data_root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images (``lwta_plugin.data.load_tensors``)."""
    from .data import load_tensors

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


# ---------------------------------------------------------------------------------------------------------------
# one task


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return _jsonable(v.item())
    return repr(v)


def build_attack_for(spec: AttackSpec, model: LWTANet) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``lwta_plugin.attacks.build_attack(spec.attack, model, **spec.params)`` with a clear error."""
    try:
        from .attacks import build_attack
    except ImportError as e:
        raise EvaluationError(f"attack {spec.key!r} needs lwta_plugin.attacks.build_attack, which is not "
                              f"available ({e})") from None
    try:
        return build_attack(spec.attack, model, **spec.params)
    except TypeError as e:
        raise ValueError(f"cannot build attack {spec.attack!r} with parameters {spec.params}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# a run: one model, one protocol


class Run:
    """One model evaluated with one (resolved) protocol; owns the state directory and the entry."""

    def __init__(self, model, info: ModelInfo, x: torch.Tensor, y: torch.Tensor, protocol: Protocol, seed: int,
                 dataset: str, threat_model: str = "Linf", out_dir: str | os.PathLike = "leaderboard",
                 command: str | None = None, data_source: str | None = None):
        self.model, self.info, self.x, self.y = model, info, x, y
        self.protocol, self.seed, self.dataset, self.threat_model = protocol, seed, dataset, threat_model
        self.path = entry_path(out_dir, dataset, threat_model, info.name, protocol.name)
        self.state_dir = self.path.parent / f".{self.path.stem}.partial"
        self.timing_path = self.path.with_suffix(".timing.json")
        self.command = command or canonical_command(info.name, dataset, threat_model, protocol.name, seed)
        n_data = max((a.n_examples for a in protocol.attacks if a.kind != "random_score"), default=0)
        if n_data > len(x):
            raise ValueError(f"protocol needs {n_data} test images, only {len(x)} given")
        self.data = {"split": "test", "source": data_source or f"lwta_plugin.data:{dataset}", "first_n": n_data,
                     "sha256": tensor_sha256(x[:n_data], y[:n_data])}
        self.config = {"format": STATE_FORMAT, "model": info.name, "checkpoint_sha256": info.sha256,
                       "dataset": dataset, "threat_model": threat_model, "seed": seed, "data": self.data,
                       "protocol": protocol.to_dict(), "versions": versions()}
        self.config_sha256 = hashlib.sha256(dumps_json(self.config).encode()).hexdigest()

    # tasks -------------------------------------------------------------------------------------------------------
    def tasks(self) -> list[tuple[AttackSpec, int]]:
        """Every ``(attack, batch)`` of the protocol, in the fixed order that shards split by index."""
        return [(spec, b) for spec in self.protocol.attacks
                for b in range(math.ceil(spec.n_examples / spec.batch_size))]

    def task_path(self, spec: AttackSpec, b: int) -> Path:
        """Where the finished task's record is stored."""
        return self.state_dir / spec.key / f"{b:05d}.json"

    def missing(self) -> list[tuple[AttackSpec, int]]:
        """Tasks without a record yet."""
        return [(s, b) for s, b in self.tasks() if not self.task_path(s, b).is_file()]

    def up_to_date(self) -> bool:
        """Whether the entry exists and was written with this run's configuration."""
        if not self.path.is_file():
            return False
        try:
            return json.loads(self.path.read_text(encoding="utf-8")).get("config_sha256") == self.config_sha256
        except ValueError:
            return False

    def prepare_state(self, resume: bool) -> None:
        """Create the state directory, or check that the existing one belongs to this configuration."""
        cfg_path = self.state_dir / "config.json"
        if not resume and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        if cfg_path.is_file():
            old = json.loads(cfg_path.read_text(encoding="utf-8"))
            if old != self.config:
                diff = sorted(k for k in set(old) | set(self.config) if old.get(k) != self.config.get(k))
                raise ValueError(f"{self.state_dir} holds partial results of a different configuration (differs in "
                                 f"{', '.join(diff)}); delete it or rerun with --no-resume to start over")
        else:
            atomic_write_json(cfg_path, self.config)

    def run_task(self, spec: AttackSpec, b: int) -> dict:
        """Run one batch of one attack (seeded from its identity only) and return its record.

        The attack is built afresh for every batch, after seeding, so no state (RNG, generators, caches) can
        flow from one batch to the next; scoring always runs in eval mode with the protocol's sampling setting,
        whatever the attack did to the model's settings."""
        lo, hi = b * spec.batch_size, min((b + 1) * spec.batch_size, spec.n_examples)
        scoring = self.protocol.scoring
        ident = (self.seed, self.info.name, self.protocol.name, spec.key, b)
        t0 = time.perf_counter()
        record: dict[str, Any] = {"attack": spec.key, "batch": b, "start": lo, "stop": hi}
        self.model.eval()
        if spec.kind == "random_score":
            g = torch.Generator().manual_seed(stable_seed(*ident, "noise"))
            xa = torch.rand((hi - lo, *self.x.shape[1:]), generator=g, dtype=self.x.dtype)
            yb = None
        else:
            xb, yb = self.x[lo:hi], self.y[lo:hi]
            if spec.kind == "clean":
                xa = xb
            else:
                with self.model.sampling(scoring.sampling):
                    seed_everything(stable_seed(*ident, "attack"))
                    attack = build_attack_for(spec, self.model)
                    xa = self._attack(spec, attack, xb, yb)
                record["hyperparameters"] = _jsonable(getattr(attack, "hparams", spec.params))
                d = (xa - xb).flatten(1)
                record["linf"] = [round_stat(v) for v in d.abs().amax(1).tolist()]
                record["l2"] = [round_stat(v) for v in d.norm(dim=1).tolist()]
        self.model.eval()  # an attack may have left the model in training mode
        with self.model.sampling(scoring.sampling):
            seed_everything(stable_seed(*ident, "score"))
            if yb is None:
                counts = low_confidence_counts(self.model, xa, scoring.passes, scoring.samples,
                                               scoring.random_threshold)
            else:
                counts = correct_counts(self.model, xa, yb, scoring.passes, scoring.samples)
        record["counts"] = encode_counts(counts, scoring.passes)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return record

    def _attack(self, spec: AttackSpec, attack: Callable, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with self.model.using(samples=spec.attack_samples, output="logits"):
            xa = attack(xb.clone(), yb.clone())
        if not isinstance(xa, torch.Tensor) or xa.shape != xb.shape:
            raise EvaluationError(f"attack {spec.key!r} returned {getattr(xa, 'shape', type(xa))}, expected "
                                  f"{tuple(xb.shape)}")
        xa = xa.detach().to(xb.dtype)
        if not torch.isfinite(xa).all() or xa.min() < -LINF_TOLERANCE or xa.max() > 1 + LINF_TOLERANCE:
            raise EvaluationError(f"attack {spec.key!r} returned images outside [0, 1] or non-finite values")
        xa = xa.clamp(0, 1)
        eps = spec.params.get("eps")
        if spec.bounded and eps is not None:
            worst = (xa - xb).abs().amax().item()
            if worst > eps + LINF_TOLERANCE:
                raise EvaluationError(f"bounded attack {spec.key!r} left the L-inf ball: perturbation {worst:.6g} > "
                                      f"eps {eps}; its results would be invalid")
        return xa

    def execute(self, shard: tuple[int, int] | None = None, on_batch: BatchHook | None = None,
                progress: bool = True) -> int:
        """Run this process's share of the unfinished tasks; returns how many ran."""
        todo = [(k, s, b) for k, (s, b) in enumerate(self.tasks())
                if (shard is None or k % shard[1] == shard[0]) and not self.task_path(s, b).is_file()]
        bar = None
        if progress and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"{self.info.name} {self.protocol.name}", unit="batch", file=sys.stderr)
        try:
            for _, spec, b in todo:
                if bar is not None:
                    bar.set_postfix_str(spec.key)
                record = self.run_task(spec, b)
                atomic_write_json(self.task_path(spec, b), record)
                if bar is not None:
                    bar.update()
                if on_batch is not None:
                    on_batch(spec.key, b)
        finally:
            if bar is not None:
                bar.close()
        return len(todo)

    # assembly ----------------------------------------------------------------------------------------------------
    def load_records(self) -> dict[str, list[dict]]:
        """Every task's record by attack key, in batch order; IncompleteRunError if any is missing."""
        missing = self.missing()
        if missing:
            listed = ", ".join(f"{s.key}/{b}" for s, b in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise IncompleteRunError(f"{len(missing)} of {len(self.tasks())} batches of {self.info.name} / "
                                     f"{self.protocol.name} are not finished yet ({listed}); run the remaining "
                                     f"shards (state: {self.state_dir})")
        records: dict[str, list[dict]] = {}
        for spec, b in self.tasks():
            path = self.task_path(spec, b)
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun to recompute that batch") \
                    from None
            if not isinstance(rec, dict) or (rec.get("attack"), rec.get("batch")) != (spec.key, b):
                raise ValueError(f"{self.task_path(spec, b)} does not hold batch {b} of {spec.key!r}")
            records.setdefault(spec.key, []).append(rec)
        return records

    def assemble(self) -> tuple[dict, dict]:
        """Build the entry and the timing record from the finished tasks."""
        records = self.load_records()
        passes, S = self.protocol.scoring.passes, self.protocol.scoring.samples
        results, timing = {}, {}
        for spec in self.protocol.attacks:
            recs = records[spec.key]
            counts = "".join(r["counts"] for r in recs)
            if len(counts) != spec.n_examples:
                raise ValueError(f"{spec.key}: {len(counts)} results for {spec.n_examples} images")
            res = {"attack": spec.attack or spec.kind, "kind": spec.kind, "bounded": spec.bounded,
                   "description": spec.description,
                   "metric": ("fraction_max_prob_below_" + f"{self.protocol.scoring.random_threshold:g}"
                              if spec.kind == "random_score" else "accuracy"),
                   **summarize_counts(decode_counts(counts), passes),
                   "n_examples": spec.n_examples, "passes": passes, "samples": S,
                   "attack_samples": spec.attack_samples, "eot_samples": spec.eot_samples,
                   "batch_size": spec.batch_size, "hyperparameters": _jsonable(spec.params),
                   "per_example_correct": counts}
            if spec.kind == "adversarial":
                hp = [r.get("hyperparameters") for r in recs]
                if any(h != hp[0] for h in hp):
                    raise ValueError(f"{spec.key}: batches report different hyperparameters")
                res["hyperparameters"] = hp[0]
                linf = sorted(v for r in recs for v in r["linf"])
                l2 = sorted(v for r in recs for v in r["l2"])
                res["perturbation"] = {"linf_max": linf[-1], "linf_median": median(linf), "l2_median": median(l2),
                                       "l2_mean": round_stat(math.fsum(l2) / len(l2))}
            results[spec.key] = res
            timing[spec.key] = round(sum(r["seconds"] for r in recs), 3)
        entry = self._entry(results)
        finished = max(r["finished"] for recs in records.values() for r in recs)
        started = min(r["finished"] for recs in records.values() for r in recs)
        timing_record = {"model": self.info.name, "protocol": self.protocol.name, "seconds": timing,
                         "total_seconds": round(sum(timing.values()), 3), "first_batch_finished": started,
                         "last_batch_finished": finished, "torch_threads": torch.get_num_threads(),
                         "config_sha256": self.config_sha256}
        return entry, timing_record

    def _entry(self, results: dict[str, dict]) -> dict:
        p = self.protocol
        passes = p.scoring.passes
        worst = worst_case(results, passes)
        # AutoAttack 'rand' = clean + APGD-CE/DLR with EOT; not for smoke runs (tiny budgets, not an estimate)
        aa = worst_case({k: v for k, v in results.items() if k in ("clean", "apgd_rand")}, passes) \
            if "apgd_rand" in results and not p.smoke else None
        with self.model.sampling(p.scoring.sampling):
            stochastic = self.model.stochastic
        fgsm = bool(self.info.training.get("fgsm_eps"))
        rows = paper_rows(self.info.name, self.dataset, fgsm)
        entry: dict[str, Any] = {
            "format": FORMAT,
            # RobustBench model_info fields
            "link": PAPER_LINK, "name": PAPER_NAME, "authors": PAPER_AUTHORS, "additional_data": False,
            "number_forward_passes": p.scoring.samples if stochastic else 1,
            "dataset": self.dataset, "venue": PAPER_VENUE, "architecture": describe_architecture(self.info.config),
            "eps": EPS_TEXT[self.dataset], "clean_acc": pct(results["clean"]["mean"]),
            # ours
            "model": self.info.name, "threat_model": self.threat_model, "seed": self.seed, "data": self.data,
            "protocol": {k: v for k, v in p.to_dict().items() if k != "attacks"},
            "attacks": results, "worst_case": worst,
            "paper": {"rows": rows, "notes": list(PAPER_NOTES)},
            "checkpoint": {"sha256": self.info.sha256, "source": self.info.source, "file": self.info.file,
                           "config": self.info.config, "training": self.info.training},
            "versions": versions(), "command": self.command, "config_sha256": self.config_sha256,
        }
        if rows:
            entry["reported"] = pct(paper_value(rows[0]["values"]["PGD"]))
        if aa is not None:
            entry["autoattack_acc"] = pct(aa["mean"])
        entry["indicators"] = compute_indicators(results, p)
        finalize_entry(entry)
        return entry

    def write(self) -> Path:
        """Assemble, validate and atomically write the entry and timing file; remove the state directory."""
        entry, timing = self.assemble()
        validate_entry(entry)
        atomic_write_json(self.path, entry)
        atomic_write_json(self.timing_path, timing)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return self.path


def compute_indicators(results: dict[str, dict], protocol: Protocol) -> list[dict]:
    """Attack-failure indicators of the finished results (:func:`lwta_plugin.attacks.indicators.from_results`:
    unbounded attacks below ~100 % success, accuracy rising with eps, black-box or one-step attacks beating the
    iterative white-box ones, budgets that still help), each scored with the protocol's passes."""
    from .attacks.indicators import from_results

    return from_results(results, passes=protocol.scoring.passes)


def finalize_entry(entry: dict) -> None:
    """Derive ``unreliable``, ``external`` and ``footnote`` from the rest of the entry (also after combining)."""
    p = entry["protocol"]
    fired = [i for i in entry["indicators"] if i["fired"]]
    entry["unreliable"] = bool(fired)
    combined = entry.get("worst_case_all_protocols")
    worst = combined or entry["worst_case"]
    if p["adaptive"]:
        entry["external"] = pct(worst["mean"])
    else:
        entry.pop("external", None)
    parts = []
    if p["smoke"]:
        parts.append("SMOKE TEST (tiny attack budgets): not a robustness estimate.")
    parts.append(f"Random model: each prediction averages {entry['protocol']['scoring']['samples']} stochastic passes; "
                 f"accuracies are means over {p['scoring']['passes']} predictions per image with 95% CIs. "
                 f"Protocol '{p['name']}'.")
    which = ", ".join(worst["attacks"])
    if p["adaptive"]:
        parts.append(f"external = per-image worst case over {which} ({worst['n_examples']} images).")
    if "autoattack_acc" in entry:
        aa = entry["attacks"]["apgd_rand"]
        parts.append(f"autoattack_acc = AutoAttack version 'rand' (APGD-CE + APGD-DLR, EOT {aa['eot_samples']}, "
                     f"{aa['n_examples']} images), scored by averaged predictions, not RobustBench's standard "
                     "AutoAttack.")
    if "reported" in entry:
        r = entry["paper"]["rows"][0]
        parts.append(f"reported = the paper's PGD accuracy ({r['table']}, {(r['group'] + ' ') if r['group'] else ''}"
                     f"{r['row']}), measured without EOT.")
    if fired:
        parts.append("Attack-failure indicators fired: " + "; ".join(f"{i['name']} ({i['detail']})" for i in fired)
                     + ".")
    entry["footnote"] = " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# combining protocols

COMBINE_INTO = "adaptive"
COMBINE_FROM = ("paper", "paper-concrete", "autoattack-rand")


def combine_protocols(entry: dict, siblings: Iterable[dict]) -> bool:
    """Set ``worst_case_all_protocols`` of an ``adaptive`` entry from sibling entries of the same model and data
    (``paper``, ``paper-concrete``, ``autoattack-rand``) with the same number of passes; returns whether the entry changed."""
    if entry["protocol"]["name"] != COMBINE_INTO:
        return False
    before = dumps_json(entry)
    passes = entry["protocol"]["scoring"]["passes"]
    parts = {COMBINE_INTO: entry}
    for s in siblings:
        same = (s["model"], s["dataset"], s["threat_model"], s["data"]["sha256"], s["checkpoint"]["sha256"],
                s["protocol"]["scoring"]["passes"]) == (entry["model"], entry["dataset"], entry["threat_model"],
                                                        entry["data"]["sha256"], entry["checkpoint"]["sha256"], passes)
        if s["protocol"]["name"] in COMBINE_FROM and same:
            parts[s["protocol"]["name"]] = s
    entry.pop("worst_case_all_protocols", None)
    if len(parts) > 1:
        results = {f"{name}/{k}": r for name in sorted(parts) for k, r in parts[name]["attacks"].items()}
        combined = worst_case(results, passes)
        combined["sources"] = {name: parts[name]["config_sha256"] for name in sorted(parts)}
        entry["worst_case_all_protocols"] = combined
    finalize_entry(entry)
    return dumps_json(entry) != before


def refresh_combined(path: Path) -> bool:
    """Recompute the combined worst case of the ``adaptive`` entry beside ``path``'s model; True if rewritten."""
    model = path.name.split("__")[0]
    target = path.parent / f"{model}__{COMBINE_INTO}.json"
    if not target.is_file():
        return False
    entry = json.loads(target.read_text(encoding="utf-8"))
    siblings = [json.loads((path.parent / f"{model}__{p}.json").read_text(encoding="utf-8"))
                for p in COMBINE_FROM if (path.parent / f"{model}__{p}.json").is_file()]
    if combine_protocols(entry, siblings):
        validate_entry(entry)
        atomic_write_json(target, entry)
        return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# public API


def canonical_command(model: str, dataset: str, threat_model: str, protocol: str, seed: int,
                      n_examples: int | None = None, checkpoint: str | None = None, batch_size: int | None = None,
                      passes: int | None = None, config: str | None = None, extra: Sequence[str] = ()) -> str:
    """The command that reproduces an entry (without shard/merge/progress options, which do not change it).

    With ``config``: ``lwta evaluate --config FILE --model M --protocol P`` plus ``extra`` (the command line's
    own overrides of the config, e.g. ``--n-examples 20``)."""
    if config is not None:
        return shlex.join(["lwta", "evaluate", "--config", str(config), "--model", model, "--protocol", protocol,
                           *extra])
    args = ["lwta", "evaluate", "--model", model, "--dataset", dataset, "--protocol", protocol, "--seed", str(seed)]
    if threat_model != "Linf":
        args += ["--threat-model", threat_model]
    if n_examples is not None:
        args += ["--n-examples", str(n_examples)]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if passes is not None:
        args += ["--passes", str(passes)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    return shlex.join(args)


def _assemble(run: Run, log: Callable[[str], None]) -> Path:
    path = run.write()
    combines = run.protocol.name == COMBINE_INTO or run.protocol.name in COMBINE_FROM
    if combines and refresh_combined(path):
        log(f"updated the combined worst case of {path.parent / (run.info.name + '__' + COMBINE_INTO)}.json")
    log(f"wrote {path}")
    return path


def evaluate(models: str | Sequence[str], dataset: str = "mnist", protocol: str | Sequence[str] = "paper",
             n_examples: int | None = None, seed: int = 0, out_dir: str | os.PathLike = "leaderboard",
             shard: tuple[int, int] | str | None = None, resume: bool = True, progress: bool = True, *,
             threat_model: str = "Linf", checkpoints: dict[str, str] | None = None,
             model_dir: str | os.PathLike | None = None, batch_size: int | None = None, passes: int | None = None,
             overrides: dict[str, dict[str, dict]] | None = None, data: tuple[torch.Tensor, torch.Tensor] | None = None,
             data_root: str | None = None, merge: bool = False, plots: bool = False,
             config_file: str | None = None, command_extra: Sequence[str] = (), on_batch: BatchHook | None = None,
             log: Callable[[str], None] | None = print) -> list[dict]:
    """Evaluate ``models`` with one or more protocols and write their leaderboard entries.

    models: zoo names (or names with an explicit checkpoint in ``checkpoints`` = {name: path}).
    protocol: a name or names from :data:`lwta_plugin.protocols.PROTOCOLS` (``adaptive`` runs last so that its
    combined worst case sees the others). n_examples: cap on every attack's image count. shard: ``(i, N)`` or
    ``"i/N"``. resume: continue from the state directory (False: start over). merge: only assemble finished
    shards. overrides: {protocol: {attack: {"n_examples"|"params"|"batch_size": ...}}}. data: ``(x, y)`` to use
    instead of the data set's test split. plots: also write :func:`lwta_plugin.plots.make_plots` (not in shards
    other than 0). on_batch(attack, batch): called after each finished task (tests use it to simulate a crash).
    Every model, protocol and the data are checked before the first batch runs. Returns one status dict per
    (model, protocol): ``{"model", "protocol", "path", "status": "written" | "up-to-date" | "incomplete",
    "missing": int}``.
    """
    models = [models] if isinstance(models, str) else list(dict.fromkeys(models))
    if not models:
        raise ValueError("no model to evaluate")
    protocols = [protocol] if isinstance(protocol, str) else list(protocol)
    if not protocols:
        raise ValueError(f"no protocol given; expected one or more of {', '.join(PROTOCOLS)}")
    for name in protocols:
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOLS)}")
    protocols = sorted(dict.fromkeys(protocols), key=lambda n: n == COMBINE_INTO)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"shard must be i/N with 0 <= i < N, got {i}/{n}")
        if not resume:
            raise ValueError("resume=False deletes the shared state directory; it cannot be combined with a shard")
    if dataset not in EPS:
        raise ValueError(f"unknown data set {dataset!r}; expected one of {sorted(EPS)}")
    if threat_model != "Linf":
        raise ValueError(f"the evaluation protocols are L-inf attacks; threat model {threat_model!r} has none")
    overrides = dict(overrides or {})
    bad = sorted(set(overrides) - set(PROTOCOLS))
    if bad:
        raise ValueError(f"overrides name unknown protocols {bad}; expected {', '.join(PROTOCOLS)}")
    checkpoints = dict(checkpoints or {})
    log = log or (lambda _msg: None)
    resolved_protocols = [resolve(get_protocol(p, dataset), n_examples, None, batch_size, overrides.get(p), passes)
                          for p in protocols]
    S = resolved_protocols[0].scoring.samples
    # every model and the data first: an unknown name must not surface after hours of work on the others
    loaded = [load_model_for_evaluation(name, dataset, threat_model, S, checkpoints.get(name), model_dir)
              for name in models]
    need = max(a.n_examples for rp in resolved_protocols for a in rp.attacks if a.kind != "random_score")
    if data is not None:
        x_all, y_all = data
        if len(x_all) != len(y_all) or len(x_all) == 0:
            raise ValueError(f"data must be (x, y) with the same non-zero length, got {len(x_all)} and {len(y_all)}")
        source = "custom"
    else:
        x_all, y_all = load_test_data(dataset, need, data_root)
        source = None
    statuses = []
    for name, (model, info) in zip(models, loaded):
        for proto in resolved_protocols:
            proto = resolve(proto, available=len(x_all))
            cmd = canonical_command(name, dataset, threat_model, proto.name, seed, n_examples, checkpoints.get(name),
                                    batch_size, passes, config_file, command_extra)
            run = Run(model, info, x_all, y_all, proto, seed, dataset, threat_model, out_dir, cmd, source)
            status = {"model": name, "protocol": proto.name, "path": str(run.path)}
            lock_dir = run.path.parent
            if merge:
                with directory_lock(lock_dir):
                    if not run.state_dir.is_dir():
                        if run.up_to_date():
                            log(f"{run.path}: up to date (nothing to merge)")
                            statuses.append({**status, "status": "up-to-date", "missing": 0})
                            continue
                        raise FileNotFoundError(f"nothing to merge for {name} / {proto.name}: {run.state_dir} does "
                                                "not exist")
                    run.prepare_state(resume=True)  # checks that the partial results are of this configuration
                    run.load_records()  # raises IncompleteRunError naming the missing batches
                    _assemble(run, log)
                statuses.append({**status, "status": "written", "missing": 0})
                continue
            with directory_lock(lock_dir):
                if resume and run.up_to_date() and not run.state_dir.exists():
                    log(f"{run.path}: up to date")
                    statuses.append({**status, "status": "up-to-date", "missing": 0})
                    continue
                run.prepare_state(resume)
            run.execute(shard, on_batch, progress)
            with directory_lock(lock_dir):
                if not run.state_dir.is_dir():  # another shard finished last and assembled the entry
                    if not run.up_to_date():
                        raise EvaluationError(f"{run.state_dir} disappeared while this process was using it, and "
                                              f"{run.path} is not the finished entry; rerun the command")
                    log(f"{run.path}: written by another shard")
                    statuses.append({**status, "status": "written", "missing": 0})
                    continue
                missing = run.missing()
                if missing:
                    log(f"{name} / {proto.name}: {len(missing)} batches left for other shards (state: "
                        f"{run.state_dir})")
                    statuses.append({**status, "status": "incomplete", "missing": len(missing)})
                    continue
                _assemble(run, log)
            statuses.append({**status, "status": "written", "missing": 0})
        if plots and not merge and (shard is None or shard[0] == 0):
            from .plots import make_plots

            for p in make_plots(model, x_all, y_all, dataset=dataset, out_dir=Path(out_dir) / dataset / threat_model
                                / "plots", name=name, seed=seed, progress=progress):
                log(f"wrote {p}")
    return statuses


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; ValueError with the expected form otherwise."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {text!r}")
    return i, n


# ---------------------------------------------------------------------------------------------------------------
# config files and CLI


CONFIG_KEYS = {"format", "description", "dataset", "threat_model", "seed", "out_dir", "runs"}
RUN_KEYS = {"models", "protocols", "n_examples", "batch_size", "passes", "overrides", "checkpoints", "seed"}


def load_config(path: str | os.PathLike) -> dict:
    """Read an evaluation config (``leaderboard/mnist-smoke.json`` etc.) and check its structure.

    Format: ``{"format": "lwta-plugin/eval-config-1", "description": str, "dataset": "mnist", "seed": 0,
    "out_dir": "leaderboard", "runs": [{"models": [names] | "shipped", "protocols": [...], "n_examples": int,
    "batch_size": int, "passes": int, "overrides": {protocol: {attack: {...}}}, "checkpoints": {name: path},
    "seed": int}]}``; every key but ``format`` and ``runs`` (and ``models`` in a run) is optional. Relative
    checkpoint paths are relative to the working directory."""
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
    if cfg.get("dataset", "mnist") not in EPS:
        raise ValueError(f"{path}: unknown data set {cfg.get('dataset')!r}; expected one of {sorted(EPS)}")
    runs = cfg.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path}: \"runs\" must be a non-empty list")
    for i, run in enumerate(runs):
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
        for key in ("n_examples", "batch_size", "passes", "seed"):
            if key in run and (isinstance(run[key], bool) or not isinstance(run[key], int)):
                raise ValueError(f"{path}: run {i}: \"{key}\" must be an integer")
    return cfg


def _config_models(run: dict, dataset: str) -> list[str]:
    if run["models"] != "shipped":
        return list(run["models"])
    from .zoo import available_models

    names = [e["name"] for e in available_models(dataset)]
    if not names:
        raise ValueError(f"the config asks for the shipped {dataset} models, but the weight store has none; ship "
                         "models with scripts/ship_model.py or list checkpoints in the config")
    return names


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``lwta evaluate``: see :func:`evaluate` and the module docstring."""
    p = subparsers.add_parser("evaluate", help="evaluate models with a protocol and write leaderboard entries",
                              description="Evaluate models with an attack protocol (paper, paper-concrete, adaptive, autoattack-rand, "
                                          "smoke); resumable (rerun the same command after an interruption) and "
                                          "shardable (--shard i/N, then the last shard or --merge assembles). "
                                          "Writes leaderboard/<dataset>/<threat model>/<model>__<protocol>.json.")
    p.add_argument("--model", action="append", default=None, help="zoo name (repeatable)")
    p.add_argument("--checkpoint", action="append", default=None,
                   help="checkpoint file of an unshipped model (repeatable; paired with --model in order, or the "
                        "name is read from the file)")
    p.add_argument("--dataset", default=None, choices=sorted(EPS), help="data set (default mnist)")
    p.add_argument("--threat-model", default=None, choices=["Linf"],
                   help="leaderboard section (default and only choice: Linf; the protocols are L-inf attacks)")
    p.add_argument("--protocol", action="append", default=None, choices=PROTOCOLS, help="repeatable (default paper)")
    p.add_argument("--n-examples", type=int, default=None, help="cap on the number of test images of every attack")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--shard", default=None, help="i/N: run every N-th batch starting at i (merge when all are done)")
    p.add_argument("--merge", action="store_true", help="only assemble finished shards into the entry")
    p.add_argument("--config", default=None,
                   help="JSON config listing runs (e.g. leaderboard/mnist-smoke.json); --model/--protocol then "
                        "select among its runs")
    p.add_argument("--no-resume", action="store_true", help="discard partial results and start over")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch for every attack")
    p.add_argument("--passes", type=int, default=None, help="predictions per image for scoring (protocol default)")
    p.add_argument("--out-dir", default=None, help="leaderboard directory (default leaderboard)")
    p.add_argument("--model-dir", default=None, help="RobustBench-style model directory for unshipped checkpoints")
    p.add_argument("--data-root", default=None, help="data root (default: $LWTA_DATA_ROOT, then the offline copies)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--plots", action="store_true", help="also write the plots (lwta_plugin.plots) next to the results")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_evaluate_command)
    return p


def _pair_checkpoints(models: list[str] | None, ckpts: list[str] | None) -> tuple[list[str], dict[str, str]]:
    if not ckpts:
        if not models:
            raise ValueError("give --model NAME (repeatable), --checkpoint PATH or --config FILE")
        return models, {}
    if models and len(models) != len(ckpts):
        raise ValueError(f"{len(models)} --model but {len(ckpts)} --checkpoint options: give one checkpoint per "
                         "model, in the same order, or only --checkpoint")
    if not models:
        models = [checkpoint_model_name(c) for c in ckpts]
    if len(set(models)) != len(models):
        dup = sorted({m for m in models if models.count(m) > 1})
        raise ValueError(f"several checkpoints of {', '.join(dup)}: an entry is named after its architecture "
                         "(<model>__<protocol>.json), so evaluate them one at a time with separate --out-dir")
    return models, dict(zip(models, ckpts))


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option} must be >= 1, got {value}")


def _evaluate_command(args: argparse.Namespace) -> int:
    _positive(args.n_examples, "--n-examples")
    _positive(args.batch_size, "--batch-size")
    _positive(args.passes, "--passes")
    _positive(args.threads, "--threads")
    if args.shard is not None:
        parse_shard(args.shard)  # a clear error before anything is loaded
    if args.merge and args.shard:
        raise ValueError("--merge assembles every shard's results; do not combine it with --shard")
    if args.threads:
        torch.set_num_threads(args.threads)
    common: dict[str, Any] = {"shard": args.shard, "resume": not args.no_resume, "progress": not args.no_progress,
                              "merge": args.merge, "model_dir": args.model_dir, "data_root": args.data_root,
                              "plots": args.plots}
    statuses = []
    if args.config:
        if args.checkpoint:
            raise ValueError("--checkpoint cannot be combined with --config (list checkpoints in the config's runs)")
        cfg = load_config(args.config)
        dataset = args.dataset or cfg.get("dataset", "mnist")
        extra = []
        for opt, value in (("--dataset", args.dataset), ("--n-examples", args.n_examples), ("--seed", args.seed),
                           ("--batch-size", args.batch_size), ("--passes", args.passes)):
            if value is not None:
                extra += [opt, str(value)]
        selected = []
        for run in cfg["runs"]:
            names = _config_models(run, dataset)
            if args.model:
                names = [n for n in names if n in args.model]
            protos = [p for p in run.get("protocols", ["paper"]) if not args.protocol or p in args.protocol]
            if names and protos:
                selected.append((run, names, protos))
        if not selected:
            raise ValueError(f"no run in {args.config} matches the --model/--protocol selection")
        for run, names, protos in selected:
            statuses += evaluate(names, dataset, protos, args.n_examples or run.get("n_examples"),
                                 args.seed if args.seed is not None else run.get("seed", cfg.get("seed", 0)),
                                 args.out_dir or cfg.get("out_dir", "leaderboard"),
                                 threat_model=args.threat_model or cfg.get("threat_model", "Linf"),
                                 checkpoints=run.get("checkpoints"), batch_size=args.batch_size or run.get("batch_size"),
                                 passes=args.passes or run.get("passes"), overrides=run.get("overrides"),
                                 config_file=args.config, command_extra=extra, **common)
    else:
        models, ckpts = _pair_checkpoints(args.model, args.checkpoint)
        statuses = evaluate(models, args.dataset or "mnist", args.protocol or ["paper"], args.n_examples,
                            args.seed or 0, args.out_dir or "leaderboard", threat_model=args.threat_model or "Linf",
                            checkpoints=ckpts, batch_size=args.batch_size, passes=args.passes, **common)
    incomplete = [s for s in statuses if s["status"] == "incomplete"]
    for s in statuses:
        print(f"{s['status']:>11}  {s['model']} / {s['protocol']}: {s['path']}"
              + (f" ({s['missing']} batches missing)" if s["missing"] else ""))
    done = [json.loads(Path(s["path"]).read_text(encoding="utf-8")) for s in statuses if s["status"] != "incomplete"]
    if done:
        print(summary_table(done))
    return 0 if not incomplete or args.shard else 1


def summary_table(entries: Sequence[dict]) -> str:
    """Plain-text table of finished entries: one row per model and attack, one column per protocol (accuracy % and
    95 % interval, images used), then the worst case and whether the entry is flagged unreliable."""
    protos = list(dict.fromkeys(e["protocol"]["name"] for e in entries))
    by = {(e["model"], e["protocol"]["name"]): e for e in entries}
    rows = [["model", "attack", *protos]]
    for model in dict.fromkeys(e["model"] for e in entries):
        keys = list(dict.fromkeys(k for p in protos if (model, p) in by for k in by[(model, p)]["attacks"]))
        for key in [*keys, "worst case", "unreliable"]:
            cells = []
            for p in protos:
                e = by.get((model, p))
                if e is None:
                    cells.append("")
                elif key == "unreliable":
                    cells.append(", ".join(i["name"] for i in e["indicators"] if i["fired"]) or "no")
                else:
                    r = e["worst_case"] if key == "worst case" else e["attacks"].get(key)
                    cells.append("" if r is None else f"{100 * r['mean']:.1f} [{100 * r['ci_low']:.1f}, "
                                 f"{100 * r['ci_high']:.1f}] n={r['n_examples']}")
            rows.append([model, key, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
