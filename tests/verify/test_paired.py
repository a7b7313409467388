"""Paired accuracy intervals, McNemar's test and the flip rate, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alexnet_deploy.verify.paired import accuracy_change, budget_verdict, changed_images, flip_rate, mcnemar_p


def _pairs(n, broken, fixed, right=0.8):
    """Reference/candidate correctness over ``n`` images with exactly ``broken`` and ``fixed`` changes."""
    reference = np.zeros(n, bool)
    reference[: int(right * n)] = True
    candidate = reference.copy()
    candidate[:broken] = False  # right -> wrong
    candidate[n - fixed:] = True  # wrong -> right
    return reference, candidate


def test_the_interval_matches_the_normal_approximation_on_many_images():
    n, broken, fixed = 20_000, 300, 100
    change = accuracy_change(*_pairs(n, broken, fixed))
    assert change["drop_points"] == pytest.approx(100 * (broken - fixed) / n) and (change["broken"], change["fixed"]) == (broken, fixed)
    d = np.r_[np.ones(broken), -np.ones(fixed), np.zeros(n - broken - fixed)]  # the paired differences, computed here
    half = 100 * 1.959964 * d.std() / math.sqrt(n)
    low, high = change["ci_points"]
    assert low == pytest.approx(change["drop_points"] - half, abs=0.02) and high == pytest.approx(change["drop_points"] + half, abs=0.02)


def test_no_changed_image_still_gives_an_interval_that_holds_zero():
    change = accuracy_change(*_pairs(18, 0, 0))
    low, high = change["ci_points"]
    assert low < 0 < high and change["mcnemar_p"] == 1.0
    assert budget_verdict(change, 1.0) == "uncertain"  # 18 images cannot show a drop under 1 point
    assert budget_verdict(accuracy_change(*_pairs(5000, 10, 8)), 1.0) == "within"
    assert budget_verdict(accuracy_change(*_pairs(500, 30, 0)), 1.0) == "over"


@pytest.mark.parametrize("broken,fixed", [(6, 0), (6, 2), (10, 10), (0, 3), (25, 40)])
def test_mcnemar_is_the_exact_binomial_test(broken, fixed):
    total = broken + fixed
    probabilities = [math.comb(total, k) / 2 ** total for k in range(total + 1)]
    observed = probabilities[min(broken, fixed)]
    expected = min(1.0, sum(p for p in probabilities if p <= observed + 1e-15))  # two-sided: every split as unlikely or less
    assert mcnemar_p(broken, fixed) == pytest.approx(expected, rel=1e-9)


def test_flip_rate_is_the_wilson_interval():
    reference = np.zeros(18, int)
    result = flip_rate(reference, reference)
    assert result["count"] == 0 and result["ci"][0] == 0.0 and result["ci"][1] == pytest.approx(0.1759, abs=1e-4)  # Wilson, 0 of 18
    candidate = reference.copy()
    candidate[:10] = 1
    result = flip_rate(reference, candidate)  # 10 of 18: centre and half width by the formula, written out here
    z, p, n = 1.959964, 10 / 18, 18
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert result["ci"] == pytest.approx([centre - half, centre + half], abs=1e-5)


def test_changed_images_lists_each_change_in_order():
    labels = ["cat", "dog", "fox"]
    rows = changed_images(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], np.array([0, 1, 2, 0]), np.array([0, 2, 2, 1]), labels, truth=np.array([0, 1, 1, 1]))
    assert rows == [{"image": "b.jpg", "reference": "dog", "candidate": "fox", "truth": "dog"}, {"image": "d.jpg", "reference": "cat", "candidate": "dog", "truth": "dog"}]
