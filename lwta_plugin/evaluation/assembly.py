"""From finished tasks to a leaderboard entry: per-attack results, the entry with its indicators and footnote, and
the worst case combined across the protocols of one model."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..attacks.indicators import from_results
from ..entries import FORMAT, validate_entry
from ..figures import (
    COMBINE_FROM,
    COMBINE_INTO,
    cascade_summary,
    combined_worst_case,
    finalize_entry,
    pct,
    protocol_order,
    threat_eps,
    worst_case_of,
)
from ..io import atomic_write_json, dumps_json
from ..models import describe_architecture
from ..paper import (
    PAPER_AUTHORS,
    PAPER_LINK,
    PAPER_NAME,
    PAPER_NOTES,
    PAPER_VENUE,
    paper_rows,
    paper_value,
)
from ..protocols import EPS_TEXT, AttackSpec, Protocol, eot_samples_of
from ..statistics import NOT_ATTACKED, decode_counts, median, round_stat, summarize_counts
from .loading import ModelInfo


def jsonable(v: Any) -> Any:
    """``v`` as JSON data: non-finite floats and other objects as strings, one-element tensors as numbers."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return jsonable(v.item())
    return repr(v)


# ---------------------------------------------------------------------------------------------------------------
# one attack, one entry


def attack_result(spec: AttackSpec, records: Sequence[dict], protocol: Protocol) -> dict:
    """The entry's result of one attack from its batches' records (in batch order)."""
    scoring = protocol.scoring
    counts = "".join(r["counts"] for r in records)
    if len(counts) != spec.n_examples:
        raise ValueError(f"{spec.key}: {len(counts)} results for {spec.n_examples} images")
    res = {"attack": spec.attack or spec.kind, "kind": spec.kind, "bounded": spec.bounded,
           "description": spec.description,
           "metric": ("fraction_max_prob_below_" + f"{scoring.random_threshold:g}"
                      if spec.kind == "random_score" else "accuracy"),
           **summarize_counts(decode_counts(counts), scoring.passes),
           "n_examples": spec.n_examples, "passes": scoring.passes, "samples": spec.score_samples or scoring.samples,
           "attack_samples": spec.attack_samples, "eot_samples": spec.eot_samples,
           "batch_size": spec.batch_size, "hyperparameters": jsonable(spec.params),
           "per_example_correct": counts}
    if records and all("fresh" in r for r in records):
        res["per_example_fresh"] = "".join(r["fresh"] for r in records)
    if spec.start:
        res["start"] = spec.start
    if spec.sampling:
        res["sampling"] = spec.sampling
    if spec.labels != "true":
        res["labels"] = spec.labels
        res["labels_correct"] = sum(r["labels_agree"] for r in records)
    if spec.kind == "adversarial":
        hp = [r.get("hyperparameters") for r in records]
        if any(h != hp[0] for h in hp):
            raise ValueError(f"{spec.key}: batches report different hyperparameters")
        res["hyperparameters"] = hp[0]
        res["eot_samples"] = eot_samples_of(hp[0])  # what the attack reports it ran with (its params, overridden)
        if all("path_adversarial" in r for r in records):  # the attack's own account, for the silent_success indicator
            res["path_adversarial"] = "".join(r["path_adversarial"] for r in records)
        linf = sorted(v for r in records for v in r["linf"])
        l2 = sorted(v for r in records for v in r["l2"])
        res["perturbation"] = {"linf_max": linf[-1], "linf_median": median(linf), "l2_median": median(l2),
                               "l2_mean": round_stat(math.fsum(l2) / len(l2))}
    return res


def cascade_result(protocol: Protocol, stages: Sequence[tuple[AttackSpec, Sequence[dict]]], eps: float) -> dict:
    """The entry's ``cascade`` section from each stage's spec and records: per stage the images it attacked (the
    others :data:`~lwta_plugin.statistics.NOT_ATTACKED` in its per-example strings), how many it broke, and the
    robust accuracy after it (the unbiased worst case over the stages so far, :func:`cascade_summary`)."""
    chain = protocol.cascade
    passes = protocol.scoring.passes
    out_stages = []
    for spec, records in stages:
        sel = [NOT_ATTACKED] * chain.n_examples
        fresh = [NOT_ATTACKED] * chain.n_examples
        for r in records:
            for i, c, f in zip(r["indices"], r["counts"], r.get("fresh", r["counts"])):
                sel[i], fresh[i] = c, f
        hp = [r["hyperparameters"] for r in records if "hyperparameters" in r]
        if any(h != hp[0] for h in hp):
            raise ValueError(f"{spec.key}: batches report different hyperparameters")
        stage = {"attack": spec.key.split("/", 1)[1], "kind": spec.kind, "bounded": spec.bounded,
                 "hyperparameters": hp[0] if hp else jsonable(spec.params),
                 "n_attacked": sum(len(r["indices"]) for r in records),
                 "n_broken": sum(c == "0" for c in sel), "per_example_correct": "".join(sel)}
        if protocol.scoring.fresh:
            stage["per_example_fresh"] = "".join(fresh)
        out_stages.append(stage)
    section = {"start": chain.start, "n_examples": chain.n_examples, "batch_size": chain.batch_size,
               "broken": f"all {passes} predictions of a stage's point wrong (selection draws)",
               "stages": out_stages}
    for k, stage in enumerate(out_stages):
        stage["robust_after"] = cascade_summary(section, passes, k + 1, eps)
    return section


