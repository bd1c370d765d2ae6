"""Attack-failure indicators (Athalye et al. 2018 section 3.1, Carlini et al. 2019 checklist, Pintor et al. 2022).

Two kinds:

* From evaluation results (``results[key]`` as :func:`lwta_plugin.evaluation.assembly.attack_result` builds
  them: ``attack``, ``kind``, ``bounded``, ``mean``, ``per_example_correct`` (base-36 counts out of ``passes``),
  ``n_examples``, ``hyperparameters``): :func:`unbounded_attack_failure`, :func:`eps_monotonicity`,
  :func:`black_box_stronger`, :func:`one_step_stronger`, :func:`budget_convergence`; :func:`from_results` runs all
  that apply.
* Standalone, rerunning attacks: :func:`check_convergence` (2x steps / EOT samples on a subset) and
  :func:`check_silent_success` (the attack path met an adversarial point but the returned point is not one).
  The evaluation records each attack's path (``last_info["path_adversarial"]``) in the entry, so
  :func:`silent_successes` runs from results too.

Every indicator is a dict ``{"name", "fired", "value", "threshold", "detail", ...}`` (the leaderboard schema's
``indicator``; extra keys such as ``attacks`` list the results involved). Comparisons between two attacks are
paired over their common first images: ``gap = mean_i (p_a,i - p_b,i)`` with ``p`` the per-image fraction of
correct predictions, and an indicator fires only when the gap exceeds both ``tolerance`` and ``z`` standard
errors of the paired mean (the model's randomness makes accuracies noisy).

What kind of attack a result comes from (white-box or black-box, iterative or one-step, which hyperparameters are
budgets) is read from the attack's class (:class:`~lwta_plugin.attacks.base.Attack`'s facts) through the registry,
by the result's ``attack`` name.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..statistics import correct_counts, decode_counts, paired_difference
from .registry import ATTACKS, build_attack

TOLERANCE = 0.01  # accuracy difference (absolute) below which attacks count as equally strong
Z = 3.0  # standard errors of the paired difference required before an indicator fires
UNBOUNDED_MAX_ACCURACY = 0.02  # an unbounded attack must leave (almost) no image correctly classified
ALWAYS_CORRECT = 1.0 - 1e-9  # silent success: the returned point is right in every scored prediction

Indicator = dict[str, Any]


# ------------------------------------------------------------------------------------- attack facts


def attacks_where(**facts: bool) -> tuple[str, ...]:
    """Registered attacks whose class facts (``bounded``, ``white_box``, ``iterative``) have the given values."""
    return tuple(name for name, cls in ATTACKS.items() if all(getattr(cls, k) == v for k, v in facts.items()))


def white_box_iterative_attacks() -> tuple[str, ...]:
    """Iterative white-box attacks of the eps-ball: the reference the other attacks must not beat.

    Unbounded attacks (CW, BSA, whose optional ``eps`` only projects the final point) are not among them."""
    return attacks_where(white_box=True, iterative=True, bounded=True)


def one_step_attacks() -> tuple[str, ...]:
    """One-step white-box attacks (FGSM)."""
    return attacks_where(white_box=True, iterative=False)


def black_box_attacks() -> tuple[str, ...]:
    """Attacks that do not use the attacked model's gradients (noise, transfer)."""
    return attacks_where(white_box=False)


def budget_keys(attack: str | None = None) -> tuple[str, ...]:
    """The budget hyperparameters of ``attack`` (its class's ``budget_keys``); for None or an attack outside the
    registry, those of every registered attack."""
    cls = ATTACKS.get(attack) if attack is not None else None
    if cls is not None:
        return cls.budget_keys
    return tuple(dict.fromkeys(k for c in ATTACKS.values() for k in c.budget_keys))


# ------------------------------------------------------------------------------------------------ records


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.6g}")


def make_indicator(name: str, fired: bool, value: Any, threshold: Any, detail: str, **extra: Any) -> Indicator:
    """An indicator record as the leaderboard schema wants it (numbers rounded to 6 significant digits)."""
    value = _round(value) if isinstance(value, float) else value
    threshold = _round(threshold) if isinstance(threshold, float) else threshold
    return {"name": name, "fired": bool(fired), "value": value, "threshold": threshold, "detail": detail, **extra}


# ------------------------------------------------------------------------------------------------ helpers


def _passes(res: dict, passes: int | None) -> int:
    p = res.get("passes", passes)
    if p is None:
        counts = decode_counts(res.get("per_example_correct", "")) or [1]
        p = max(1, max(counts))
    return int(p)


