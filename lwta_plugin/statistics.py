"""Statistics of random models: seeds, per-image counts, their storage form, confidence intervals, worst case.

The image is the statistical unit everywhere in this package. An image is predicted ``passes`` times (each
prediction averaging ``samples`` stochastic forward passes, the paper's inference rule); its *count* is how many
of those predictions were correct (or, for the paper's "Random" score, had low confidence), ``p_i = count /
passes``, and accuracy is the mean of ``p_i`` with the interval of :func:`confidence_interval`. Counts are stored
as one base-36 digit per image (:func:`encode_counts`), which is how leaderboard entries keep per-image results.

Everything that scores, summarises or seeds (the evaluation runner, model cards, plots, the attack-failure
indicators, the Random score) uses this module; it depends on torch only.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

SCORE_CHUNK = 100  # images per scoring forward pass (fixed: part of what makes runs reproducible)
MAX_PASSES = 35  # per-image counts are stored as one base-36 digit each
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------------------------------------------
# seeds


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from JSON-serialisable parts, identical across processes and Python versions."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random (attacks may draw from any of them)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ---------------------------------------------------------------------------------------------------------------
# numbers as stored


def round_stat(v: float) -> float:
    """Round a statistic for JSON (12 significant digits: stable across platforms' last-bit differences)."""
    return float(f"{v:.12g}")


def median(sorted_values: Sequence[float]) -> float:
    """Median of already sorted values, rounded with :func:`round_stat`."""
    n = len(sorted_values)
    mid = n // 2
    return round_stat(sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2)


def encode_counts(counts: Iterable[int], passes: int) -> str:
    """Per-image counts (0..passes, passes <= 35) as one base-36 digit each."""
    if not 1 <= passes <= MAX_PASSES:
        raise ValueError(f"passes must be in 1..{MAX_PASSES} to encode per-example counts, got {passes}")
    out = []
    for c in counts:
        c = int(c)
        if not 0 <= c <= passes:
            raise ValueError(f"count {c} outside 0..{passes}")
        out.append(_DIGITS[c])
    return "".join(out)


def decode_counts(text: str) -> list[int]:
    """Inverse of :func:`encode_counts`."""
    try:
        return [_DIGITS.index(ch) for ch in text]
    except ValueError:
        raise ValueError(f"per-example counts must be base-36 digits (0-9, a-z), got {text[:40]!r}...") from None


# ---------------------------------------------------------------------------------------------------------------
# intervals and summaries


def confidence_interval(p: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Interval for the mean of per-image success rates ``p_i`` (each in [0, 1]).

    Wilson score interval with the effective sample size ``mean (1 - mean) / se^2`` (``se`` = standard error of
    the mean of ``p_i``): it covers both the choice of test images and the model's randomness. ``se`` uses the
    unbiased variance, so when every ``p_i`` is 0 or 1 this is the plain Wilson interval with ``n - 1`` in place
    of ``n`` (slightly wider); all-equal ``p_i`` (zero variance) use ``n``.
    """
    n = len(p)
    if n == 0:
        raise ValueError("confidence_interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    mean = math.fsum(p) / n
    n_eff = effective_n(p)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    denom = 1 + z * z / n_eff
    centre = (mean + z * z / (2 * n_eff)) / denom
    half = z / denom * math.sqrt(mean * (1 - mean) / n_eff + z * z / (4 * n_eff * n_eff))
    return max(0.0, centre - half), min(1.0, centre + half)


def effective_n(p: Sequence[float]) -> float:
    """``mean (1 - mean) / se^2``: the number of independent 0/1 outcomes the ``p_i`` are worth (``n`` when the
    variance or the mean leaves no room for more)."""
    n = len(p)
    mean = math.fsum(p) / n
    var = math.fsum((v - mean) ** 2 for v in p) / (n - 1) if n > 1 else 0.0
    return n if var == 0.0 or mean in (0.0, 1.0) else mean * (1 - mean) / (var / n)


def summarize_counts(counts: Sequence[int], passes: int) -> dict[str, float]:
    """Mean and 95 % interval of per-image counts out of ``passes`` (see :func:`confidence_interval`)."""
    p = [c / passes for c in counts]
    lo, hi = confidence_interval(p)
    return {"mean": round_stat(math.fsum(p) / len(p)), "ci_low": round_stat(lo), "ci_high": round_stat(hi)}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of ``a_i - b_i`` over the common first images."""
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("paired_difference needs at least one pair")
    d = [x - y for x, y in zip(a[:n], b[:n])]
    mean = math.fsum(d) / n
    se = math.sqrt(math.fsum((v - mean) ** 2 for v in d) / (n - 1) / n) if n > 1 else 0.0
    return mean, se


NOT_ATTACKED = "."  # per-example placeholder of a cascade stage: the image was broken before this stage


def decode_partial(text: str) -> list[int | None]:
    """Like :func:`decode_counts`, with :data:`NOT_ATTACKED` (an image a cascade stage did not attack) as None."""
    return [None if ch == NOT_ATTACKED else c for ch, c in
            zip(text, decode_counts(text.replace(NOT_ATTACKED, "0")))]


def _per_image(result: Mapping[str, Any], field: str, first: int, stop: int) -> list[int | None]:
    """``result[field]`` for test images ``[first, stop)``: None where the result does not cover an image."""
    start = result.get("start", 0)
    values = decode_partial(result[field])
    return [values[i - start] if 0 <= i - start < len(values) else None for i in range(first, stop)]


def worst_case(results: Mapping[str, Mapping[str, Any]], passes: int, prefix: str = "",
               cover: tuple[int, int] | None = None) -> dict:
    """Per-image worst case over the clean result and every bounded adversarial attack.

    ``results[key]`` holds ``kind`` (clean | adversarial | random_score), ``bounded``, ``n_examples``,
    ``per_example_correct`` (encoded counts; :data:`NOT_ATTACKED` where a cascade stage skipped an image),
    optionally ``per_example_fresh`` (counts of the same points on fresh, independent draws) and ``start`` (index
    of its first test image, default 0), as leaderboard entries store them.

    Images: ``cover = (start, n)`` (a cascade's images; every image must have at least one result), else the test
    images that every result covers. Method: when every result has fresh counts, each image's point is *selected*
    by the lowest count on the selection draws (``per_example_correct``; ties: the result with the lowest mean
    selection count over the images it covers, i.e. the strongest, then the first in order) and
    *scored* by its fresh counts: an unbiased estimate of the selected points' accuracy (``method: "fresh"``; the
    minimum of the selection counts, biased low, is kept as ``selection``). Without fresh counts (entries written
    before they existed) it is that minimum itself, and the result has no ``method``."""
    keys = [k for k, r in results.items() if r["kind"] == "clean" or (r["kind"] == "adversarial" and r["bounded"])]
    if not keys:
        raise ValueError("worst case needs at least the clean result")
    if cover is None:
        first = max(results[k].get("start", 0) for k in keys)
        stop = min(results[k].get("start", 0) + results[k]["n_examples"] for k in keys)
        if stop <= first:
            raise ValueError(f"the results {keys} cover no common test image")
    else:
        first, stop = cover[0], cover[0] + cover[1]
    fresh = all("per_example_fresh" in results[k] for k in keys)
    sel = [_per_image(results[k], "per_example_correct", first, stop) for k in keys]
    new = [_per_image(results[k], "per_example_fresh", first, stop) for k in keys] if fresh else sel
    # ties go to the result that is strongest on its selection counts (lowest mean over the images it covers), not
    # to the first in order (FGSM and noise come early): still a choice made on the selection draws alone
    strength = [math.fsum(c for c in v if c is not None) / max(1, sum(c is not None for c in v)) for v in sel]
    low, scored, chosen = [], [], [0] * len(keys)
    for i in range(stop - first):
        options = [(sel[j][i], strength[j], j) for j in range(len(keys)) if sel[j][i] is not None]
        if not options:
            raise ValueError(f"test image {first + i}: no result covers it")
        best, _, j = min(options)
        low.append(best)
        scored.append(new[j][i])
        chosen[j] += 1
    if any(c is None for c in scored):
        raise ValueError("a result has fresh counts where it has no selection counts")
    out = {**summarize_counts(scored, passes), "n_examples": stop - first, "passes": passes,
           "attacks": [prefix + k for k in keys], "per_example_correct": encode_counts(scored, passes)}
    if fresh:
        out["method"] = "fresh"
        out["selection"] = {**summarize_counts(low, passes), "per_example_correct": encode_counts(low, passes)}
        out["selected"] = {prefix + k: n for k, n in zip(keys, chosen) if n}
    if first:
        out["start"] = first
    return out


# ---------------------------------------------------------------------------------------------------------------
# counting predictions


def _is_random(model: nn.Module) -> bool:
    # a model that does not say is treated as random: predicting it `passes` times is never wrong, only slower
    return bool(getattr(model, "stochastic", True))


@torch.no_grad()
def _count(model: nn.Module, x: torch.Tensor, passes: int, samples: int | None, hit) -> list[int]:
    counts = torch.zeros(len(x), dtype=torch.int64)
    repeat = passes if _is_random(model) else 1
    settings = model.using(samples=samples, output="logits") if hasattr(model, "using") else contextlib.nullcontext()
    with settings:
        for _ in range(repeat):
            for i in range(0, len(x), SCORE_CHUNK):
                counts[i:i + SCORE_CHUNK] += hit(model(x[i:i + SCORE_CHUNK]), slice(i, i + SCORE_CHUNK)).long().cpu()
    return (counts * (passes // repeat)).tolist()


def correct_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int,
                   samples: int | None = None) -> list[int]:
    """For each image, how many of ``passes`` predictions (each averaging ``samples`` passes for an LWTANet) are
    correct.

    A model that is deterministic (``model.stochastic`` false with its current sampling setting) is predicted
    once and counted ``passes`` times: the same result, ``passes`` times cheaper. A model that does not declare
    ``stochastic`` is predicted ``passes`` times."""
    return _count(model, x, passes, samples, lambda out, s: out.argmax(1) == y[s].to(out.device))


def low_confidence_counts(model: nn.Module, x: torch.Tensor, passes: int, samples: int | None,
                          threshold: float) -> list[int]:
    """For each image, how many of ``passes`` predictions have max class probability below ``threshold`` (the
    paper's "Random" score on noise images)."""
    return _count(model, x, passes, samples, lambda out, s: torch.softmax(out, 1).max(1).values < threshold)
