"""How sure is a number? Intervals for accuracies and for the difference between two models.

Every figure the kit reports about questions is a mean of per-question rows (1 = right, 0 = wrong).
Two models asked the SAME questions give paired rows, and the honest comparison uses the pairing:
  * `bootstrap_ci(rows)`: a percentile bootstrap interval of one model's accuracy;
  * `paired_bootstrap(a, b)`: an interval of the difference b - a, resampling questions (the pair
    stays together), so the noise of the question set is counted once, not twice;
  * `mcnemar(a, b)`: the exact McNemar test: of the questions where the models disagree, could
    the split between "only a right" and "only b right" be a fair coin?
With `groups` (e.g. the country of each question) whole groups are resampled: questions about the
same country are not independent, and the interval widens to say so.

Example:
    >>> lo, hi = bootstrap_ci([0, 1], confidence=0.4)["ci"]
    >>> lo, hi               # the resampled means are 0, 0.5, 0.5, 1: the middle 40% is 0.5
    (0.5, 0.5)
    >>> round(mcnemar([1, 1, 1, 0], [0, 0, 1, 0])["p_value"], 3)   # 2 discordant pairs, both for a
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _grouped(values: Sequence[Sequence[float]], groups: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums of each value list (G, k) and per-group row counts (G,); one group per row without `groups`."""
    x = np.asarray(values, dtype=float).T  # (n, k)
    if groups is None:
        return x, np.ones(len(x))
    if len(groups) != len(x):
        raise ValueError(f"{len(groups)} group labels for {len(x)} rows: give one label per row")
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    idx = np.array([keys[g] for g in groups])
    sums = np.zeros((len(keys), x.shape[1]))
    np.add.at(sums, idx, x)
    return sums, np.bincount(idx, minlength=len(keys)).astype(float)


def _resample(sums: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) means of resampled groups (drawn with replacement, as many as there are)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(n_boot, len(counts)))  # (B, G)
    return sums[draws].sum(1) / counts[draws].sum(1)[:, None]  # (B, k)


def _check(rows: Sequence, name: str) -> None:
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: an interval needs at least one row")


def bootstrap_ci(rows: Sequence[float], groups: Sequence | None = None, *, confidence: float = 0.95,
                 n_boot: int = 4000, seed: int = 0) -> dict:
    """Percentile bootstrap interval of the mean of `rows` (e.g. 0/1 per question).

    Returns {"mean", "ci": (lo, hi), "confidence", "n", "groups"}.

    Example:
        >>> bootstrap_ci([1, 1, 1, 1])["ci"]
        (1.0, 1.0)
    """
    _check(rows, "rows")
    sums, counts = _grouped([rows], groups)
    means = _resample(sums, counts, n_boot, seed)[:, 0]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail], method="nearest")
    return {"mean": float(np.mean(rows)), "ci": (float(lo), float(hi)), "confidence": confidence, "n": len(rows),
            "groups": len(counts)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], groups: Sequence | None = None, *,
                     confidence: float = 0.95, n_boot: int = 4000, seed: int = 0) -> dict:
    """Interval of mean(b) - mean(a) for paired rows (the same questions, in the same order).

    Returns {"a", "b", "diff", "ci": (lo, hi), "p_worse": share of resamples where b <= a, ...}.
    The difference is "real" at this confidence when the interval excludes 0.

    Example:
        >>> paired_bootstrap([0, 0, 1, 1], [1, 1, 1, 1])["diff"]
        0.5
    """
    _check(a, "a")
    if len(a) != len(b):
        raise ValueError(f"paired rows need the same questions: {len(a)} rows in a, {len(b)} in b")
    sums, counts = _grouped([a, b], groups)
    means = _resample(sums, counts, n_boot, seed)
    diffs = means[:, 1] - means[:, 0]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail], method="nearest")
    ma, mb = float(np.mean(a)), float(np.mean(b))
    return {"a": ma, "b": mb, "diff": mb - ma, "ci": (float(lo), float(hi)), "confidence": confidence,
            "p_worse": float(np.mean(diffs <= 0)), "n": len(a), "groups": len(counts)}


def mcnemar(a: Sequence[int], b: Sequence[int]) -> dict:
    """Exact (binomial) two-sided McNemar test on paired 0/1 rows.

    `only_a`: questions a gets right and b wrong; `only_b`: the reverse. Under "no difference" each
    discordant question is a fair coin, so p = P(a split at least this uneven).

    Example:
        >>> mcnemar([1, 0, 1], [1, 0, 1])["p_value"]
        1.0
    """
    if len(a) != len(b):
        raise ValueError(f"paired rows need the same questions: {len(a)} rows in a, {len(b)} in b")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


def describe(diff: dict, what: str = "accuracy") -> str:
    """One line about a `paired_bootstrap` result: the change, its interval, and whether it is real.

    Example:
        >>> describe({"a": 0.5, "b": 0.6, "diff": 0.1, "ci": (0.02, 0.18), "confidence": 0.95})
        'accuracy 0.500 -> 0.600: +0.100, 95% interval [+0.020, +0.180]: a real gain'
    """
    lo, hi = diff["ci"]
    verdict = "a real gain" if lo > 0 else "a real loss" if hi < 0 else "within the noise (the interval holds 0)"
    return (f"{what} {diff['a']:.3f} -> {diff['b']:.3f}: {diff['diff']:+.3f}, "
            f"{diff['confidence']:.0%} interval [{lo:+.3f}, {hi:+.3f}]: {verdict}")
