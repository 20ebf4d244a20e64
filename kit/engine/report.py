"""The validation report: problems with their line numbers, as a table (text, HTML) or JSON.

Example:
    >>> r = Report([Problem(3, "messages", "error", "no assistant message")], n_examples=5)
    >>> print(r)
    5 examples: 1 errors, 0 warnings
      line     3  error    messages                no assistant message
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from .chat import Problem
from .errors import KitError


class DataError(KitError, ValueError):
    """A dataset that strict mode refuses; the message lists every problem."""


@dataclass
class Report:
    """Validation problems, one row each; shows as a table in a notebook."""

    problems: list[Problem] = field(default_factory=list)
    n_examples: int = 0
    summary: dict = field(default_factory=dict)
    shape: str = ""  # the file's data shape (see kit.engine.shapes); others are converted to the kit's form

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def extend(self, other: Report) -> Report:
        self.problems += other.problems
        return self

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=lambda p: (p.line, p.severity != "error", p.field))

    def rows(self, **extra) -> Iterator[dict]:
        """The problems as plain dicts (line, field, severity, message, and any `extra` keys), in line order."""
        return ({"line": p.line, "field": p.field, "severity": p.severity, "message": p.message, **extra}
                for p in self.sorted())

    def to_json(self) -> str:
        return json.dumps(list(self.rows()), indent=1)

    def lines(self) -> Iterator[str]:
        """The table line by line: a summary, then one line per problem (a long report is printed as it goes)."""
        head = f"{self.n_examples} examples: {len(self.errors)} errors, {len(self.warnings)} warnings"
        if self.shape not in ("", "messages", "preference"):
            head = f"{self.n_examples} examples ({self.shape} rows, read as the kit's form): " + head.split(": ", 1)[1]
        if self.summary:
            head += (f"; {self.summary['tokens']} tokens, {self.summary['loss_tokens']} carry loss "
                     f"({self.summary['loss_token_share']:.0%})")
        yield head
        for p in self.sorted():
            yield f"  line {p.line:>5}  {p.severity:<7}  {p.field or '-':<22}  {p.message}"

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        colour = {"error": "#fdd", "warning": "#ffd"}
        rows = "".join(
            f"<tr style='background:{colour[p.severity]}'><td>{p.line}</td><td>{p.severity}</td>"
            f"<td><code>{html.escape(p.field)}</code></td><td>{html.escape(p.message)}</td></tr>"
            for p in self.sorted())
        head = (f"<p><b>{self.n_examples}</b> examples: <b>{len(self.errors)}</b> errors, "
                f"<b>{len(self.warnings)}</b> warnings</p>")
        if not rows:
            return head + "<p>No problems found.</p>"
        return (head + "<table><tr><th>line</th><th>severity</th><th>field</th><th>message</th></tr>"
                f"{rows}</table>")


def finish(examples: list[dict], report: Report, strict: bool, source: str) -> tuple[list[dict], Report]:
    """The end of every loader: an empty source is an error; strict mode raises on any error."""
    if report.n_examples == 0:
        report.problems.append(Problem(0, "", "error", "the file holds no example (it is empty, or has only blank "
                                                       "lines): add one example per line"))
    if strict and report.errors:
        raise DataError(f"{source}: {len(report.errors)} errors\n{report}")
    return examples, report


def kind(entry) -> str | None:
    """"chat" (a `messages` entry), "preference" (prompt / chosen / rejected), "text", or None."""
    if not isinstance(entry, dict):
        return None
    if "messages" in entry:
        return "chat"
    if {"prompt", "chosen", "rejected"} & set(entry):
        return "preference"
    return "text" if "text" in entry else None


def accept(entry, line_no: int, examples: list[dict], report: Report, first: dict) -> None:
    """Check one entry in any shape `shapes.detect` knows; report its problems; keep it in the kit's form
    (with its line number) unless it has an error.

    `first` remembers the file's first shape and its line: two shapes in one file is an error that
    names both (chat examples and preference pairs train differently; two chat shapes are most
    likely two files joined by mistake).
    """
    from .shapes import convert

    converted, problems, shape = convert(entry, line_no)
    if shape is not None:
        first.setdefault("shape", (shape, line_no))
        other, at = first["shape"]
        report.shape = other
        if other != shape:
            problems.append(Problem(line_no, "", "error", (
                f"{_a(shape)} {shape} row in a file of {other} rows (line {at} is {_a(other)} {other} row): keep one "
                "shape per file" + (" (chat examples and preference pairs, prompt / chosen / rejected, train "
                              "differently)" if {"preference", "implicit preference"} & {shape, other}
                              and not {shape, other} <= {"preference", "implicit preference"} else ""))))
    report.problems += problems
    if not any(p.severity == "error" for p in problems):
        examples.append({**converted, "_line": line_no})


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