def build_entry(results: dict[str, dict], protocol: Protocol, info: ModelInfo, run_config: Mapping[str, Any], *,
                stochastic: bool, command: str, config_sha256: str, cascade: dict | None = None) -> dict:
    """The leaderboard entry of finished ``results`` (RobustBench's model_info fields, then ours).

    ``run_config``: the run's configuration as its state directory records it (dataset, threat model, seed, data,
    versions); ``stochastic``: whether the model is random under the protocol's sampling."""
    passes = protocol.scoring.passes
    dataset = run_config["dataset"]
    eps = threat_eps(dataset)
    rows = paper_rows(info.name, dataset, bool(info.training.get("fgsm_eps")))
    entry: dict[str, Any] = {
        "format": FORMAT,
        # RobustBench model_info fields
        "link": PAPER_LINK, "name": PAPER_NAME, "authors": PAPER_AUTHORS, "additional_data": False,
        "number_forward_passes": protocol.scoring.samples if stochastic else 1,
        "dataset": dataset, "venue": PAPER_VENUE, "architecture": describe_architecture(info.config),
        "eps": EPS_TEXT[dataset], "clean_acc": pct(results["clean"]["mean"]),
        # ours
        "model": info.name, "threat_model": run_config["threat_model"], "seed": run_config["seed"],
        "data": run_config["data"], "protocol": {k: v for k, v in protocol.to_dict().items() if k != "attacks"},
        "attacks": results, **({"cascade": cascade} if cascade is not None else {}),
        "worst_case": worst_case_of(results, passes, eps, cascade),
        "paper": {"rows": rows, "notes": list(PAPER_NOTES)},
        "checkpoint": {"sha256": info.sha256, "source": info.source, "file": info.file,
                       "config": info.config, "training": info.training},
        "versions": run_config["versions"], "command": command, "config_sha256": config_sha256,
    }
    if rows:
        entry["reported"] = pct(paper_value(rows[0]["values"]["PGD"]))
    entry["indicators"] = compute_indicators(results, protocol)
    finalize_entry(entry)
    return entry


def timing_record(records: Mapping[str, Sequence[dict]], model: str, protocol: str, config_sha256: str) -> dict:
    """The time-dependent side of a run (seconds per attack, when batches finished, threads), kept out of the
    entry so that reruns give byte-identical entries."""
    seconds = {key: round(sum(r["seconds"] for r in recs), 3) for key, recs in records.items()}
    finished = [r["finished"] for recs in records.values() for r in recs]
    return {"model": model, "protocol": protocol, "seconds": seconds,
            "total_seconds": round(sum(seconds.values()), 3), "first_batch_finished": min(finished),
            "last_batch_finished": max(finished), "torch_threads": torch.get_num_threads(),
            "config_sha256": config_sha256}


def compute_indicators(results: dict[str, dict], protocol: Protocol) -> list[dict]:
    """Attack-failure indicators of the finished results (:func:`lwta_plugin.attacks.indicators.from_results`:
    unbounded attacks below ~100 % success, accuracy rising with eps, black-box or one-step attacks beating the
    iterative white-box ones, budgets that still help), each scored with the protocol's passes."""
    return from_results(results, passes=protocol.scoring.passes)


# ---------------------------------------------------------------------------------------------------------------
# combining protocols


def combine_protocols(entry: dict, siblings: Iterable[dict]) -> bool:
    """Set ``worst_case_all_protocols`` of an ``adaptive`` entry from sibling entries of the same model and data
    (``paper``, ``paper-concrete``, ``autoattack-rand``) with the same number of passes
    (:func:`lwta_plugin.figures.combined_worst_case`); returns whether the entry changed."""
    if entry["protocol"]["name"] != COMBINE_INTO:
        return False
    before = dumps_json(entry)
    entry.pop("worst_case_all_protocols", None)
    combined = combined_worst_case(entry, siblings)
    if combined is not None:
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


def refresh_indicators(path: Path) -> bool:
    """Recompute the attack-failure indicators of the entry at ``path`` from its own results with the current rules
    (and what follows from them: ``attack_failure``, ``unreliable``, the footnote); True if rewritten. For entries
    written before a rule changed: the results themselves are not touched."""
    entry = json.loads(path.read_text(encoding="utf-8"))
    before = dumps_json(entry)
    results = {key: entry["attacks"][key] for key in protocol_order(entry)}
    entry["indicators"] = from_results(results, passes=entry["protocol"]["scoring"]["passes"])
    finalize_entry(entry)
    if dumps_json(entry) == before:
        return False
    validate_entry(entry)
    atomic_write_json(path, entry)
    return True
