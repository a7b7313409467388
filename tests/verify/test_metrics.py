"""The logit comparison behind every verdict, against hand computations and numpy."""

from __future__ import annotations


import numpy as np
import pytest

from alexnet_deploy.verify.metrics import compare_logits


def test_metrics_against_hand_computed_values():
    ref = np.array([[1.0, 2.0, 4.0], [0.0, -3.0, 1.0]])
    out = np.array([[1.0, 2.5, 4.0], [0.0, -3.0, 1.3]])
    c = compare_logits(out, ref)
    np.testing.assert_allclose(c.abs_err, [0.5, 0.3])
    np.testing.assert_allclose(c.rel_err, [0.5 / 4, 0.3 / 3])
    cos0 = (1 + 5 + 16) / (np.linalg.norm(out[0]) * np.linalg.norm(ref[0]))
    assert c.cosine[0] == pytest.approx(cos0)
    assert c.summary()["max_rel_err"] == pytest.approx(0.125) and c.worst_sample == 0

def test_top_k_agreement_counts_flips_but_not_exact_ties():
    ref = np.array([[0.0, 0.0, 5.0, 1.0], [3.0, 2.9, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = np.array([[0.0, 0.0, 5.0, 1.0], [2.9, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    c = compare_logits(out, ref)
    assert list(c.top1) == [True, False, True]  # row 3: all tied, any argmax agrees
    assert c.cosine[2] == 1.0  # both all-zero

def test_tied_candidate_logits_count_as_argmax_does():
    """INT8 logits tie often: the candidate's top-1 is its first maximal class, as np.argmax (and Classifier) say.

    1000 classes, so numpy's default (unstable) sort would pick another of the tied classes.
    """
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 1, (256, 1000))
    out = np.round(ref * 2) / 2  # coarse steps: many rows have several classes tied at the top
    tied = (out == out.max(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tied.sum() > 20  # the case under test occurs
    expected = out.argmax(axis=1) == ref.argmax(axis=1)
    assert not expected[tied].all() and expected[tied].any()
    np.testing.assert_array_equal(compare_logits(out, ref).top1, expected)


def test_a_gap_of_exactly_the_tie_tolerance_is_still_a_tie():
    from alexnet_deploy.verify.metrics import TIE_TOLERANCE

    ref = np.array([[1.0, 1.0 - TIE_TOLERANCE * 1.0, 0.0]])
    assert bool(compare_logits(np.array([[0.0, 1.0, 0.0]]), ref).top1[0]) is True
    below = np.array([[1.0, 1.0 - 2 * TIE_TOLERANCE, 0.0]])
    assert bool(compare_logits(np.array([[0.0, 1.0, 0.0]]), below).top1[0]) is False


def test_non_finite_output_fails_every_metric():
    c = compare_logits(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
    assert c.rel_err[0] == np.inf and c.cosine[0] == -1.0

def test_comparison_edge_cases():
    """Per-sample scales, zero and tiny references, near-ties and top-5 membership (hand values)."""
    # Rows of very different scale: every statistic is per row, not over the whole batch.
    ref = np.array([[1000.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.01, 0.02, 0.0, 0.0, 0.0, 0.0]])
    out = np.array([[1000.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.02, 0.01, 0.0, 0.0, 0.0, 0.0]])
    c = compare_logits(out, ref)
    assert list(c.top1) == [True, False]  # row 2's argmax flipped, whatever row 1's scale
    np.testing.assert_allclose(c.rel_err, [0.0, 0.01 / 0.02])  # tiny magnitudes are not floored to 1
    np.testing.assert_allclose(c.cosine, [1.0, 0.0004 / 0.0005])  # nor are tiny norms
    # A zero reference row: equal candidate -> 0, any difference (even < 1) -> inf; cosine 0 unless both zero.
    c = compare_logits(np.array([[0.0, 0.0], [0.5, 0.0]]), np.zeros((2, 2)))
    assert list(c.rel_err) == [0.0, np.inf]
    assert list(c.cosine) == [1.0, 0.0]
    # NaN in one sample fails only that sample.
    c = compare_logits(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.array([[1.0, 1.0], [1.0, 2.0]]))
    assert list(c.rel_err) == [np.inf, 0.0] and c.cosine[0] == -1.0 and c.cosine[1] == pytest.approx(1.0)
    # Near-ties: within 1e-6 of the row's magnitude counts as a tie, beyond it as a flip.
    big = np.array([[100.0, 100.0 - 5e-5, 0.0]])
    assert compare_logits(np.array([[0.0, 1.0, 0.0]]), big).top1[0]  # 5e-5 < 1e-6 * 100
    small = np.array([[1e-3, 1e-3 - 5e-7, 0.0]])
    assert not compare_logits(np.array([[0.0, 1.0, 0.0]]), small).top1[0]  # 5e-7 > 1e-6 * 1e-3
    # Top-5 is five classes: the candidate's sixth choice does not matter.
    ref = np.arange(10.0)[None, ::-1].copy()  # class 0 highest
    out = np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 0.0, 0.0, 0.0, 0.0, 4.5]])  # 6th choice: class 9 (ref's lowest)
    assert compare_logits(out, ref).top5[0]
    # float32 logits are compared in float64: identical vectors give cosine 1 exactly enough,
    # and large logits do not overflow to NaN.
    x = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    assert np.abs(compare_logits(x, x).cosine - 1.0).max() <= 1e-12
    huge = (x * np.float32(1e20)).astype(np.float32)
    assert np.abs(compare_logits(huge, huge).cosine - 1.0).max() <= 1e-12
    with pytest.raises(ValueError, match="logit shapes differ"):
        compare_logits(np.zeros((1, 3)), np.zeros((1, 4)))

def test_summary_and_worst_sample_against_numpy():
    ref = np.random.default_rng(1).standard_normal((7, 10))
    out = ref + np.random.default_rng(2).standard_normal((7, 10)) * np.linspace(0.01, 1.0, 7)[:, None]
    c = compare_logits(out, ref)
    rel = np.abs(out - ref).max(axis=1) / np.abs(ref).max(axis=1)
    cos = (out * ref).sum(axis=1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    top1 = out.argmax(axis=1) == ref.argmax(axis=1)
    top5 = [set(np.argsort(-o)[:5]) <= set(np.argsort(-r)[:5]) for o, r in zip(out, ref)]
    assert c.summary() == pytest.approx({
        "max_abs_err": np.abs(out - ref).max(), "max_rel_err": rel.max(), "min_cosine": cos.min(),
        "top1_agreement": top1.mean(), "top5_agreement": np.mean(top5), "samples": 7,
    })
    assert c.worst_sample == int(np.argmax(rel)) and c.samples == 7
    empty = compare_logits(np.zeros((0, 4)), np.zeros((0, 4)))
    assert empty.summary() == {"max_abs_err": 0.0, "max_rel_err": 0.0, "min_cosine": 1.0, "top1_agreement": 1.0, "top5_agreement": 1.0, "samples": 0}
    assert empty.worst_sample == -1

def test_tensor_rel_err_hand_values():
    from alexnet_deploy.verify.metrics import tensor_rel_err

    ref = np.array([[2.0, -4.0], [1.0, 0.0]], np.float32)
    assert tensor_rel_err(ref + np.float32(0.5), ref) == pytest.approx(0.5 / 4)
    assert tensor_rel_err(ref, ref) == 0.0
    assert tensor_rel_err(ref[:1], ref) == np.inf  # shapes differ
    assert tensor_rel_err(np.array([np.inf, 1.0]), np.array([1.0, 1.0])) == np.inf
    assert tensor_rel_err(np.zeros(3), np.zeros(3)) == 0.0
    assert tensor_rel_err(np.array([0.0, 1e-3, 0.0]), np.zeros(3)) == np.inf  # any error on a zero tensor
    assert tensor_rel_err(np.zeros((0,)), np.zeros((0,))) == 0.0
    # float32 inputs: the difference is taken in float64 (1 + 2**-23 - 1 is not lost)
    a, b = np.array([1.0 + 2.0 ** -23], np.float32), np.array([1.0], np.float64)
    assert tensor_rel_err(a, b) == pytest.approx(2.0 ** -23)


def test_criteria_per_precision():
    from alexnet_deploy.verify.parity import THRESHOLDS, failed_criteria

    assert failed_criteria(THRESHOLDS["fp32"], 5e-5, 0.999999, 1.0) == []
    assert len(failed_criteria(THRESHOLDS["fp32"], 2e-4, 0.999999, 1.0)) == 1
    assert failed_criteria(THRESHOLDS["int8"], 0.3, 0.98, 0.97) == []  # INT8 is not held to FP32's error bound
    assert any("top-1" in f for f in failed_criteria(THRESHOLDS["int8"], 0.3, 0.98, 0.90))
    assert failed_criteria(THRESHOLDS["fp16"], 0.0, float("nan"), 1.0)  # NaN never passes
