""":func:`evaluate`: every model of an :class:`EvaluationConfig` with every protocol, one :class:`ProtocolRun` each."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..io import check_writable_directory
from ..models import LWTANet
from ..protocols import Protocol, resolve
from .assembly import COMBINE_INTO
from .config import EvaluationConfig, check_shard
from .loading import EvaluationData, ModelInfo, load_model_for_evaluation, load_test_data
from .runner import AttackFactory, BatchHook, Log, ProtocolRun, build_attack_for


@dataclass(frozen=True)
class Inputs:
    """What an evaluation reads before its first batch: the resolved protocols (in run order), the models and
    the images."""

    protocols: list[Protocol]
    models: list[tuple[LWTANet, ModelInfo]]
    data: EvaluationData


def load_inputs(config: EvaluationConfig, data: tuple[torch.Tensor, torch.Tensor] | None = None) -> Inputs:
    """Resolve the protocols, load every model and read the images (``data``: use these instead of the data
    set's test split), so that an unknown name or missing data fails before hours of work on the others.

    ``adaptive`` runs last, so that its combined worst case sees the entries of the other protocols."""
    protocols = sorted(config.resolved_protocols(), key=lambda p: p.name == COMBINE_INTO)
    samples = protocols[0].scoring.samples
    models = [load_model_for_evaluation(name, config.dataset, config.threat_model, samples,
                                        config.checkpoints.get(name), config.model_dir) for name in config.models]
    if data is not None:
        x, y = data
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"data must be (x, y) with the same non-zero length, got {len(x)} and {len(y)}")
        return Inputs(protocols, models, EvaluationData(x, y, "custom"))
    need = max(a.start + a.n_examples for p in protocols for a in p.attacks if a.kind != "random_score")
    x, y = load_test_data(config.dataset, need, config.data_root)
    return Inputs(protocols, models, EvaluationData(x, y, f"lwta_plugin.data:{config.dataset}"))


def evaluate(config: EvaluationConfig, *, data: tuple[torch.Tensor, torch.Tensor] | None = None,
             on_batch: BatchHook | None = None, log: Log | None = print, attack_factory: AttackFactory | None = None,
             shard: tuple[int, int] | str | None = None, resume: bool = True, merge: bool = False,
             progress: bool = True, force: bool = False) -> list[dict]:
    """Evaluate ``config.models`` with ``config.protocols`` and write their leaderboard entries.

    data: ``(x, y)`` to use instead of the data set's test split. on_batch(attack, batch): called after each
    finished task (tests use it to simulate a crash). attack_factory(spec, model): builds each task's attack
    (default :func:`lwta_plugin.evaluation.runner.build_attack_for`). shard: ``(i, N)`` or ``"i/N"``. resume:
    continue from the state directory (False: start over). merge: only assemble finished shards. None of these
    changes an entry. force: replace finished entries of another configuration (fewer images, other attacks,
    seed, checkpoint, ...; see :meth:`ProtocolRun.check_replace`); without it such an entry raises
    :class:`~lwta_plugin.evaluation.errors.EntryExistsError` before any work. A rerun of the same configuration
    is ``up-to-date`` (or rewritten identically with ``resume=False``). Every model, protocol, attack setting,
    the data, the output directory and the existing entries are checked before the first batch runs. Returns one status dict per (model, protocol):
    ``{"model", "protocol", "path", "status": "written" | "up-to-date" | "incomplete", "missing": int}``.
    """
    shard = check_shard(shard)
    if shard is not None and not resume:
        raise ValueError("resume=False deletes the shared state directory; it cannot be combined with a shard")
    log = log or (lambda _msg: None)
    check_writable_directory(config.out_dir, "output directory (out_dir, --out-dir)")
    inputs = load_inputs(config, data)
    runs = [ProtocolRun(model, info, inputs.data, resolve(protocol, available=len(inputs.data.x)), config,
                        attack_factory or build_attack_for, force)
            for model, info in inputs.models for protocol in inputs.protocols]
    for run in runs:
        run.check_replace()
        if not merge:
            run.check_attacks()
    return [run.merge(log) if merge else run.advance(shard, resume, on_batch, progress, log) for run in runs]
