"""What every CLI command shares: the one-line usage error, argument types, reading the user's files,
and turning any error into one readable line.

Example:
    >>> whole_number(1)("8")
    8
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .engine.errors import KitError


class UsageError(KitError):
    """A problem with what the user asked for: printed as one line, exit status 1."""


def quiet() -> None:
    """No "Loading weights" bars from transformers (called once the arguments are checked: it is a slow import)."""
    from . import _quiet_transformers

    _quiet_transformers()


def whole_number(low: int):
    """An argparse type: a whole number >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value}")
        return value
    return parse


def _number(bound: str, ok) -> Callable[[str], float]:
    """An argparse type: a finite number that `ok` accepts (`bound` says which, in the messages)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
        return value
    return parse


positive_number = _number("> 0", lambda v: v > 0)
non_negative_number = _number(">= 0", lambda v: v >= 0)


class Parser(argparse.ArgumentParser):
    """argparse in the kit's style: a usage error is one line that says what to do, with exit status 1."""

    def error(self, message: str):
        self.exit(1, f"error: {message} (see `{self.prog} --help`)\n")


def read_examples(path: str, what: str) -> list[dict]:
    """Chat examples from a JSONL or CSV file; any error in it ends the command with its report."""
    p = input_file(path, what)
    from .engine.data import load_file

    examples, report = load_file(p)
    if report.errors:
        print(report, file=sys.stderr)
        raise UsageError(f"{what} {path} has {len(report.errors)} error(s) (listed above with their lines): "
                         f"fix them, or check with `python -m kit data validate {path}`")
    return examples


def input_file(path: str, what: str) -> Path:
    """The path of a file the user named, checked: it exists, is a regular file, and can be read."""
    p = Path(path)
    try:
        exists, folder, regular = p.exists(), p.is_dir(), p.is_file()
    except (OSError, ValueError) as e:  # a name with a NUL byte, too long a name
        raise UsageError(f"{what}: {path!r} is not a usable path ({e}): check the name") from None
    if not exists:
        raise UsageError(f"{what}: no such file: {path} (check the path; relative paths start from {Path.cwd()})")
    if folder:
        raise UsageError(f"{what}: {path} is a folder, not a file: give the JSONL or CSV file inside it")
    if not regular:
        raise UsageError(f"{what}: {path} is not a regular file (a device or a pipe): save the data to a file first")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what}: {path} cannot be read (permission denied): check the file's permissions")
    return p


def error_line(e: BaseException) -> str:
    """The error as one readable line (several for a config error that lists its problems)."""
    text = str(e) or type(e).__name__
    if isinstance(e, KitError):  # the kit's own errors (UsageError too) already say what to do
        return text
    if isinstance(e, OSError) and e.filename is not None:
        import errno

        fix = {errno.ENOSPC: "free some disk space", errno.ENOENT: "check the path",
               errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
               errno.EROFS: "give a folder you may write to"}.get(e.errno, "check the path and its permissions")
        return f"{e.strerror or type(e).__name__}: {e.filename}: {fix} (run again with --debug for the traceback)"
    if isinstance(e, MemoryError):
        return "out of memory: use a smaller profile, model or dataset (run again with --debug for the traceback)"
    return f"{type(e).__name__}: {text} (run again with --debug for the traceback)"
