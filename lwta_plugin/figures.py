"""The published figures of a leaderboard entry, derived from its per-example counts, and the check that an entry's
stored figures are exactly those.

Every number the leaderboard shows (means and intervals, the worst case, ``clean_acc``, ``autoattack_rand_acc``,
``external``, ``reported``, the attack-failure indicators, ``attack_failure`` and ``unreliable``) is a function of
the entry's
per-example counts and of the rules below; the evaluation writes entries with these functions and
:func:`check_figures` recomputes them, so a hand-edited or corrupted number is refused with the field it is in.
The worst case combined across protocols needs the sibling entries: :func:`check_combined`.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .attacks.indicators import from_results
from .paper import paper_rows, paper_value, row_reference
from .protocols import EPS, EPS_TEXT, eot_samples_of, get_protocol
from .statistics import NOT_ATTACKED, decode_counts, decode_partial, summarize_counts, worst_case

COMBINE_INTO = "adaptive"
COMBINE_FROM = ("paper", "paper-concrete", "autoattack-rand")
LINF_TOLERANCE = 1e-5  # float slack of an attack's perturbation against its eps
TOLERANCE = 1e-9  # stored statistics are rounded to 12 significant digits (statistics.round_stat)
_SUMMARY = ("mean", "ci_low", "ci_high")


def pct(fraction: float) -> str:
    """RobustBench's percentage string: 0.93456 -> "93.46"."""
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 <= fraction <= 1):
        raise ValueError(f"expected a fraction in [0, 1], got {fraction!r}")
    return f"{100 * fraction:.2f}"


# ---------------------------------------------------------------------------------------------------------------
# deriving


def threat_eps(dataset: str) -> float:
    """The L-inf radius of the data set's threat model (MNIST 0.3)."""
    return EPS[dataset]


def effective_eps(result: Mapping[str, Any]) -> float | None:
    """The eps an attack ran with, as it reported it (``hyperparameters.eps``), or None."""
    eps = (result.get("hyperparameters") or {}).get("eps")
    return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def at_threat_eps(eps: float | None, threat: float) -> bool:
    """Whether ``eps`` is the threat model's radius (up to float noise)."""
    return eps is not None and math.isclose(eps, threat, rel_tol=1e-9, abs_tol=1e-12)


def in_worst_case(result: Mapping[str, Any], eps: float) -> bool:
    """Whether a result enters the worst case: the clean images and every bounded adversarial attack that ran at
    the threat model's ``eps`` (one with a smaller eps is a weaker attack, not a robustness estimate at ``eps``)."""
    if result["kind"] == "clean":
        return True
    return result["kind"] == "adversarial" and bool(result["bounded"]) and at_threat_eps(effective_eps(result), eps)


def worst_case_of(results: Mapping[str, Mapping[str, Any]], passes: int, eps: float,
                  cascade: Mapping[str, Any] | None = None) -> dict:
    """Per-image worst case over the results that enter it (:func:`in_worst_case`); with a ``cascade`` section,
    over its images and stages too (every image of the cascade, each with the results that cover it)."""
    chosen = {k: r for k, r in results.items() if in_worst_case(r, eps)}
    if cascade is None:
        return worst_case(chosen, passes)
    chosen.update(_stages(cascade, len(cascade["stages"]), eps))
    return worst_case(chosen, passes, cover=(cascade["start"], cascade["n_examples"]))


def _stages(cascade: Mapping[str, Any], upto: int, eps: float) -> dict[str, dict]:
    """The first ``upto`` stages of a cascade section as results for :func:`lwta_plugin.statistics.worst_case`."""
    return {f"cascade/{st['attack']}": {**st, "start": cascade["start"], "n_examples": cascade["n_examples"]}
            for st in cascade["stages"][:upto] if in_worst_case(st, eps)}


def cascade_summary(cascade: Mapping[str, Any], passes: int, upto: int, eps: float) -> dict:
    """Robust accuracy after the first ``upto`` stages of a cascade: the worst case over them alone (mean and
    interval on fresh draws when the stages have them)."""
    w = worst_case(_stages(cascade, upto, eps), passes, cover=(cascade["start"], cascade["n_examples"]))
    return {k: w[k] for k in _SUMMARY}


def robust_estimate(entry: Mapping[str, Any]) -> dict | None:
    """The entry's robust-accuracy estimate: its worst case (combined across protocols when it has one) when that
    includes an attack at the threat model's eps, outside a smoke test; else None."""
    worst = entry.get("worst_case_all_protocols") or entry["worst_case"]
    attacked = any(a.rsplit("/", 1)[-1] != "clean" for a in worst["attacks"])
    return worst if attacked and not entry["protocol"]["smoke"] else None


