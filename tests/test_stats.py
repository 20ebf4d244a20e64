"""Intervals and tests for paired rows, each checked against a case worked out by hand."""

import math

import pytest

from kit.engine.stats import bootstrap_ci, describe, mcnemar, paired_bootstrap


def test_bootstrap_interval_matches_the_enumerated_distribution():
    # Two rows, 0 and 1: a resample draws each row with probability 1/2, twice, so its mean is
    # 0 (1/4), 0.5 (1/2) or 1 (1/4). The middle 40% is 0.5; the middle 95% reaches both ends.
    assert bootstrap_ci([0, 1], confidence=0.4)["ci"] == (0.5, 0.5)
    assert bootstrap_ci([0, 1], confidence=0.95)["ci"] == (0.0, 1.0)
    assert bootstrap_ci([1, 1, 1])["ci"] == (1.0, 1.0)


def test_bootstrap_interval_matches_the_normal_approximation():
    # 60 right of 100: standard error sqrt(0.6 * 0.4 / 100) = 0.049, so 0.6 -/+ 1.96 * 0.049 = [0.504, 0.696].
    lo, hi = bootstrap_ci([1] * 60 + [0] * 40, n_boot=20000)["ci"]
    se = math.sqrt(0.6 * 0.4 / 100)
    assert lo == pytest.approx(0.6 - 1.96 * se, abs=0.02) and hi == pytest.approx(0.6 + 1.96 * se, abs=0.02)


def test_groups_resample_whole_countries():
    # Four questions about two countries, one all right and one all wrong: resampling countries gives
    # means 0, 0.5, 1 as in the two-row case; resampling questions one by one would give five values.
    rows, groups = [1, 1, 0, 0], ["Peru", "Peru", "Chad", "Chad"]
    grouped = bootstrap_ci(rows, groups, confidence=0.4)
    assert grouped["ci"] == (0.5, 0.5) and grouped["groups"] == 2 and grouped["n"] == 4
    assert bootstrap_ci(rows, groups)["ci"] == (0.0, 1.0)
    with pytest.raises(ValueError, match="one label per row"):
        bootstrap_ci(rows, groups[:3])


def test_paired_interval_matches_the_enumerated_distribution():
    # Per-question differences b - a are 1 and 0: the resampled mean difference is 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4, so the difference is <= 0 in about a quarter of resamples.
    out = paired_bootstrap([0, 1], [1, 1], confidence=0.4)
    assert out["diff"] == 0.5 and out["ci"] == (0.5, 0.5) and (out["a"], out["b"]) == (0.5, 1.0)
    assert out["p_worse"] == pytest.approx(0.25, abs=0.03)
    assert paired_bootstrap([0, 0, 0], [1, 1, 1])["ci"] == (1.0, 1.0)  # the same gain on every question
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap([0, 1], [1])


def test_mcnemar_matches_the_binomial_by_hand():
    # Discordant questions: a right and b wrong twice, never the reverse. Two fair coins both landing
    # the same way: p = 2 * (1/2)^2 = 0.5.
    assert mcnemar([1, 1, 1, 0], [0, 0, 1, 0]) == {"only_a": 2, "only_b": 0, "p_value": 0.5}
    # Nine against one: p = 2 * (C(10, 0) + C(10, 1)) / 2^10 = 22 / 1024.
    a, b = [1] * 9 + [0], [0] * 9 + [1]
    assert mcnemar(a, b)["p_value"] == pytest.approx(22 / 1024)
    assert mcnemar([1, 0], [1, 0])["p_value"] == 1.0  # no disagreement: no evidence of a difference


def test_describe_says_whether_the_interval_holds_zero():
    base = {"a": 0.5, "b": 0.6, "diff": 0.1, "confidence": 0.95}
    assert describe({**base, "ci": (0.02, 0.18)}).endswith("a real gain")
    assert describe({**base, "ci": (-0.02, 0.18)}).endswith("within the noise (the interval holds 0)")
    assert describe({**base, "diff": -0.1, "ci": (-0.2, -0.01)}).endswith("a real loss")
