"""Evaluation runner: ``lwta evaluate``. Runs a protocol (:mod:`lwta_plugin.protocols`) on a model and writes
its leaderboard entry (:mod:`lwta_plugin.entries`).

Modules: :mod:`.config` (what to evaluate: :class:`EvaluationConfig`, config files, the reproduction command),
:mod:`.loading` (models, their provenance, test images), :mod:`.runner` (:class:`ProtocolRun`: one model, one
protocol), :mod:`.assembly` (results to entry, the worst case across protocols), :mod:`.api` (:func:`evaluate`),
:mod:`.cli` (``lwta evaluate``, ``--plots``; not imported here), :mod:`.user_model` and :mod:`.foreign` (a model from
outside the plugin: :func:`evaluate_model`, exported as ``lwta_plugin.evaluate``).

Example::

    from lwta_plugin.evaluation import EvaluationConfig, evaluate
    evaluate(EvaluationConfig("lwta_ibp_tanh16", protocols=["paper", "adaptive"], n_examples=1000))

Entries go to ``<out_dir>/<dataset>/<threat_model>/<model>__<protocol>.json``; ``out_dir`` defaults to
:data:`DEFAULT_OUT_DIR` (``runs``), so only the config files that name ``leaderboard`` write the committed
leaderboard. A finished entry is only replaced by a run of the same configuration (its ``config_sha256``): one
with fewer images, other attacks, another seed, checkpoint or library versions raises :class:`EntryExistsError`
naming the file, unless ``force=True`` (``lwta evaluate --force``).

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
Every task record carries the run's ``config_sha256``: a record written by a run of another configuration (e.g.
a process of another seed still writing after ``--no-resume`` replaced the directory) is never adopted; its task
runs again. While a process works on the state it holds the lock file ``.<model>__<protocol>.lock`` beside it:
another process on the same entry stops at once with :class:`~lwta_plugin.io.LockHeldError` naming the lock and
its holder (a lock left by a process that died is taken over).
``shard=(i, N)`` runs every task whose index in the protocol's task list is ``i`` modulo ``N``. Shards may run
at the same time (they share the lock and write disjoint files; state checks and assembly hold an flock on the
entry's directory) or on different machines (copy the state directories together, then ``--merge``).
When every task is present, the entry is assembled (the last shard does it automatically; ``merge=True``,
``lwta evaluate --merge``, only assembles) and the state directory is removed. The result is byte-identical to an
uninterrupted, unsharded run on the same software and hardware (floating-point results can differ across torch
builds, CPU types and thread counts).

Time-dependent data (seconds per attack, dates, threads) never enters the entry; it goes to
``timing/<model>__<protocol>.json`` beside it. ``lwta evaluate --plots`` also writes
:func:`lwta_plugin.plots.make_plots` into ``<dataset>/<threat_model>/plots/``.

Before the first batch runs, every model is resolved and loaded and the data set is read, so an unknown name or
missing data fails at once rather than after hours of work on the other models.
"""
from __future__ import annotations

from .api import Inputs, evaluate, load_inputs
from .assembly import (
    COMBINE_FROM,
    COMBINE_INTO,
    combine_protocols,
    compute_indicators,
    finalize_entry,
    refresh_combined,
    refresh_indicators,
)
from .config import (
    CONFIG_FORMAT,
    CONFIG_KEYS,
    DEFAULT_OUT_DIR,
    RUN_KEYS,
    EvaluationConfig,
    check_shard,
    load_config,
    parse_shard,
    read_config_file,
)
from .errors import EntryExistsError, EvaluationError, IncompleteRunError
from .foreign import USER_PROTOCOLS, evaluate_model
from .loading import (
    EvaluationData,
    ModelInfo,
    checkpoint_model_name,
    load_model_for_evaluation,
    load_test_data,
    pair_checkpoints,
    tensor_sha256,
    versions,
)
from .runner import AttackFactory, BatchHook, ProtocolRun, build_attack_for

__all__ = [
    "COMBINE_FROM",
    "COMBINE_INTO",
    "CONFIG_FORMAT",
    "CONFIG_KEYS",
    "DEFAULT_OUT_DIR",
    "RUN_KEYS",
    "USER_PROTOCOLS",
    "AttackFactory",
    "BatchHook",
    "EntryExistsError",
    "EvaluationConfig",
    "EvaluationData",
    "EvaluationError",
    "IncompleteRunError",
    "Inputs",
    "ModelInfo",
    "ProtocolRun",
    "build_attack_for",
    "check_shard",
    "checkpoint_model_name",
    "combine_protocols",
    "compute_indicators",
    "evaluate",
    "evaluate_model",
    "finalize_entry",
    "load_config",
    "load_inputs",
    "load_model_for_evaluation",
    "load_test_data",
    "pair_checkpoints",
    "parse_shard",
    "read_config_file",
    "refresh_combined",
    "refresh_indicators",
    "tensor_sha256",
    "versions",
]