def is_unreliable(entry: Mapping[str, Any]) -> bool:
    """RobustBench's ``unreliable``: an evaluation of ours is lower than the reported (the paper's) robust accuracy:
    the upper end of the 95 % interval of :func:`robust_estimate` is below ``reported``."""
    robust = robust_estimate(entry)
    return "reported" in entry and robust is not None and 100 * robust["ci_high"] < float(entry["reported"])


def autoattack_of(results: Mapping[str, Mapping[str, Any]], passes: int, smoke: bool, eps: float) -> dict | None:
    """The worst case of clean and AutoAttack 'rand' (``apgd_rand``), when it ran at the threat model's eps outside
    a smoke test."""
    if smoke or "apgd_rand" not in results or not in_worst_case(results["apgd_rand"], eps):
        return None
    return worst_case_of({k: v for k, v in results.items() if k in ("clean", "apgd_rand")}, passes, eps)


def check_attack_eps(key: str, result: Mapping[str, Any], eps: float) -> None:
    """Raise ValueError unless a bounded attack recorded an eps within the threat model's ``eps`` and stayed in
    its ball."""
    if result["kind"] != "adversarial" or not result["bounded"]:
        return
    field = f"attacks/{key}/hyperparameters/eps"
    own = effective_eps(result)
    if own is None:
        raise ValueError(f"field {field!r}: a bounded attack must record the eps it ran with")
    if own > eps and not at_threat_eps(own, eps):
        raise ValueError(f"field {field!r}: {own:g} is outside the threat model (L-inf eps {eps:g})")
    linf = result["perturbation"]["linf_max"]
    if linf > own + LINF_TOLERANCE:
        raise ValueError(f"field 'attacks/{key}/perturbation/linf_max': {linf:g} is outside the attack's eps "
                         f"{own:g}")


def combined_worst_case(entry: dict, siblings: Iterable[dict]) -> dict | None:
    """The worst case of an ``adaptive`` entry combined with its siblings of :data:`COMBINE_FROM` (same model,
    data, checkpoint and passes), with the ``config_sha256`` of each part; None without such a sibling."""
    passes = entry["protocol"]["scoring"]["passes"]
    ident = ("model", "dataset", "threat_model")

    def same(s: dict) -> bool:
        return (all(s[k] == entry[k] for k in ident) and s["data"]["sha256"] == entry["data"]["sha256"]
                and s["checkpoint"]["sha256"] == entry["checkpoint"]["sha256"]
                and s["protocol"]["scoring"]["passes"] == passes)

    parts = {COMBINE_INTO: entry}
    parts.update({s["protocol"]["name"]: s for s in siblings if s["protocol"]["name"] in COMBINE_FROM and same(s)})
    if len(parts) == 1:
        return None
    results = {f"{name}/{k}": parts[name]["attacks"][k] for name in sorted(parts) for k in sorted(parts[name]["attacks"])}
    combined = worst_case_of(results, passes, threat_eps(entry["dataset"]))
    combined["sources"] = {name: parts[name]["config_sha256"] for name in sorted(parts)}
    return combined