def per_example(res: dict, passes: int | None = None) -> list[float] | None:
    """Per-image fractions of correct predictions, or None when the result has no per-example counts."""
    text = res.get("per_example_correct")
    if not text:
        return None
    p = _passes(res, passes)
    return [c / p for c in decode_counts(text)]


def paired_gap(a: dict, b: dict, passes: int | None = None) -> tuple[float, float]:
    """``mean(p_a - p_b)`` over the test images both cover (by ``start``, default 0) and its standard error (0
    without per-example data or without common images: then the difference of the means)."""
    pa, pb = per_example(a, passes), per_example(b, passes)
    if pa is None or pb is None:
        return float(a["mean"]) - float(b["mean"]), 0.0
    sa, sb = a.get("start", 0), b.get("start", 0)
    first, stop = max(sa, sb), min(sa + len(pa), sb + len(pb))
    if stop <= first:
        return float(a["mean"]) - float(b["mean"]), 0.0
    return paired_difference(pa[first - sa:stop - sa], pb[first - sb:stop - sb])


def _margin(se: float, tolerance: float, z: float) -> float:
    return max(tolerance, z * se)


def _setting(res: dict) -> tuple:
    """What else an attack result depends on besides its hyperparameters (the ``ladder`` protocol varies these;
    results of other protocols do not record them): its images, labels and sampler."""
    return res.get("start", 0), res.get("labels", "true"), res.get("sampling")


def _name(key: str, res: dict) -> str:
    return str(res.get("attack") or key)


def _eps(res: dict) -> float | None:
    eps = (res.get("hyperparameters") or {}).get("eps")
    return float(eps) if isinstance(eps, (int, float)) else None


def _bounded_adversarial(results: dict[str, dict], names: Iterable[str] | None = None) -> dict[str, dict]:
    names = None if names is None else set(names)
    return {k: r for k, r in results.items() if r.get("kind") == "adversarial" and r.get("bounded", True)
            and (names is None or _name(k, r) in names)}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


# ------------------------------------------------------------------------------------- from results


def unbounded_attack_failure(results: dict[str, dict], max_accuracy: float = UNBOUNDED_MAX_ACCURACY
                             ) -> Indicator | None:
    """Unbounded attacks (CW, BSA without eps) must reach ~100 % success (Carlini et al. 2019): fires when one
    leaves accuracy above ``max_accuracy``."""
    unbounded = {k: r for k, r in results.items() if r.get("kind") == "adversarial" and not r.get("bounded", True)}
    if not unbounded:
        return None
    worst = max(unbounded, key=lambda k: unbounded[k]["mean"])
    fired = [k for k, r in unbounded.items() if r["mean"] > max_accuracy]
    parts = [f"{k}: accuracy {_pct(r['mean'])}" for k, r in unbounded.items()]
    detail = ("; ".join(parts) + f" under unbounded attack (must be <= {_pct(max_accuracy)}: the attack failed, "
              "e.g. masked gradients or too small a budget)") if fired else \
        "unbounded attacks reached ~100% success: " + "; ".join(parts)
    return make_indicator("unbounded_attack_failure", bool(fired), float(unbounded[worst]["mean"]),
                          float(max_accuracy), detail, attacks=sorted(unbounded))


def eps_monotonicity(results: dict[str, dict], tolerance: float = TOLERANCE, z: float = Z,
                     passes: int | None = None) -> Indicator | None:
    """Accuracy must not increase with eps (clean accuracy is eps = 0): fires when, for one attack with equal
    other hyperparameters, a larger eps gives higher accuracy than a smaller one (or than the clean images)."""
    clean = next((r for r in results.values() if r.get("kind") == "clean"), None)
    groups: dict[tuple, list[tuple[float, str]]] = {}
    for k, r in _bounded_adversarial(results).items():
        eps = _eps(r)
        if eps is None:
            continue
        rest = {h: v for h, v in (r.get("hyperparameters") or {}).items() if h not in ("eps", "alpha")}
        groups.setdefault((_name(k, r), repr(sorted(rest.items())), _setting(r)), []).append((eps, k))
    pairs = []
    for members in groups.values():
        chain = ([(0.0, None)] if clean is not None else []) + sorted(members)
        pairs += list(itertools.pairwise(chain))
    if not pairs:
        return None
    worst_gap, bad, involved = float("-inf"), [], set()
    for (e_small, k_small), (e_large, k_large) in pairs:
        if e_large == e_small:
            continue
        small = clean if k_small is None else results[k_small]
        gap, se = paired_gap(results[k_large], small, passes)
        involved |= {k for k in (k_small, k_large) if k is not None}
        worst_gap = max(worst_gap, gap)
        if gap > _margin(se, tolerance, z):
            bad.append(f"{k_large} (eps {e_large:g}) accuracy {_pct(results[k_large]['mean'])} > "
                       f"{k_small or 'clean'} (eps {e_small:g}) {_pct(small['mean'])}")
    if not involved:
        return None
    detail = ("accuracy increases with eps: " + "; ".join(bad)) if bad else \
        "accuracy does not increase with eps (clean = eps 0)"
    return make_indicator("accuracy_increases_with_eps", bool(bad), worst_gap, float(tolerance), detail,
                          attacks=sorted(involved))


