"""Numbers that say how far two sets of logits are apart (numpy only).

Definitions (per sample, then aggregated over samples):
- absolute error: ``max |out - ref|``;
- relative error: absolute error over the reference's magnitude ``max |ref|``;
- cosine similarity of the two logit vectors (1.0 when both are all zero);
- top-k agreement: every class in the candidate's top-k is among the reference's
  top-k, where classes tied with the reference's k-th value (within 1e-6 of its
  magnitude) count as in it, so exact ties (e.g. ReLU'd logits at 0) are not flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TIE_TOLERANCE = 1e-6


@dataclass
class LogitComparison:
    """Per-sample differences between candidate and reference logits."""

    abs_err: np.ndarray
    rel_err: np.ndarray
    cosine: np.ndarray
    top1: np.ndarray
    top5: np.ndarray

    @property
    def samples(self) -> int:
        return int(self.abs_err.shape[0])

    @property
    def worst_sample(self) -> int:
        return int(np.argmax(self.rel_err)) if self.samples else -1

    def summary(self) -> dict:
        if not self.samples:
            return {"max_abs_err": 0.0, "max_rel_err": 0.0, "min_cosine": 1.0, "top1_agreement": 1.0, "top5_agreement": 1.0, "samples": 0}
        return {
            "max_abs_err": float(self.abs_err.max()),
            "max_rel_err": float(self.rel_err.max()),
            "min_cosine": float(self.cosine.min()),
            "top1_agreement": float(self.top1.mean()),
            "top5_agreement": float(self.top5.mean()),
            "samples": self.samples,
        }


def _topk_agrees(candidate: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    k = min(k, reference.shape[1])
    scale = np.maximum(np.abs(reference).max(axis=1), 1e-30)
    kth = np.sort(reference, axis=1)[:, -k]
    chosen = np.argsort(-candidate, axis=1, kind="stable")[:, :k]
    chosen_ref = np.take_along_axis(reference, chosen, axis=1)
    return np.all(chosen_ref >= (kth - TIE_TOLERANCE * scale)[:, None], axis=1)


def compare_logits(candidate: np.ndarray, reference: np.ndarray) -> LogitComparison:
    """Compare two (N, classes) arrays sample by sample."""
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ValueError(f"logit shapes differ: {candidate.shape} vs {reference.shape}")
    diff = np.abs(candidate - reference)
    abs_err = diff.max(axis=1)
    magnitude = np.abs(reference).max(axis=1)
    rel_err = np.where(magnitude > 0, abs_err / np.maximum(magnitude, 1e-30), np.where(abs_err > 0, np.inf, 0.0))
    norms = np.linalg.norm(candidate, axis=1) * np.linalg.norm(reference, axis=1)
    dots = (candidate * reference).sum(axis=1)
    both_zero = (np.linalg.norm(candidate, axis=1) == 0) & (np.linalg.norm(reference, axis=1) == 0)
    cosine = np.where(both_zero, 1.0, dots / np.maximum(norms, 1e-300))
    non_finite = ~np.isfinite(candidate).all(axis=1)
    rel_err[non_finite] = np.inf
    cosine[non_finite] = -1.0
    return LogitComparison(abs_err, rel_err, cosine, _topk_agrees(candidate, reference, 1), _topk_agrees(candidate, reference, 5))


def tensor_rel_err(candidate: np.ndarray, reference: np.ndarray) -> float:
    """``max |a - b| / max |b|`` over a whole tensor (inf when shapes differ or values are not finite)."""
    if candidate.shape != reference.shape or not np.isfinite(candidate).all():
        return float("inf")
    scale = float(np.abs(reference).max()) if reference.size else 0.0  # empty tensors: equal, error 0
    err = float(np.abs(candidate.astype(np.float64) - reference).max()) if candidate.size else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else float("inf"))
