"""The leaderboard's headline: three sentences (what the paper claims, what we measure, why they differ), each
number taken from the entries, for the first screen of ``leaderboard/README.md``, ``index.html`` and
``FINDINGS.md``.

Only random models (``number_forward_passes`` > 1) with a paper number and standard training enter (the FGSM
trained ones are a separate claim of the paper), only entries that are not smoke tests, and every range is over the models that have the protocol; a sentence whose numbers are missing is left
out.
"""
from __future__ import annotations

import statistics

from .figures import robust_estimate

LITERAL, PAPER, ADAPTIVE, LADDER = "paper-literal", "paper", "adaptive", "ladder"


def _range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f} %" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f} %"


def _points(values: list[float]) -> str:
    """A change in percentage points: the median and the range."""
    return f"{statistics.median(values):.1f} points (median; {min(values):.1f} to {max(values):.1f})"


def _robust(entries: list[dict], protocol: str) -> dict[str, float]:
    """Model -> robust accuracy (%) of its ``protocol`` entry."""
    out = {}
    for e in entries:
        r = robust_estimate(e) if e["protocol"]["name"] == protocol else None
        if r is not None:
            out[e["model"]] = 100 * r["mean"]
    return out


def headline(entries: list[dict], dataset: str = "mnist") -> list[str]:
    """The three sentences for ``dataset`` (fewer when the entries lack the numbers; none without a paper
    number)."""
    random = [e for e in entries if e["dataset"] == dataset and e["number_forward_passes"] > 1
              and "reported" in e and not e["protocol"]["smoke"]
              and not e["checkpoint"]["training"].get("fgsm_eps")]
    reported = {e["model"]: float(e["reported"]) for e in random}
    if not reported:
        return []
    eps = random[0]["eps"]
    literal, paper, adaptive = (_robust(random, p) for p in (LITERAL, PAPER, ADAPTIVE))
    claim = (f"**The paper claims** that its stochastic LWTA models keep {_range(list(reported.values()))} of "
             f"{dataset.upper()} test images correctly classified under L-inf PGD at eps {eps} ({len(reported)} "
             "of its standard-trained models that we evaluated).")
    measured = []
    if literal:
        measured.append(f"{_range(list(literal.values()))} with the authors' own evaluation reproduced "
                        f"(`paper-literal`, {len(literal)} models)")
    if paper:
        measured.append(f"{_range(list(paper.values()))} under the same attacks scored honestly (`paper`: true "
                        f"labels, the best iterate, the exact sampler; {len(paper)} models)")
    if adaptive:
        measured.append(f"{_range(list(adaptive.values()))} under our strongest attacks (`adaptive`: EOT, margin "
                        f"loss, AutoAttack rand; {len(adaptive)} models)")
    lines = [claim]
    if measured:
        lines.append("**We measure** " + "; ".join(measured) + ".")
    rungs = [e["attacks"] for e in random if e["protocol"]["name"] == LADDER
             and {"literal", "best_iterate", "true_labels", "exact_sampler"} <= set(e["attacks"])]
    if rungs:
        def drop(a: str, b: str) -> str:
            return _points([100 * (r[a]["mean"] - r[b]["mean"]) for r in rungs])

        lines.append("**They differ because** the authors' PGD returns its last iterate, not the best point on its "
                     f"path (returning the best one takes off {drop('literal', 'best_iterate')}), and "
                     "their temperature-0.01 sampler masks the gradients (the paper's exact sampler takes off "
                     f"another {drop('true_labels', 'exact_sampler')}; the `ladder` protocol, one change "
                     f"per rung, {len(rungs)} models).")
    return lines