def _weaker_than(results: dict[str, dict], weak: Sequence[str], strong: Sequence[str], name: str, what: str,
                 quiet: str, tolerance: float, z: float, passes: int | None) -> Indicator | None:
    """Fires when a ``weak`` attack beats the strongest ``strong`` attack of the same eps."""
    weak_r, strong_r = _bounded_adversarial(results, weak), _bounded_adversarial(results, strong)
    worst_gap, bad, involved = float("-inf"), [], set()
    for kw, rw in weak_r.items():
        same = [k for k, r in strong_r.items() if _eps(r) == _eps(rw)]
        if not same:
            continue
        ks = min(same, key=lambda k: strong_r[k]["mean"])
        gap, se = paired_gap(strong_r[ks], rw, passes)
        involved |= {kw, ks}
        worst_gap = max(worst_gap, gap)
        if gap > _margin(se, tolerance, z):
            bad.append(f"{kw} accuracy {_pct(rw['mean'])} < {ks} {_pct(strong_r[ks]['mean'])}")
    if not involved:
        return None
    detail = (f"{what}: " + "; ".join(bad)) if bad else quiet
    return make_indicator(name, bool(bad), worst_gap, float(tolerance), detail, attacks=sorted(involved))


def black_box_stronger(results: dict[str, dict], tolerance: float = TOLERANCE, z: float = Z,
                       passes: int | None = None, black_box: Sequence[str] | None = None,
                       white_box: Sequence[str] | None = None) -> Indicator | None:
    """Black-box attacks (noise, transfer) must not beat the strongest white-box iterative attack (same eps).

    The attack names default to :func:`black_box_attacks` and :func:`white_box_iterative_attacks`."""
    weak = black_box_attacks() if black_box is None else black_box
    strong = white_box_iterative_attacks() if white_box is None else white_box
    return _weaker_than(results, weak, strong, "black_box_stronger_than_white_box",
                        "black-box attacks beat every white-box gradient attack (gradient masking?)",
                        "no black-box attack beat the strongest white-box gradient attack", tolerance, z, passes)


def one_step_stronger(results: dict[str, dict], tolerance: float = TOLERANCE, z: float = Z,
                      passes: int | None = None, one_step: Sequence[str] | None = None,
                      iterative: Sequence[str] | None = None) -> Indicator | None:
    """One-step attacks (FGSM) must not beat the strongest iterative attack (same eps).

    The attack names default to :func:`one_step_attacks` and :func:`white_box_iterative_attacks`."""
    weak = one_step_attacks() if one_step is None else one_step
    strong = white_box_iterative_attacks() if iterative is None else iterative
    return _weaker_than(results, weak, strong, "one_step_stronger_than_iterative",
                        "one-step attacks beat every iterative attack (failed optimisation?)",
                        "no one-step attack beat the strongest iterative attack", tolerance, z, passes)


def _budget(key: str, r: dict) -> dict[str, float]:
    hp = r.get("hyperparameters") or {}
    return {k: float(hp[k]) for k in budget_keys(_name(key, r)) if isinstance(hp.get(k), (int, float))}


