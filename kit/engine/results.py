"""Results contracts: typed results in, the flat JSON keys out, written down once.

A recipe returns a typed result (dataclasses with nested groups: `qa.strict`, `cloze.before.heldout`). The
flat keys that leave the kit (the CLI's JSON, a run's `results.json`, the runs table, the README table)
are an interface: a `Contract` lists each of them ONCE, with where its value lives in the typed result and
which views show it. Every output is then one call:

    contract.flat(result)           # every key: the JSON a run records
    contract.flat(result, "cli")    # the keys the CLI prints
    contract.names("table")         # the rows of the runs table
    contract.read(flat, "qa.rows")  # a value back from a flat dict (e.g. a run's results.json)

Example:
    >>> @dataclasses.dataclass
    ... class Score:
    ...     strict: float
    ...     ci: list
    >>> c = Contract([Key("heldout_qa_strict", "qa.strict", ("cli",)), Key("heldout_qa_strict_ci", "qa.ci")])
    >>> c.names("cli")
    ('heldout_qa_strict',)
    >>> c.flat({"qa": Score(0.5, [0.4, 0.6])}, "cli")
    {'heldout_qa_strict': 0.5}
    >>> c.read({"heldout_qa_strict_ci": [0.4, 0.6]}, "qa.ci")
    [0.4, 0.6]
"""

from __future__ import annotations

import dataclasses
import html as _html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """One flat result key: its name (the interface), its dotted path in the typed result, the views showing it;
    an `optional` key is left out where its value is None (a figure the run did not measure)."""

    name: str
    path: str
    views: tuple[str, ...] = ()
    optional: bool = False


def dig(obj, path: str):
    """The value at a dotted `path` of nested dataclasses and dicts (None where a group is missing)."""
    for part in path.split("."):
        if obj is None:
            return None
        obj = obj.get(part) if isinstance(obj, Mapping) else getattr(obj, part, None)
    return obj


class Contract:
    """The flat keys of one kind of result, each written once (see the module docstring)."""

    def __init__(self, keys: Sequence[Key]):
        names = [k.name for k in keys]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"result keys listed twice: {', '.join(twice)}: list each key once")
        self.keys = tuple(keys)
        self._by_path = {k.path: k.name for k in keys}

    def names(self, view: str | None = None) -> tuple[str, ...]:
        """The flat names a view shows (all of them for None), in the contract's order."""
        return tuple(k.name for k in self.keys if view is None or view in k.views)

    def flat(self, result, view: str | None = None) -> dict:
        """{name: value} (JSON-ready) of a typed result: every key, or those of one view."""
        out = {}
        for k in self.keys:
            if view is None or view in k.views:
                v = dig(result, k.path)
                if v is not None or not k.optional:
                    out[k.name] = plain(v)
        return out

    def has(self, path: str) -> bool:
        """Whether a key of this contract reads `path`."""
        return path in self._by_path

    def name(self, path: str) -> str:
        """The flat name of the value at `path`."""
        return self._by_path[path]

    def read(self, flat: Mapping, path: str, default=None):
        """The value at `path` from a flat dict of this contract (e.g. a run's recorded results)."""
        return flat.get(self._by_path[path], default)


def plain(v):
    """A JSON-ready copy: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, Mapping):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


# ----------------------------------------------------------------------------- one table for every output
def cell(v, fmt: str = "text") -> str:
    """A value as a table cell: an interval `[0.648, 0.733]`, a rate with 3 significant digits, "-" for none."""
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, float) for x in v):
        text = "[" + ", ".join(number(x) for x in v) + "]"
    elif isinstance(v, float):
        text = number(v)
    elif isinstance(v, (list, tuple)):
        text = ",".join(map(str, v))
    else:
        text = "-" if v is None else str(v)
    if fmt == "html":
        return _html.escape(text)
    return text.replace("|", "\\|").replace("\n", " ") if fmt == "markdown" else text


def number(v: float) -> str:
    """A float as people read it: 3 decimals for a rate or a loss, thousands separated, a tiny one (a learning
    rate) in scientific notation: 0.676, 64,466, 5.68e-03."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3f}" if v == 0 or abs(v) >= 0.01 else f"{v:.2e}"


def rounded(obj, digits: int = 3):
    """A copy with every float rounded (lists and dicts too): for printing a dict of figures."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(rounded(v, digits) for v in obj)
    return obj


def table(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "text") -> str:
    """Cells already made by `cell` as a table: "text" (aligned columns), "markdown" or "html"."""
    if fmt == "html":
        tr = lambda row, tag: "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in row) + "</tr>"  # noqa: E731
        return "<table>" + tr(header, "th") + "".join(tr(r, "td") for r in rows) + "</table>"
    if fmt == "markdown":
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])
    widths = [max(len(str(r[j])) for r in [header, *rows]) for j in range(len(header))]
    line = lambda r: "  ".join(f"{c:<{w}}" if j == 0 else f"{c:>{w}}" for j, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), *(line(r) for r in rows)])


def columns_table(columns: Mapping[str, Mapping], keys: Sequence[str], fmt: str = "text") -> str:
    """Results side by side, one column per run (`{run name: flat results}`), one row per key."""
    rows = [[k, *(cell(flat.get(k), fmt) for flat in columns.values())] for k in keys]
    return table(["", *(cell(name, fmt) for name in columns)], rows, fmt)
