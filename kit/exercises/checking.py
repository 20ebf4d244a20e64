"""The machinery behind every `check_<name>(your_fn)`: run cases, report each, never raise on a stub.

A check is a list of `Case`s. Each case calls the learner's function on fresh inputs and returns
None when the answer is right, or a sentence saying what was expected and what came back. The
check prints one line per case and returns a `CheckResult`, which is truthy only when every case
passed, so CI can `assert check_x(solution)` while a notebook just shows the report.

A stub that raises `NotImplementedError` is reported as "not implemented yet: <hint>" and the
notebook goes on: learners run the whole notebook first, then come back to the exercises.

Example:
    >>> res = run_check("double", lambda x: 2 * x, [Case("x=2", lambda fn: same(fn(2), 4))], hint="return 2 * x")
    double: 1 of 1 cases passed
      ok  x=2
    >>> bool(res)
    True
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Case:
    """One input of a check: `run(fn)` calls the learner's function and returns None (right) or what is wrong."""

    name: str
    run: Callable[[Callable], str | None]


@dataclass
class CheckResult:
    """What a check found. Truthy when every case passed (False for a stub or any failure)."""

    name: str
    hint: str
    passed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, what went wrong)
    not_implemented: str | None = None                            # the stub's message, if it raised one
    total: int = 0

    def __bool__(self) -> bool:
        return self.not_implemented is None and not self.failed and len(self.passed) == self.total > 0

    @property
    def message(self) -> str:
        """The report as the check printed it."""
        if self.not_implemented is not None:
            said = f" ({self.not_implemented})" if self.not_implemented and self.not_implemented != self.hint else ""
            return f"{self.name}: not implemented yet{said}\n  hint: {self.hint}"
        lines = [f"{self.name}: {len(self.passed)} of {self.total} cases passed"]
        done = dict(self.failed)
        for case in [*self.passed, *[c for c, _ in self.failed]]:
            lines.append(f"  {'ok ' if case not in done else 'NO '} {case}" + (f"\n       {done[case]}" if case in done
                                                                                  else ""))
        if self.failed:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        verdict = "PASSED" if self else ("not implemented yet" if self.not_implemented is not None else "FAILED")
        return f"<check {self.name}: {verdict}>"


def run_check(name: str, fn: Callable, cases: list[Case], hint: str, quiet: bool = False) -> CheckResult:
    """Run every case on `fn`, print the report (unless `quiet`), return the CheckResult."""
    result = CheckResult(name, hint, total=len(cases))
    if not callable(fn):
        result.failed.append(("the argument", f"expected your function, got {type(fn).__name__}: pass the "
                                              "function itself, without calling it (no parentheses)"))
    for case in cases if callable(fn) else ():
        try:
            wrong = case.run(fn)
        except NotImplementedError as e:
            result.not_implemented = str(e)
            break
        except Exception as e:  # the learner's code broke: say where, and keep the notebook going
            frame = traceback.extract_tb(e.__traceback__)[-1]
            wrong = f"raised {type(e).__name__}: {e} (line {frame.lineno}: {frame.line})"
        if wrong is None:
            result.passed.append(case.name)
        else:
            result.failed.append((case.name, wrong))
    if not quiet:
        print(result.message)
    return result


# ----------------------------------------------------------------------------- comparing answers
def show(x) -> str:
    """A short printable form of a number, a tensor or a list."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.numel() == 1:
            return f"{x.item():.6g}"
        if x.numel() <= 12:
            return f"tensor({[round(v, 4) for v in x.flatten().tolist()]}, shape {tuple(x.shape)})"
        return f"tensor of shape {tuple(x.shape)}, first values {[round(v, 4) for v in x.flatten()[:4].tolist()]}"
    if isinstance(x, float):
        return f"{x:.6g}"
    return repr(x)


def close(got, expected, atol: float = 1e-5, rtol: float = 1e-4, what: str = "") -> str | None:
    """None when `got` equals `expected` within tolerance (numbers or tensors), else what differs."""
    prefix = f"{what}: " if what else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{prefix}expected a tensor of shape {tuple(expected.shape)}, got {type(got).__name__}: {show(got)}"
        if got.shape != expected.shape:
            return (f"{prefix}expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)} "
                    f"(expected {show(expected)}, got {show(got)})")
        got_d, exp_d = got.detach().double(), expected.detach().double()
        if not (torch.isclose(got_d, exp_d, rtol=rtol, atol=atol) | (got_d.isinf() & (got_d == exp_d))).all():
            return f"{prefix}expected {show(expected)}, got {show(got)}"
        return None
    try:
        value = float(got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got)
    except (TypeError, ValueError):
        return f"{prefix}expected a number {show(expected)}, got {type(got).__name__}: {show(got)}"
    if math.isnan(value) or not math.isclose(value, expected, rel_tol=rtol, abs_tol=atol):
        return f"{prefix}expected {show(float(expected))}, got {show(value)}"
    return None


def same(got, expected, what: str = "") -> str | None:
    """None when `got == expected` (exact: booleans, lists of ints, strings), else what differs."""
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if got == expected:
        return None
    return f"{what + ': ' if what else ''}expected {show(expected)}, got {show(got)}"


def first_error(*verdicts: str | None) -> str | None:
    """The first of several comparisons that failed (None when all passed)."""
    return next((v for v in verdicts if v is not None), None)