def finalize_entry(entry: dict) -> None:
    """Derive ``unreliable``, ``attack_failure``, ``autoattack_rand_acc``, ``external`` and ``footnote`` from the
    rest of the entry (also after combining). RobustBench's ``autoattack_acc`` (standard AutoAttack, which no
    protocol here runs: it evaluates a random model with one pass) is never kept."""
    p = entry["protocol"]
    fired = [i for i in entry["indicators"] if i["fired"]]
    entry["attack_failure"] = [i["name"] for i in fired]
    entry["unreliable"] = is_unreliable(entry)
    entry.pop("autoattack_acc", None)
    passes, eps = p["scoring"]["passes"], threat_eps(entry["dataset"])
    ordered = {k: entry["attacks"][k] for k in protocol_order(entry)}  # worst-case ties: the protocol's order
    aa = autoattack_of(ordered, passes, p["smoke"], eps)
    if aa is None:
        entry.pop("autoattack_rand_acc", None)
    else:
        entry["autoattack_rand_acc"] = pct(aa["mean"])
    combined = entry.get("worst_case_all_protocols")
    worst = combined or entry["worst_case"]
    if p["adaptive"]:
        entry["external"] = pct(worst["mean"])
    else:
        entry.pop("external", None)
    parts = []
    if p["smoke"]:
        parts.append("SMOKE TEST (tiny attack budgets): not a robustness estimate.")
    if entry.get("number_forward_passes", 0) == 1:  # RobustBench's field: 1 for a deterministic model
        parts.append(f"Deterministic model: one forward pass per prediction; accuracies with 95% CIs over the "
                     f"images. Protocol '{p['name']}'.")
    else:
        parts.append(f"Random model: each prediction averages {p['scoring']['samples']} stochastic passes; "
                     f"accuracies are means over {p['scoring']['passes']} predictions per image with 95% CIs. "
                     f"Protocol '{p['name']}'.")
    which = ", ".join(worst["attacks"])
    if p["adaptive"] and worst.get("method") == "fresh":
        stages = [a for a in worst["attacks"] if a.startswith("cascade/")]
        cascade = (f"; the cascade's {len(stages)} stages on all of them, each only on the images the earlier ones "
                   "did not break") if stages else ""
        parts.append(f"external = per-image worst case over {worst['n_examples']} images (the attacks "
                     f"{', '.join(a for a in worst['attacks'] if not a.startswith('cascade/'))} on their images"
                     f"{cascade}): each image's strongest point selected on one set of draws and scored on fresh, "
                     "independent draws (unbiased).")
    elif p["adaptive"]:
        parts.append(f"external = per-image worst case over {which} ({worst['n_examples']} images).")
    if aa is not None:
        r = entry["attacks"]["apgd_rand"]
        parts.append(f"autoattack_rand_acc = AutoAttack version 'rand' (APGD-CE + APGD-DLR, EOT {r['eot_samples']}, "
                     f"{r['n_examples']} images), scored by averaged predictions; RobustBench's autoattack_acc "
                     "(standard AutoAttack) is not reported.")
    if "reported" in entry:
        r = entry["paper"]["rows"][0]
        parts.append(f"reported = the paper's PGD accuracy ({row_reference(r)}), measured without EOT.")
    if entry["unreliable"]:
        robust = robust_estimate(entry)
        parts.append(f"unreliable: our worst case, {pct(robust['mean'])} % (95% CI up to {pct(robust['ci_high'])} "
                     f"%), is below the reported {entry['reported']} %.")
    if fired:
        parts.append("Attack-failure indicators fired (attack_failure): "
                     + "; ".join(f"{i['name']} ({i['detail']})" for i in fired) + ".")
    entry["footnote"] = " ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# checking


def _non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "<root>"
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}/{k}" if where else str(k))
        if found is not None:
            return found
    return None


def _differ(stored: Any, derived: Any) -> bool:
    if isinstance(stored, (int, float)) and isinstance(derived, (int, float)) \
            and not isinstance(stored, bool) and not isinstance(derived, bool):
        return not abs(stored - derived) <= TOLERANCE
    return json.dumps(stored, sort_keys=True) != json.dumps(derived, sort_keys=True)


def _compare(field: str, stored: Any, derived: Any, source: str = "its per-example counts") -> None:
    if _differ(stored, derived):
        raise ValueError(f"field {field!r}: stored {stored!r}, but {source} give {derived!r}")


def _compare_summary(field: str, stored: Mapping[str, Any], derived: Mapping[str, Any]) -> None:
    for key in sorted(set(stored) | set(derived)):
        _compare(f"{field}/{key}", stored.get(key), derived.get(key))


def _ordered_results(entry: dict) -> dict[str, dict]:
    """The entry's results in its protocol's attack order (the order the evaluation computed them in), each
    checked against the protocol's attack: kind, attack and bounded cannot change."""
    protocol = get_protocol(entry["protocol"]["name"], entry["dataset"])
    specs = {a.key: a for a in protocol.attacks}
    unknown = sorted(set(entry["attacks"]) - set(specs))
    if unknown:
        raise ValueError(f"field 'attacks/{unknown[0]}': protocol {protocol.name!r} has no such attack")
    passes = entry["protocol"]["scoring"]["passes"]
    for key, r in entry["attacks"].items():
        spec = specs[key]
        _compare(f"attacks/{key}/kind", r["kind"], spec.kind, f"protocol {protocol.name!r}")
        _compare(f"attacks/{key}/attack", r["attack"], spec.attack or spec.kind, f"protocol {protocol.name!r}")
        _compare(f"attacks/{key}/bounded", r["bounded"], spec.bounded, f"protocol {protocol.name!r}")
        _compare(f"attacks/{key}/passes", r["passes"], passes, "the protocol's scoring")
    return {key: entry["attacks"][key] for key in protocol_order(entry)}


def protocol_order(entry: dict) -> list[str]:
    """The keys of the entry's attacks in its protocol's order (clean first), not the JSON's alphabetical order."""
    protocol = get_protocol(entry["protocol"]["name"], entry["dataset"])
    return [a.key for a in protocol.attacks if a.key in entry["attacks"]]


