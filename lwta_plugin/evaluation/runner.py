"""One model evaluated with one protocol (:class:`ProtocolRun`): its tasks, their seeds, the state directory that
makes it resumable and shardable, and the writing of its entry."""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..attacks import build_attack
from ..entries import entry_path, timing_path, validate_entry
from ..figures import LINF_TOLERANCE, at_threat_eps, effective_eps, threat_eps
from ..io import atomic_write_json, directory_lock, dumps_json, run_lock
from ..models import LWTANet
from ..protocols import AttackSpec, Protocol
from ..statistics import (
    NOT_ATTACKED,
    correct_counts,
    decode_counts,
    encode_counts,
    low_confidence_counts,
    round_stat,
    seed_everything,
    stable_seed,
)
from .assembly import (
    COMBINE_FROM,
    COMBINE_INTO,
    attack_result,
    build_entry,
    cascade_result,
    jsonable,
    refresh_combined,
    timing_record,
)
from .config import EvaluationConfig
from .errors import EntryExistsError, EvaluationError, IncompleteRunError
from .loading import EvaluationData, ModelInfo, tensor_sha256, versions

STATE_FORMAT = "lwta-plugin/eval-state-1"

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
AttackFactory = Callable[[AttackSpec, LWTANet], AttackFn]
BatchHook = Callable[[str, int], None]
Log = Callable[[str], None]


def build_attack_for(spec: AttackSpec, model: LWTANet) -> AttackFn:
    """The default attack factory: ``lwta_plugin.attacks.build_attack(spec.attack, model, **spec.params)`` with a
    clear error."""
    try:
        return build_attack(spec.attack, model, **spec.params)
    except TypeError as e:
        raise ValueError(f"cannot build attack {spec.attack!r} with parameters {spec.params}: {e}") from None


def _path_adversarial(attack: Any, n: int) -> str | None:
    """Which of the ``n`` images the attack met an adversarial point for on its path (its
    ``last_info["path_adversarial"]``), one ``0``/``1`` each; None if it does not say."""
    info = getattr(attack, "last_info", None)
    path = info.get("path_adversarial") if isinstance(info, dict) else None
    if not isinstance(path, torch.Tensor) or path.shape != (n,):
        return None
    return "".join("1" if v else "0" for v in path.bool().tolist())