def budget_convergence(results: dict[str, dict], tolerance: float = TOLERANCE, z: float = Z,
                       passes: int | None = None) -> Indicator | None:
    """More steps / EOT samples / restarts must not lower accuracy further (the attack has converged): fires when
    two results of one attack differ only in budget and the larger budget is significantly stronger."""
    groups: dict[tuple, list[str]] = {}
    for k, r in results.items():
        if r.get("kind") != "adversarial" or not _budget(k, r):
            continue
        keys = budget_keys(_name(k, r))
        rest = {h: v for h, v in (r.get("hyperparameters") or {}).items() if h not in keys}
        groups.setdefault((_name(k, r), repr(sorted(rest.items())), _setting(r)), []).append(k)
    worst_gap, bad, involved = float("-inf"), [], set()
    for members in groups.values():
        for ka in members:
            for kb in members:
                ba, bb = _budget(ka, results[ka]), _budget(kb, results[kb])
                if ba.keys() != bb.keys() or ba == bb or any(bb[k] < ba[k] for k in ba):
                    continue  # kb must have at least ka's budget everywhere and more somewhere
                gap, se = paired_gap(results[ka], results[kb], passes)
                involved |= {ka, kb}
                worst_gap = max(worst_gap, gap)
                if gap > _margin(se, tolerance, z):
                    bad.append(f"{kb} accuracy {_pct(results[kb]['mean'])} < {ka} {_pct(results[ka]['mean'])}")
    if not involved:
        return None
    detail = ("a larger budget still lowers accuracy (not converged): " + "; ".join(bad)) if bad else \
        "larger budgets do not lower accuracy further"
    return make_indicator("attack_not_converged", bool(bad), worst_gap, float(tolerance), detail,
                          attacks=sorted(involved))


def silent_successes(results: dict[str, dict], tolerance: float = TOLERANCE, passes: int | None = None
                     ) -> Indicator | None:
    """:func:`silent_success` of every result that recorded its attack path (``path_adversarial``: one ``0``/``1``
    per image, whether the attack met an adversarial point for it, its ``last_info``): fires when, for one attack,
    more than ``tolerance`` of the images were adversarial on the path while the returned point is classified
    correctly in every scored prediction. None when no result recorded its path."""
    found, silent = {}, {}
    for key, r in results.items():
        path = r.get("path_adversarial")
        final = per_example(r, passes)
        if r.get("kind") != "adversarial" or not path or final is None:
            continue
        found[key] = silent_success(torch.tensor([c == "1" for c in path]), torch.tensor(final), tolerance)
        silent[key] = round(found[key]["value"] * len(path))  # its count (value = count / images)
    if not found:
        return None
    fired = [k for k, i in found.items() if i["fired"]]
    worst = max(found, key=lambda k: found[k]["value"])
    parts = [f"{k}: {silent[k]} of {len(results[k]['path_adversarial'])} images" for k in (fired or found)]
    detail = (("adversarial on the attack path but returned classified correctly in every prediction (the attack "
               "lost what it found, or judged success other than the scoring does): " + "; ".join(parts)) if fired else
              "no attack lost what it found on its path: " + "; ".join(parts))
    return make_indicator("silent_success", bool(fired), found[worst]["value"], float(tolerance), detail,
                          attacks=sorted(found), silent=silent)


def from_results(results: dict[str, dict], passes: int | None = None, tolerance: float = TOLERANCE, z: float = Z,
                 max_unbounded_accuracy: float = UNBOUNDED_MAX_ACCURACY) -> list[Indicator]:
    """Every results-based indicator that applies to ``results`` (in a fixed order)."""
    found = [unbounded_attack_failure(results, max_unbounded_accuracy),
             eps_monotonicity(results, tolerance, z, passes),
             black_box_stronger(results, tolerance, z, passes),
             one_step_stronger(results, tolerance, z, passes),
             budget_convergence(results, tolerance, z, passes),
             silent_successes(results, tolerance, passes)]
    return [i for i in found if i is not None]


# ------------------------------------------------------------------------------------------ standalone


def correct_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int = 1,
                     samples: int | None = None) -> torch.Tensor:
    """Per image, the fraction of ``passes`` predictions that are correct (an LWTANet averages ``samples``
    draws per prediction, as the evaluation scores)."""
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "using"):
            counts = torch.tensor(correct_counts(model, x, y, passes, samples or model.samples))
        else:
            with torch.no_grad():
                counts = sum((model(x).argmax(1) == y).long().cpu() for _ in range(passes))
    finally:
        model.train(was_training)
    return counts.double() / passes


def silent_success(path_adversarial: torch.Tensor, final_correct: torch.Tensor, threshold: float = 0.0
                   ) -> Indicator:
    """Fires when more than ``threshold`` of the images met an adversarial point on the attack path while the
    returned point is classified correctly in every scored prediction (Pintor et al. 2022). ``final_correct`` holds
    per-image fractions of correct predictions (or booleans) of the returned points.

    Every prediction, not most: on a random model the attack's judgment of its path and the scoring are two
    independent noisy looks at a point, and a point near the boundary (right in, say, 55 % of predictions) that
    the attack judged adversarial is scored mostly right about half the time without anything being lost (118 of
    10,000 images under FGSM on ``lwta_ibp_softmax``, 10 predictions each, against 7 right in all 10). A lost
    success returns a point the model gets right, the clean image for instance, which is right in every
    prediction; for a deterministic model both rules are the same."""
    path = path_adversarial.bool().cpu()
    final = final_correct.double().cpu() >= ALWAYS_CORRECT
    n = len(path)
    silent = int((path & final).sum())
    frac = silent / n if n else 0.0
    fired = frac > threshold
    detail = (f"{silent} of {n} images were adversarial on the attack path but the returned point is classified "
              "correctly in every prediction (return the best iterate)") if fired else \
        f"no silent success ({silent} of {n} images)"
    return make_indicator("silent_success", fired, frac, float(threshold), detail)


