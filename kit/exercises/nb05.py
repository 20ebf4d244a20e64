"""Notebook 05's exercises: the sweep's early-stopping rule, and a paired bootstrap interval.

The early-stop check asks the kit's own rule (`kit.engine.runs.hopeless`) for every case. The
bootstrap check compares with the reference below: resample the questions (the same ones for both
runs: paired) and take the percentiles of the mean difference. On 400 questions the resampled means
move in steps of 1/400 = 0.0025; two bootstraps of 10,000 resamples with different random draws or
percentile conventions agree within two such steps, which is the tolerance here (0.0055).

Example:
    >>> from kit.exercises import check_should_stop
    >>> def should_stop(step, max_steps, loss, first_loss, after=0.3, ratio=0.97):
    ...     return step >= after * max_steps and not loss < ratio * first_loss
    >>> bool(check_should_stop(should_stop))            # doctest: +ELLIPSIS
    should_stop: 6 of 8 cases passed
    ...
    False
"""

from __future__ import annotations

import math

import torch

from .checking import Case, CheckResult, close, first_error, run_check, same

# ----------------------------------------------------------------------------- 1: early stopping
STOP_HINT = ("stop at once if the loss is NaN or infinite (math.isfinite); otherwise stop only once "
             "step >= after * max_steps and the loss is NOT below ratio * first_loss")

STOP_CASES = [  # (what it shows, step, max_steps, loss, first loss)
    ("too early to judge: step 2 of 10, loss barely moved", 2, 10, 3.99, 4.0),
    ("step 3 of 10 (30%), loss still 99% of the first: stop", 3, 10, 3.96, 4.0),
    ("step 3 of 10, loss fell to 75%: go on", 3, 10, 3.0, 4.0),
    ("step 8 of 10, loss exactly 97% of the first: stop (not below)", 8, 10, 0.97 * 4.0, 4.0),
    ("step 50 of 100, loss rose: stop", 50, 100, 4.2, 4.0),
    ("a NaN loss at step 1: stop at once", 1, 100, float("nan"), 4.0),
    ("an infinite loss at step 1: stop at once", 1, 100, float("inf"), 4.0),
    ("step 29 of 100 (under 30%), loss rose: not yet", 29, 100, 4.5, 4.0),
]


def kit_should_stop(step: int, max_steps: int, loss: float, first_loss: float, after: float = 0.3,
                    ratio: float = 0.97) -> bool:
    """The kit's rule: `hopeless` gives a reason to stop, or None."""
    from ..engine.runs import hopeless

    return hopeless({"step": step, "max_steps": max_steps, "loss": loss}, first=first_loss, after=after,
                    ratio=ratio) is not None


def check_should_stop(fn) -> CheckResult:
    """`fn(step, max_steps, loss, first_loss, after=0.3, ratio=0.97) -> bool`: stop this run now?"""
    def case(name, step, total, loss, first):
        return Case(name, lambda f: same(bool(f(step, total, loss, first)), kit_should_stop(step, total, loss, first),
                                         what="stop"))

    return run_check("should_stop", fn, [case(*c) for c in STOP_CASES], STOP_HINT)


# ----------------------------------------------------------------------------- 2: a paired bootstrap
BOOTSTRAP_HINT = ("d = b - a per question; n_resamples times: draw len(d) question indices with replacement (the "
                  "SAME indices for both runs: that is what 'paired' means) and record the mean of d over them; "
                  "return the (1 - level) / 2 and 1 - (1 - level) / 2 percentiles of those means")


def reference_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """A paired percentile bootstrap interval for mean(b - a)."""
    d = torch.as_tensor(b, dtype=torch.float64) - torch.as_tensor(a, dtype=torch.float64)
    idx = torch.randint(0, len(d), (n_resamples, len(d)), generator=torch.Generator().manual_seed(seed))
    means = d[idx].mean(dim=1)
    tail = (1 - level) / 2
    return torch.quantile(means, tail).item(), torch.quantile(means, 1 - tail).item()


def _scores(n: int, b_only: int, a_only: int, both: int) -> tuple[list[int], list[int]]:
    """0/1 correctness of two runs on n questions: `b_only` right only for b, `a_only` only for a, `both` for both."""
    a = [0] * n
    b = [0] * n
    for i in range(n):
        if i < b_only:
            b[i] = 1
        elif i < b_only + a_only:
            a[i] = 1
        elif i < b_only + a_only + both:
            a[i] = b[i] = 1
    return a, b


def check_paired_bootstrap(fn) -> CheckResult:
    """`fn(a, b, n_resamples=10000, seed=0, level=0.95) -> (low, high)`: interval for mean(b) - mean(a)."""
    def case(name, a, b, level, atol):
        def run(f):
            got = f(list(a), list(b), n_resamples=10_000, seed=0, level=level)
            if not isinstance(got, tuple | list) or len(got) != 2:
                return f"expected (low, high), got {got!r}"
            low, high = (float(v) for v in got)
            want = reference_bootstrap(a, b, level=level)
            observed = (sum(b) - sum(a)) / len(a)
            if not (math.isfinite(low) and math.isfinite(high) and low <= observed + 1e-12 <= high + 2e-12):
                return f"the interval ({low:.4f}, {high:.4f}) should contain the observed difference {observed:.4f}"
            return first_error(close(low, want[0], atol=atol, rtol=0, what="low end"),
                               close(high, want[1], atol=atol, rtol=0, what="high end"))
        return Case(name, run)

    g = torch.Generator().manual_seed(0)
    a_real = (torch.rand(50, generator=g) * 10).tolist()
    cases = [case("two identical runs: (0, 0)", *_scores(100, 0, 0, 70), 0.95, 1e-9),
             case("b scores exactly 1 more on every question: (1, 1), no doubt at all",
                  a_real, [x + 1 for x in a_real], 0.95, 1e-9),
             case("400 questions, b right on 60 where a is wrong and a on 20 where b is wrong",
                  *_scores(400, 60, 20, 240), 0.95, 0.0055),
             case("the same at level 0.8: a narrower interval", *_scores(400, 60, 20, 240), 0.8, 0.0055)]
    return run_check("paired_bootstrap", fn, cases, BOOTSTRAP_HINT)