def check_figures(entry: dict) -> None:
    """Raise ValueError, naming the field, unless every published figure of ``entry`` is what its per-example
    counts give (the entry must already follow the schema)."""
    bad = _non_finite(entry)
    if bad is not None:
        raise ValueError(f"field {bad!r}: NaN or infinity is not a number")
    _compare("eps", entry["eps"], EPS_TEXT[entry["dataset"]], f"the threat model of {entry['dataset']}")
    results = _ordered_results(entry)
    passes, eps = entry["protocol"]["scoring"]["passes"], threat_eps(entry["dataset"])
    for key, r in results.items():
        counts = decode_counts(r["per_example_correct"])
        _compare_summary(f"attacks/{key}", {k: r[k] for k in _SUMMARY}, summarize_counts(counts, passes))
        _compare(f"attacks/{key}/eot_samples", r["eot_samples"], eot_samples_of(r["hyperparameters"]),
                 "its hyperparameters")
        check_attack_eps(key, r, eps)
    _compare("clean_acc", entry["clean_acc"], pct(results["clean"]["mean"]), "the clean result")
    cascade = entry.get("cascade")
    if cascade is not None:
        _check_cascade(cascade, entry["protocol"], passes, eps)
    _compare_summary("worst_case", entry["worst_case"], worst_case_of(results, passes, eps, cascade))
    aa = autoattack_of(results, passes, entry["protocol"]["smoke"], eps)
    _compare("autoattack_rand_acc", entry.get("autoattack_rand_acc"), None if aa is None else pct(aa["mean"]))
    _compare("autoattack_acc", entry.get("autoattack_acc"), None,
             "the protocols (none runs standard AutoAttack; AutoAttack 'rand' is autoattack_rand_acc)")
    _compare("indicators", entry["indicators"], json.loads(json.dumps(from_results(results, passes=passes))))
    combined = entry.get("worst_case_all_protocols")
    if combined is not None:
        derived = summarize_counts(decode_counts(combined["per_example_correct"]), passes)
        _compare_summary("worst_case_all_protocols", {k: combined[k] for k in _SUMMARY}, derived)
        _compare("worst_case_all_protocols/n_examples", combined["n_examples"], len(combined["per_example_correct"]))
    fgsm = bool(entry["checkpoint"]["training"].get("fgsm_eps"))
    rows = paper_rows(entry["model"], entry["dataset"], fgsm)
    _compare("paper/rows", entry["paper"]["rows"], rows, "the paper's tables (lwta_plugin.paper)")
    _compare("reported", entry.get("reported"), pct(paper_value(rows[0]["values"]["PGD"])) if rows else None,
             "the paper's tables")
    derived_entry = copy.deepcopy(entry)
    finalize_entry(derived_entry)
    for key in ("unreliable", "attack_failure", "external", "footnote"):
        _compare(key, entry.get(key), derived_entry.get(key), "the entry's indicators and worst case")


def _check_cascade(cascade: dict, protocol: Mapping[str, Any], passes: int, eps: float) -> None:
    """Raise ValueError unless the cascade section follows its protocol's stages and its own rule (a stage attacks
    exactly the images no earlier stage broke) and its counts and robust accuracies are what its strings give."""
    declared = (protocol.get("cascade") or {}).get("stages")
    got = [st["attack"] for st in cascade["stages"]]
    _compare("cascade/stages", got, declared, "the protocol's cascade")
    n = cascade["n_examples"]
    alive = [True] * n
    for k, st in enumerate(cascade["stages"]):
        where = f"cascade/stages/{k}"
        sel = st["per_example_correct"]
        _compare(f"{where}/per_example_correct length", len(sel), n, "the cascade's n_examples")
        attacked = [ch != NOT_ATTACKED for ch in sel]
        _compare(f"{where}/attacked images", attacked, alive, "the earlier stages (each attacks the images not broken)")
        fresh = st.get("per_example_fresh")
        if fresh is not None:
            _compare(f"{where}/per_example_fresh attacked images", [ch != NOT_ATTACKED for ch in fresh], attacked,
                     "per_example_correct")
        _compare(f"{where}/n_attacked", st["n_attacked"], sum(attacked))
        _compare(f"{where}/n_broken", st["n_broken"], sel.count("0"))
        for i, c in enumerate(decode_partial(sel)):
            if c is not None and c > passes:
                raise ValueError(f"field '{where}/per_example_correct': count {c} > passes {passes}")
            if c == 0:
                alive[i] = False
        _compare_summary(f"{where}/robust_after", st["robust_after"], cascade_summary(cascade, passes, k + 1, eps))


def check_combined(entry: dict, siblings: Iterable[dict]) -> None:
    """Raise ValueError unless ``worst_case_all_protocols`` of ``entry`` is what the sibling entries give."""
    derived = combined_worst_case(entry, siblings) if entry["protocol"]["name"] == COMBINE_INTO else None
    stored = entry.get("worst_case_all_protocols")
    if stored is None and derived is None:
        return
    if stored is None or derived is None:
        _compare("worst_case_all_protocols", stored, derived, "the entries beside it")
        return
    stored = dict(stored, attacks=sorted(stored["attacks"]))
    _compare_summary("worst_case_all_protocols", stored, derived)