class _PathRecorder:
    """Forward hook noting which images any full-batch model call misclassified (for attacks without
    ``last_info``; calls on other batch sizes are ignored)."""

    def __init__(self, model: nn.Module, y: torch.Tensor):
        self.y, self.adv = y, torch.zeros(len(y), dtype=torch.bool)
        self.handle = model.register_forward_hook(self)

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 2 and output.shape[0] == len(self.y):
            self.adv |= (output.detach().argmax(1) != self.y.to(output.device)).cpu()


def check_silent_success(attack: Any, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None,
                         passes: int = 1, samples: int | None = None, threshold: float = 0.0) -> Indicator:
    """Run ``attack(x, y)`` and apply :func:`silent_success`.

    The path is ``attack.last_info["path_adversarial"]`` for the attacks of this package; for any other attack
    (e.g. torchattacks) it is recorded from the full-batch calls of ``model`` (default ``attack.model``).
    """
    model = model if model is not None else attack.model
    recorder = _PathRecorder(model, y)
    try:
        x_adv = attack(x, y)
    finally:
        recorder.handle.remove()
    info = getattr(attack, "last_info", None) or {}
    path = info.get("path_adversarial", recorder.adv)
    return silent_success(path, correct_fraction(model, x_adv, y, passes, samples), threshold)


def doubled_budget(params: dict[str, Any], factor: int = 2, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """``params`` with every budget hyperparameter (``keys``, default :func:`budget_keys` of every attack: steps,
    EOT samples, ...) multiplied by ``factor``."""
    keys = set(budget_keys() if keys is None else keys)
    return {k: (int(v * factor) if k in keys and isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in params.items()}


@dataclass(frozen=True)
class ConvergenceSettings:
    """How :func:`check_convergence` reruns an attack: with ``factor`` times its budget, on the first ``n_images``
    images (all: None), scoring ``passes`` predictions of ``samples`` draws per image, attacks seeded with
    ``seed``; it fires when the gap exceeds ``tolerance`` and ``z`` standard errors."""

    factor: int = 2
    n_images: int | None = None
    passes: int = 1
    samples: int | None = None
    seed: int = 0
    tolerance: float = TOLERANCE
    z: float = Z


def check_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, params: dict[str, Any],
                      settings: ConvergenceSettings | None = None) -> Indicator:
    """Rerun ``attack`` with ``settings.factor`` times its budget (steps, EOT samples, ...; defaults filled in from
    the attack) on the first ``settings.n_images`` images: fires when the larger budget lowers accuracy
    significantly."""
    s = settings or ConvergenceSettings()
    x, y = (x, y) if s.n_images is None else (x[:s.n_images], y[:s.n_images])
    base = build_attack(attack, model, **params)
    keys = type(base).budget_keys
    budget = {k: v for k, v in base.hparams.items() if k in keys and isinstance(v, int)}
    if not budget:
        raise ValueError(f"attack {attack!r} has no budget hyperparameter ({', '.join(keys) or 'none'}) to "
                         "increase")
    bigger = build_attack(attack, model, **{**params, **doubled_budget(budget, s.factor, keys)})
    scores = []
    for a in (base, bigger):
        torch.manual_seed(s.seed)
        x_adv = a(x, y)
        torch.manual_seed(s.seed + 1)
        scores.append(correct_fraction(model, x_adv, y, s.passes, s.samples))
    gap, se = paired_difference(scores[0].tolist(), scores[1].tolist())
    fired = gap > _margin(se, s.tolerance, s.z)
    doubled = ", ".join(f"{k} {v} -> {v * s.factor}" for k, v in budget.items())
    detail = (f"{attack}: accuracy {_pct(float(scores[0].mean()))} -> {_pct(float(scores[1].mean()))} with {doubled} "
              f"on {len(x)} images")
    detail += " (not converged: use a larger budget)" if fired else " (converged)"
    return make_indicator("attack_not_converged", fired, gap, float(s.tolerance), detail, attacks=[attack])
