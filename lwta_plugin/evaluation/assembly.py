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
from ..entries import FORMAT, pct, validate_entry
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
    row_reference,
)
from ..protocols import EPS_TEXT, AttackSpec, Protocol
from ..statistics import decode_counts, median, round_stat, summarize_counts, worst_case
from .loading import ModelInfo

COMBINE_INTO = "adaptive"
COMBINE_FROM = ("paper", "paper-concrete", "autoattack-rand")


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
        linf = sorted(v for r in records for v in r["linf"])
        l2 = sorted(v for r in records for v in r["l2"])
        res["perturbation"] = {"linf_max": linf[-1], "linf_median": median(linf), "l2_median": median(l2),
                               "l2_mean": round_stat(math.fsum(l2) / len(l2))}
    return res


def build_entry(results: dict[str, dict], protocol: Protocol, info: ModelInfo, run_config: Mapping[str, Any], *,
                stochastic: bool, command: str, config_sha256: str) -> dict:
    """The leaderboard entry of finished ``results`` (RobustBench's model_info fields, then ours).

    ``run_config``: the run's configuration as its state directory records it (dataset, threat model, seed, data,
    versions); ``stochastic``: whether the model is random under the protocol's sampling."""
    passes = protocol.scoring.passes
    dataset = run_config["dataset"]
    # AutoAttack 'rand' = clean + APGD-CE/DLR with EOT; not for smoke runs (tiny budgets, not an estimate)
    aa = worst_case({k: v for k, v in results.items() if k in ("clean", "apgd_rand")}, passes) \
        if "apgd_rand" in results and not protocol.smoke else None
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
        "attacks": results, "worst_case": worst_case(results, passes),
        "paper": {"rows": rows, "notes": list(PAPER_NOTES)},
        "checkpoint": {"sha256": info.sha256, "source": info.source, "file": info.file,
                       "config": info.config, "training": info.training},
        "versions": run_config["versions"], "command": command, "config_sha256": config_sha256,
    }
    if rows:
        entry["reported"] = pct(paper_value(rows[0]["values"]["PGD"]))
    if aa is not None:
        entry["autoattack_acc"] = pct(aa["mean"])
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
        parts.append(f"reported = the paper's PGD accuracy ({row_reference(r)}), measured without EOT.")
    if fired:
        parts.append("Attack-failure indicators fired: " + "; ".join(f"{i['name']} ({i['detail']})" for i in fired)
                     + ".")
    entry["footnote"] = " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# combining protocols


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