class ProtocolRun:
    """One model evaluated with one (resolved) protocol; owns the state directory and the entry.

    ``config`` supplies the seed, data set, threat model, output directory and reproduction command;
    ``attack_factory(spec, model)`` builds each task's attack (default :func:`build_attack_for`); ``force``: replace
    a finished entry of another configuration (:meth:`check_replace`)."""

    def __init__(self, model: LWTANet, info: ModelInfo, data: EvaluationData, protocol: Protocol,
                 config: EvaluationConfig, attack_factory: AttackFactory = build_attack_for, force: bool = False):
        self.model, self.info, self.x, self.y = model, info, data.x, data.y
        self.protocol, self.seed, self.attack_factory, self.force = protocol, config.seed, attack_factory, force
        self.path = entry_path(config.out_dir, config.dataset, config.threat_model, info.name, protocol.name)
        self.state_dir = self.path.parent / f".{self.path.stem}.partial"
        self.lock_path = self.path.parent / f".{self.path.stem}.lock"  # held while a process works on the state
        self.timing_path = timing_path(self.path)
        self.command = config.command(info.name, protocol.name)
        self.threat_eps = threat_eps(config.dataset)
        n_data = max((a.start + a.n_examples for a in protocol.attacks if a.kind != "random_score"), default=0)
        if protocol.cascade is not None:
            n_data = max(n_data, protocol.cascade.start + protocol.cascade.n_examples)
        if n_data > len(data.x):
            raise ValueError(f"protocol needs {n_data} test images, only {len(data.x)} given")
        self.data = {"split": "test", "source": data.source, "first_n": n_data,
                     "sha256": tensor_sha256(data.x[:n_data], data.y[:n_data])}
        # what the results depend on: config.json of the state directory, hashed into the entry's config_sha256
        self.state_config = {"format": STATE_FORMAT, "model": info.name, "checkpoint_sha256": info.sha256,
                             "dataset": config.dataset, "threat_model": config.threat_model, "seed": config.seed,
                             "data": self.data, "protocol": protocol.to_dict(), "versions": versions()}
        self.config_sha256 = hashlib.sha256(dumps_json(self.state_config).encode()).hexdigest()

    def status(self, status: str, missing: int = 0) -> dict:
        """The status record :func:`lwta_plugin.evaluation.evaluate` returns for this run."""
        return {"model": self.info.name, "protocol": self.protocol.name, "path": str(self.path), "status": status,
                "missing": missing}

    # tasks -------------------------------------------------------------------------------------------------------
    def tasks(self) -> list[tuple[AttackSpec, int]]:
        """Every ``(attack, batch)`` of the protocol, in the fixed order that shards split by index."""
        return [(spec, b) for spec in self.protocol.attacks
                for b in range(math.ceil(spec.n_examples / spec.batch_size))]

    def task_path(self, spec: AttackSpec, b: int) -> Path:
        """Where the finished task's record is stored."""
        return self.state_dir / spec.key / f"{b:05d}.json"

    def record(self, spec: AttackSpec, b: int, rows: list[int] | None = None) -> dict | None:
        """The finished record of task ``(spec, b)``, or None: none yet, or one that a run of another configuration
        wrote (its ``config_sha256`` differs, e.g. another seed): such a record is never adopted, the task runs
        again and replaces it. ValueError naming the file if it is not a record."""
        path = self.task_path(spec, b)
        if not path.is_file():
            return None
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun to recompute that batch") \
                from None
        if not isinstance(rec, dict):  # a bad file, not a bad call: ValueError like the other bad files
            raise ValueError(f"{path} is not a task record (a JSON object); delete it and rerun to "  # noqa: TRY004
                             "recompute that batch")
        if rec.get("config_sha256") != self.config_sha256:
            return None
        if (rec.get("attack"), rec.get("batch")) != (spec.key, b):
            raise ValueError(f"{path} does not hold batch {b} of {spec.key!r}")
        if rows is not None and rec.get("indices") != rows:
            return None  # a cascade batch of other images (earlier stages were recomputed): run it again
        return rec

    def missing(self) -> list[tuple[AttackSpec, int]]:
        """Tasks without a record of this configuration yet (of the cascade: each unfinished block's next stage;
        the stages after it are not known until it is done)."""
        out = [(s, b) for s, b in self.tasks() if self.record(s, b) is None]
        return out + [(spec, j) for spec, j, _ in self.cascade_plan()[1]]

    def up_to_date(self) -> bool:
        """Whether the entry exists and was written with this run's configuration."""
        if not self.path.is_file():
            return False
        try:
            return json.loads(self.path.read_text(encoding="utf-8")).get("config_sha256") == self.config_sha256
        except ValueError:
            return False

    def check_replace(self) -> None:
        """Raise :class:`EntryExistsError` if the entry file exists and was written with another configuration
        (e.g. fewer images, other attacks, another seed or checkpoint), unless ``force``: a small or different run
        must never silently replace a finished one. The same configuration (a rerun) is never refused."""
        if self.force or not self.path.is_file() or self.up_to_date():
            return
        try:
            old = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        reasons = self._differences(old) if isinstance(old, dict) else ["it is not readable JSON"]
        raise EntryExistsError(
            f"{self.path} already holds a finished entry of another configuration ({'; '.join(reasons)}); not "
            "replacing it. To replace it, rerun with --force (Python: evaluate(..., force=True)); to keep it, write "
            "this run elsewhere with --out-dir (Python: EvaluationConfig(out_dir=...)).")

    def _differences(self, old: dict) -> list[str]:
        """What makes the existing entry ``old`` another configuration than this run's (for the refusal)."""
        old_attacks = old.get("attacks") if isinstance(old.get("attacks"), dict) else {}
        fewer: dict[tuple[int, int], list[str]] = {}
        for spec in self.protocol.attacks:
            n_old = (old_attacks.get(spec.key) or {}).get("n_examples")
            if isinstance(n_old, int) and spec.n_examples < n_old:
                fewer.setdefault((spec.n_examples, n_old), []).append(spec.key)
        reasons = [f"{n} images instead of {n_old} ({', '.join(keys)})" for (n, n_old), keys in fewer.items()]
        dropped = sorted(set(old_attacks) - {s.key for s in self.protocol.attacks})
        if dropped:
            reasons.append(f"this run lacks attacks {', '.join(dropped)}")
        if old.get("seed") != self.seed:
            reasons.append(f"another seed ({old.get('seed')} -> {self.seed})")
        if (old.get("checkpoint") or {}).get("sha256") != self.info.sha256:
            reasons.append("another checkpoint")
        if not fewer and (old.get("data") or {}).get("sha256") != self.data["sha256"]:  # fewer images: of course
            reasons.append("other test images")
        if old.get("versions") != self.state_config["versions"]:
            reasons.append("other library versions")
        return reasons or ["other attack settings (config_sha256 differs)"]

    def prepare_state(self, resume: bool) -> None:
        """Create the state directory, or check that the existing one belongs to this configuration."""
        cfg_path = self.state_dir / "config.json"
        if not resume and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        if cfg_path.is_file():
            try:
                old = json.loads(cfg_path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{cfg_path} is not valid JSON ({e}): the state directory {self.state_dir} is "
                                 "damaged; delete it or rerun with --no-resume to start over") from None
            if not isinstance(old, dict):
                old = {"format": old}
            if old != self.state_config:
                diff = sorted(k for k in set(old) | set(self.state_config) if old.get(k) != self.state_config.get(k))
                raise ValueError(f"{self.state_dir} holds partial results of a different configuration (differs in "
                                 f"{', '.join(diff)}); delete it or rerun with --no-resume to start over")
        else:
            atomic_write_json(cfg_path, self.state_config)

    def check_attacks(self) -> None:
        """Build every attack once before the first batch: hyperparameters that an attack refuses (e.g. a config
        override of its params) or an eps outside the threat model fail now, not hours into the run."""
        for spec in self.protocol.attacks:
            if spec.kind != "adversarial":
                continue
            try:
                attack = self.attack_factory(spec, self.model)
            except ValueError as e:
                raise ValueError(f"protocol {self.protocol.name!r}, attack {spec.key!r}: {e}") from None
            self._linf_limit(spec, jsonable(getattr(attack, "hparams", spec.params)))

    # the cascade -------------------------------------------------------------------------------------------------
    def stage_spec(self, key: str) -> AttackSpec:
        """The attack ``key`` as a cascade stage: its settings, the cascade's key prefix and batch size."""
        chain = self.protocol.cascade
        spec = self.protocol.attack(key)
        return replace(spec, key=f"cascade/{key}", n_examples=chain.n_examples, batch_size=chain.batch_size,
                       start=chain.start)

    def cascade_plan(self) -> tuple[dict[str, list[dict]], list[tuple[AttackSpec, int, list[int]]]]:
        """Where the cascade stands: the finished records of each stage, and each unfinished block's next task.

        The cascade's images are split into blocks of ``batch_size`` (block ``j``: images ``j * batch_size ...``
        from the cascade's start); each block goes through the stages on its own, every stage attacking the
        block's images that no earlier stage broke (selection count 0), so blocks never wait for each other and
        shards split them. A task is ``(stage spec, block, image indices)``."""
        chain = self.protocol.cascade
        if chain is None:
            return {}, []
        done: dict[str, list[dict]] = {self.stage_spec(k).key: [] for k in chain.stages}
        todo = []
        for j in range(math.ceil(chain.n_examples / chain.batch_size)):
            alive = list(range(j * chain.batch_size, min((j + 1) * chain.batch_size, chain.n_examples)))
            for key in chain.stages:
                if not alive:
                    break
                spec = self.stage_spec(key)
                rec = self.record(spec, j, alive)
                if rec is None:
                    todo.append((spec, j, alive))
                    break
                done[spec.key].append(rec)
                broken = {i for i, c in zip(rec["indices"], decode_counts(rec["counts"])) if c == 0}
                alive = [i for i in alive if i not in broken]
        return done, todo

    def _run_cascade(self, shard: tuple[int, int] | None, run: Callable[[AttackSpec, int, list[int] | None], None],
                     announce: Callable[[int], None]) -> None:
        """Run the cascade of this process's blocks (every block for one process, block ``j`` for shard ``j mod
        N``), a stage of every block at a time, until each block is broken or through every stage."""
        while True:
            todo = [(spec, j, rows) for spec, j, rows in self.cascade_plan()[1]
                    if shard is None or j % shard[1] == shard[0]]
            if not todo:
                return
            announce(len(todo))
            for spec, j, rows in todo:
                run(spec, j, rows)

    def clean_sources(self, rows: list[int]) -> tuple[AttackSpec, list[int], list[int]] | None:
        """Where the standalone ``clean`` result holds the cascade images ``rows`` (indices from the cascade's
        start): its spec, the images' positions in it and the batches with them; None if it does not cover them
        all. Its records then give the cascade's clean stage (:meth:`clean_stage_record`) instead of scoring the
        same images a second time."""
        chain = self.protocol.cascade
        spec = next((a for a in self.protocol.attacks if a.key == "clean" and a.kind == "clean"), None)
        if chain is None or spec is None or not rows:
            return None
        where = [chain.start + i - spec.start for i in rows]
        if min(where) < 0 or max(where) >= spec.n_examples:
            return None
        return spec, where, sorted({w // spec.batch_size for w in where})

    def clean_stage_record(self, b: int, rows: list[int]) -> dict | None:
        """The cascade's clean stage of block ``b`` (images ``rows``) taken from the finished standalone clean
        batches (:meth:`clean_sources`): the same predictions and fresh draws of the same images, so the stage
        agrees with the clean result image by image. None if they do not cover the rows or are not finished."""
        found = self.clean_sources(rows)
        if found is None:
            return None
        spec, where, batches = found
        recs = {sb: self.record(spec, sb) for sb in batches}
        fields = ["counts"] + (["fresh"] if self.protocol.scoring.fresh else [])
        if any(r is None or any(f not in r for f in fields) for r in recs.values()):
            return None
        record: dict[str, Any] = {"attack": self.stage_spec("clean").key, "batch": b, "indices": list(rows),
                                  "config_sha256": self.config_sha256, "from": spec.key}
        for f in fields:  # a record's strings start at its first image (position start = batch * batch_size)
            record[f] = "".join(recs[w // spec.batch_size][f][w % spec.batch_size] for w in where)
        record["seconds"] = 0.0
        record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return record

    def run_task(self, spec: AttackSpec, b: int, rows: list[int] | None = None) -> dict:
        """Run one batch of one attack (seeded from its identity only) and return its record; ``rows``: the
        cascade's images of a stage batch (indices from the cascade's start) instead of the spec's slice.

        The attack is built afresh for every batch, after seeding, so no state (RNG, generators, caches) can
        flow from one batch to the next; scoring always runs in eval mode with the attack's sampling setting,
        whatever the attack did to the model's settings. With the scoring's ``fresh``, every point is scored a
        second time on independent draws (the unbiased worst case, :func:`lwta_plugin.statistics.worst_case`)."""
        scoring = self.protocol.scoring
        sampling = spec.sampling or scoring.sampling
        samples = spec.score_samples or scoring.samples
        ident = (self.seed, self.info.name, self.protocol.name, spec.key, b)
        t0 = time.perf_counter()
        record: dict[str, Any] = {"attack": spec.key, "batch": b}
        if rows is None:
            lo, hi = b * spec.batch_size, min((b + 1) * spec.batch_size, spec.n_examples)
            record.update(start=lo, stop=hi)
            where: slice | torch.Tensor = slice(spec.start + lo, spec.start + hi)
        else:
            record["indices"] = list(rows)
            where = torch.tensor(rows, dtype=torch.long) + self.protocol.cascade.start
            lo, hi = 0, len(rows)
        record["config_sha256"] = self.config_sha256
        self.model.eval()
        if spec.kind == "random_score":
            g = torch.Generator().manual_seed(stable_seed(*ident, "noise"))
            xa = torch.rand((hi - lo, *self.x.shape[1:]), generator=g, dtype=self.x.dtype)
            yb = None
        else:
            xb, yb = self.x[where], self.y[where]
            xa = xb if spec.kind == "clean" else self._adversarial(spec, xb, yb, ident, record, sampling)
        self.model.eval()  # an attack may have left the model in training mode
        with self.model.sampling(sampling):
            seed_everything(stable_seed(*ident, "score"))
            if yb is None:
                counts = low_confidence_counts(self.model, xa, scoring.passes, samples, scoring.random_threshold)
            else:
                counts = correct_counts(self.model, xa, yb, scoring.passes, samples)
                if scoring.fresh:
                    seed_everything(stable_seed(*ident, "fresh"))
                    record["fresh"] = self._fresh(xa, yb, where, samples)
        record["counts"] = encode_counts(counts, scoring.passes)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return record

    def _fresh(self, xa: torch.Tensor, yb: torch.Tensor, where: slice | torch.Tensor, samples: int) -> str:
        """The points' counts on fresh draws, for the worst case: only for the images it covers (the cascade's;
        every image without one), :data:`~lwta_plugin.statistics.NOT_ATTACKED` for the others, whose fresh scoring
        nothing would read (e.g. clean accuracy on 10,000 images beside a 1,000-image cascade)."""
        passes = self.protocol.scoring.passes
        index = torch.arange(len(self.x))[where]
        chain = self.protocol.cascade
        keep = torch.ones(len(index), dtype=torch.bool) if chain is None else \
            (index >= chain.start) & (index < chain.start + chain.n_examples)
        out = [NOT_ATTACKED] * len(index)
        if keep.any():
            counts = encode_counts(correct_counts(self.model, xa[keep], yb[keep], passes, samples), passes)
            for i, c in zip(keep.nonzero().squeeze(1).tolist(), counts):
                out[i] = c
        return "".join(out)

    def _adversarial(self, spec: AttackSpec, xb: torch.Tensor, yb: torch.Tensor, ident: tuple,
                     record: dict[str, Any], sampling: str) -> torch.Tensor:
        """The attack's images for one batch (run under ``sampling``); its hyperparameters and perturbation sizes
        go into ``record``."""
        with self.model.sampling(sampling):
            if spec.labels == "predicted":  # the authors' cleverhans attacks (y=None): one pass on the clean image
                seed_everything(stable_seed(*ident, "labels"))
                with torch.no_grad(), self.model.using(samples=1, output="logits"):
                    target = self.model(xb).argmax(1)
                record["labels_agree"] = int((target == yb).sum())
            else:
                target = yb
            seed_everything(stable_seed(*ident, "attack"))
            attack = self.attack_factory(spec, self.model)
            limit = self._linf_limit(spec, jsonable(getattr(attack, "hparams", spec.params)))
            xa = self._attack(spec, attack, xb, target, limit)
        record["hyperparameters"] = jsonable(getattr(attack, "hparams", spec.params))
        path = _path_adversarial(attack, len(xb))
        if path is not None and spec.labels == "true":  # against predicted labels it says nothing about accuracy
            record["path_adversarial"] = path
        d = (xa - xb).flatten(1)
        record["linf"] = [round_stat(v) for v in d.abs().amax(1).tolist()]
        record["l2"] = [round_stat(v) for v in d.norm(dim=1).tolist()]
        return xa

    def _linf_limit(self, spec: AttackSpec, hparams: dict[str, Any]) -> float | None:
        """How far a bounded attack may move an image: the eps it runs with (it reports it in ``hparams``), never
        beyond the threat model's; None for unbounded attacks."""
        if not spec.bounded:
            return None
        own = effective_eps({"hyperparameters": hparams})
        if own is not None and own > self.threat_eps and not at_threat_eps(own, self.threat_eps):
            raise EvaluationError(f"bounded attack {spec.key!r} runs with eps {own:g}, outside the threat model "
                                  f"(L-inf eps {self.threat_eps:g}); its results would be invalid")
        return self.threat_eps if own is None else own

    def _attack(self, spec: AttackSpec, attack: AttackFn, xb: torch.Tensor, yb: torch.Tensor,
                limit: float | None) -> torch.Tensor:
        with self.model.using(samples=spec.attack_samples, output="logits"):
            xa = attack(xb.clone(), yb.clone())
        if not isinstance(xa, torch.Tensor) or xa.shape != xb.shape:
            raise EvaluationError(f"attack {spec.key!r} returned {getattr(xa, 'shape', type(xa))}, expected "
                                  f"{tuple(xb.shape)}")
        xa = xa.detach().to(xb.dtype)
        if not torch.isfinite(xa).all() or xa.min() < -LINF_TOLERANCE or xa.max() > 1 + LINF_TOLERANCE:
            raise EvaluationError(f"attack {spec.key!r} returned images outside [0, 1] or non-finite values")
        xa = xa.clamp(0, 1)
        if limit is not None:
            worst = (xa - xb).abs().amax().item()
            if worst > limit + LINF_TOLERANCE:
                raise EvaluationError(f"bounded attack {spec.key!r} left the L-inf ball: perturbation {worst:.6g} > "
                                      f"eps {limit:g}; its results would be invalid")
        return xa

    def execute(self, shard: tuple[int, int] | None = None, on_batch: BatchHook | None = None,
                progress: bool = True) -> int:
        """Run this process's share of the unfinished tasks (the cascade first, stage by stage, then the standalone
        attacks, then the cascade again if other shards finished a stage meanwhile); returns how many ran."""
        todo = [(k, s, b) for k, (s, b) in enumerate(self.tasks())
                if (shard is None or k % shard[1] == shard[0]) and self.record(s, b) is None]
        bar = None
        if progress and (todo or self.protocol.cascade is not None):
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"{self.info.name} {self.protocol.name}", unit="batch", file=sys.stderr)
        ran = 0

        def run(spec: AttackSpec, b: int, rows: list[int] | None = None) -> None:
            nonlocal ran
            record = None
            if rows is not None and spec.key == self.stage_spec("clean").key:
                found = self.clean_sources(rows)
                for sb in found[2] if found else []:
                    if self.record(found[0], sb) is None:
                        run(found[0], sb)  # its own task, run now: the clean stage is read from it
                record = self.clean_stage_record(b, rows)
            if bar is not None:
                bar.set_postfix_str(spec.key)
            if record is None:
                record = self.run_task(spec, b, rows)
            atomic_write_json(self.task_path(spec, b), record)
            ran += 1
            if bar is not None:
                bar.update()
            if on_batch is not None:
                on_batch(spec.key, b)

        def announce(n: int) -> None:  # a cascade stage's batches become known once the stage before it is done
            if bar is not None:
                bar.total += n
                bar.refresh()

        try:
            self._run_cascade(shard, run, announce)
            for _, spec, b in todo:
                if self.record(spec, b) is None:  # the cascade's clean stage may have run it already
                    run(spec, b)
            self._run_cascade(shard, run, announce)
        finally:
            if bar is not None:
                bar.close()
        return ran

    # the whole run -----------------------------------------------------------------------------------------------
    def locked(self, shard: tuple[int, int] | None = None) -> contextlib.AbstractContextManager[None]:
        """The lock of this run's state for as long as a process works on it: exclusive, or shared among the
        shards of one run (their records are bound to the configuration, :meth:`record`). Another process in the
        way raises :class:`~lwta_plugin.io.LockHeldError` naming the lock file and that process."""
        holder = self.command + (f" --shard {shard[0]}/{shard[1]}" if shard is not None else "")
        return run_lock(self.lock_path, f"the evaluation state {self.state_dir}", holder, shared=shard is not None)

    def advance(self, shard: tuple[int, int] | None, resume: bool, on_batch: BatchHook | None, progress: bool,
                log: Log) -> dict:
        """Under :meth:`locked`, :meth:`_advance`. Returns :meth:`status`."""
        with self.locked(shard):
            return self._advance(shard, resume, on_batch, progress, log)

    def _advance(self, shard: tuple[int, int] | None, resume: bool, on_batch: BatchHook | None, progress: bool,
                 log: Log) -> dict:
        """Check or start the state, run this process's share of the tasks, and write the entry when every task
        is done (whichever shard finishes last does it)."""
        lock_dir = self.path.parent
        with directory_lock(lock_dir):
            if resume and self.up_to_date() and not self.state_dir.exists():
                log(f"{self.path}: up to date")
                return self.status("up-to-date")
            self.prepare_state(resume)
        self.execute(shard, on_batch, progress)
        with directory_lock(lock_dir):
            if not self.state_dir.is_dir():  # another shard finished last and wrote the entry
                if not self.up_to_date():
                    raise EvaluationError(f"{self.state_dir} disappeared while this process was using it, and "
                                          f"{self.path} is not the finished entry; rerun the command")
                log(f"{self.path}: written by another shard")
                return self.status("written")
            missing = self.missing()
            if missing:
                log(f"{self.info.name} / {self.protocol.name}: {len(missing)} batches left for other shards (state: "
                    f"{self.state_dir})")
                return self.status("incomplete", len(missing))
            self.finish(log)
        return self.status("written")

    def merge(self, log: Log) -> dict:
        """Only write the entry from finished tasks (of shards run elsewhere and copied together)."""
        with self.locked(), directory_lock(self.path.parent):
            if not self.state_dir.is_dir():
                if self.up_to_date():
                    log(f"{self.path}: up to date (nothing to merge)")
                    return self.status("up-to-date")
                raise FileNotFoundError(f"nothing to merge for {self.info.name} / {self.protocol.name}: "
                                        f"{self.state_dir} does not exist")
            self.prepare_state(resume=True)  # checks that the partial results are of this configuration
            self.load_records()  # raises IncompleteRunError naming the missing batches
            self.finish(log)
        return self.status("written")

    # entry -------------------------------------------------------------------------------------------------------
    def load_records(self) -> dict[str, list[dict]]:
        """Every task's record by attack key, in batch order; IncompleteRunError if any is missing."""
        missing = self.missing()
        if missing:
            listed = ", ".join(f"{s.key}/{b}" for s, b in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise IncompleteRunError(f"{len(missing)} batches of {self.info.name} / {self.protocol.name} are not "
                                     f"finished yet ({listed}); run the remaining shards (state: {self.state_dir})")
        records: dict[str, list[dict]] = {}
        for spec, b in self.tasks():
            rec = self.record(spec, b)
            if rec is None:  # replaced since missing() looked
                raise IncompleteRunError(f"{self.task_path(spec, b)} changed while the entry was assembled; rerun")
            records.setdefault(spec.key, []).append(rec)
        stages, todo = self.cascade_plan()
        if todo:
            raise IncompleteRunError(f"the cascade of {self.info.name} / {self.protocol.name} changed while the "
                                     "entry was assembled; rerun")
        records.update(stages)  # a stage after which no image was left has no record: still a stage
        return records

    def assemble(self) -> tuple[dict, dict]:
        """Build the entry and the timing record from the finished tasks."""
        records = self.load_records()
        results = {spec.key: attack_result(spec, records[spec.key], self.protocol) for spec in self.protocol.attacks}
        chain = self.protocol.cascade
        stages = [(self.stage_spec(k), records[self.stage_spec(k).key]) for k in chain.stages] if chain else []
        with self.model.sampling(self.protocol.scoring.sampling):
            stochastic = self.model.stochastic
        entry = build_entry(results, self.protocol, self.info, self.state_config, stochastic=stochastic,
                            command=self.command, config_sha256=self.config_sha256,
                            cascade=cascade_result(self.protocol, stages, self.threat_eps) if stages else None)
        return entry, timing_record(records, self.info.name, self.protocol.name, self.config_sha256)

    def write(self) -> Path:
        """Assemble, validate and atomically write the entry and timing file; remove the state directory."""
        self.check_replace()  # again: another process may have written the entry since the run started
        entry, timing = self.assemble()
        validate_entry(entry)
        atomic_write_json(self.path, entry)
        atomic_write_json(self.timing_path, timing)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return self.path

    def finish(self, log: Log) -> Path:
        """:meth:`write`, then refresh the combined worst case of this model's ``adaptive`` entry."""
        path = self.write()
        combines = self.protocol.name == COMBINE_INTO or self.protocol.name in COMBINE_FROM
        if combines and refresh_combined(path):
            log(f"updated the combined worst case of {path.parent / (self.info.name + '__' + COMBINE_INTO)}.json")
        log(f"wrote {path}")
        return path
