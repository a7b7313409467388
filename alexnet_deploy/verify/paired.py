"""How sure a measured accuracy change is: paired intervals on the same images, and which images changed.

A variant and FP32 are scored on the same images, so their difference is paired: per image it is
+1 (FP32 right, the variant wrong), -1 (the reverse) or 0. The interval of the drop is a paired
bootstrap of that difference; as it takes three values, resampling is drawing their counts from
a multinomial, O(resamples) whatever the image count (with half an image of pseudo-count on
each kind of change, so that an interval never collapses to zero width). McNemar's exact test says how
likely so many one-way changes are by chance. Without labels, the top-1 flip rate (the share of
images whose top-1 changed) gets a Wilson interval.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 20_000


def accuracy_change(reference_correct, candidate_correct, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The top-1 drop in points (reference minus candidate) with its paired bootstrap interval.

    Returns ``{"n", "drop_points", "ci_points": [low, high], "confidence", "broken", "fixed", "mcnemar_p"}``:
    ``broken`` images the reference got right and the candidate wrong, ``fixed`` the reverse.
    """
    reference = np.asarray(reference_correct, dtype=bool)
    candidate = np.asarray(candidate_correct, dtype=bool)
    n = len(reference)
    if n == 0 or len(candidate) != n:
        raise ValueError("accuracy_change needs two equally long, non-empty lists")
    broken = int((reference & ~candidate).sum())
    fixed = int((~reference & candidate).sum())
    # Half an image of each kind of change is added to the resampled proportions (Jeffreys'
    # pseudo-counts): with no image changed, a plain bootstrap gives the interval [0, 0], as if
    # 18 images proved that nothing ever changes.
    p_broken, p_fixed = (broken + 0.5) / (n + 1), (fixed + 0.5) / (n + 1)
    counts = np.random.default_rng(seed).multinomial(n, [p_broken, p_fixed, 1.0 - p_broken - p_fixed], size=resamples)
    drops = 100.0 * (counts[:, 0] - counts[:, 1]) / n
    tail = 100.0 * (1 - confidence) / 2
    low, high = np.percentile(drops, [tail, 100.0 - tail])
    return {"n": n, "drop_points": 100.0 * (broken - fixed) / n, "ci_points": [float(low), float(high)], "confidence": confidence,
            "broken": broken, "fixed": fixed, "mcnemar_p": mcnemar_p(broken, fixed)}


def mcnemar_p(broken: int, fixed: int) -> float:
    """Exact two-sided McNemar p-value: the binomial(broken + fixed, 1/2) probability of a split at least this uneven."""
    total = broken + fixed
    if total == 0:
        return 1.0
    smaller = min(broken, fixed)
    log_half = total * math.log(0.5)
    tail = sum(math.exp(math.lgamma(total + 1) - math.lgamma(k + 1) - math.lgamma(total - k + 1) + log_half) for k in range(smaller + 1))
    return min(1.0, 2.0 * tail)


def flip_rate(reference_top1, candidate_top1, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Share of images whose top-1 class changed, with its Wilson score interval (no labels needed)."""
    reference = np.asarray(reference_top1)
    candidate = np.asarray(candidate_top1)
    n = len(reference)
    if n == 0 or len(candidate) != n:
        raise ValueError("flip_rate needs two equally long, non-empty lists")
    flips = int((reference != candidate).sum())
    z = _normal_quantile(0.5 + confidence / 2)
    share = flips / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"n": n, "count": flips, "rate": share, "ci": [max(0.0, centre - half), min(1.0, centre + half)], "confidence": confidence}


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (bisection on erf: no scipy)."""
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = (low + high) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def budget_verdict(change: dict[str, Any], max_drop: float) -> str:
    """'within' (the whole interval is inside the budget), 'uncertain' (the drop is, its interval's top is not) or 'over'."""
    if change["drop_points"] > max_drop + 1e-9:
        return "over"
    return "within" if change["ci_points"][1] <= max_drop + 1e-9 else "uncertain"


def changed_images(names: Sequence[str], reference_top1, candidate_top1, labels: Sequence[str], truth=None, limit: int = 100) -> list[dict[str, Any]]:
    """The images whose top-1 changed (at most ``limit``, in input order): name, reference and candidate class, and the truth when known."""
    rows = []
    for index in np.flatnonzero(np.asarray(reference_top1) != np.asarray(candidate_top1))[:limit]:
        row = {"image": str(names[index]), "reference": labels[int(reference_top1[index])], "candidate": labels[int(candidate_top1[index])]}
        if truth is not None:
            row["truth"] = labels[int(truth[index])]
        rows.append(row)
    return rows


def signed(value: float, digits: int = 1) -> str:
    """``value`` with its sign, never '-0.0' (a drop of -0.04 points prints as +0.0, not -0.0)."""
    return f"{value:+.{digits}f}" if round(value, digits) != 0 else f"+{0:.{digits}f}"
