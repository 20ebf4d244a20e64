"""Text files read line by line, safely: what any user file goes through before the kit looks at it.

* Lines end at "\\n" only (a bare "\\r" or a Unicode line separator does not start a new line), so
  line numbers are an editor's; a "\\r\\n" ending is accepted.
* Each line is decoded on its own: a line that is not UTF-8 is reported and the next one is read.
  A UTF-8 byte-order mark at the start of the file (Excel, Notepad) is accepted.
* A line longer than `MAX_LINE_BYTES` is reported and skipped without being held in memory.
* JSON is parsed strictly: NaN / Infinity literals and numbers too long to convert are errors,
  nesting deeper than `MAX_DEPTH` is an error, a key repeated in one object is a warning.

Example:
    >>> parse_json('{"a": 1, "a": 2}')
    ({'a': 2}, ["duplicate key 'a' in one JSON object: only its last value is kept; remove the other"])
    >>> parse_json('{"a": NaN}')
    Traceback (most recent call last):
    ...
    kit.engine.lines.LineError: malformed JSON: NaN is not JSON (write a number, or null)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .chat import Problem, short
from .errors import KitError

MAX_LINE_BYTES = 8 * 2**20   # one example this long (millions of tokens) is far beyond any training context
MAX_DEPTH = 64               # a chat example needs 4 levels: entry, messages, message, value
BOM = b"\xef\xbb\xbf"


class LineError(KitError, ValueError):
    """A line that cannot be used; the message says why and what to do."""


def iter_lines(path: str | Path, max_bytes: int = MAX_LINE_BYTES,
               keep_blank: bool = False) -> Iterator[tuple[int, str | None, str | None]]:
    """Yield `(line number, text, None)` for each non-blank line (every line with `keep_blank`), or
    `(line number, None, why)` when the line cannot be read (not UTF-8, too long). The text has its
    line ending removed."""
    with open(path, "rb") as f:
        line_no = 0
        while True:
            raw = f.readline(max_bytes + 1)
            if not raw:
                return
            line_no += 1
            if len(raw) > max_bytes and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):  # skip the rest without keeping it
                    raw = f.readline(1 << 20)
                    size += len(raw)
                yield line_no, None, (f"line too long: {size:,} bytes, over the limit of {max_bytes:,} "
                                      "(no training context holds an example this long): shorten it or split it "
                                      "into several examples")
                continue
            if line_no == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if not keep_blank and not raw.strip(b" \t\r"):
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, None, _decode_message(raw, e, line_no)
                continue
            del raw  # a long line is held once, as text
            yield line_no, text, None
            del text


def _decode_message(raw: bytes, e: UnicodeDecodeError, line_no: int) -> str:
    if line_no == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "the file is UTF-16 text, not UTF-8: save it again as UTF-8"
    if b"\x00" in raw[:4096]:
        return (f"not text: binary data (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line): "
                "give a JSONL or CSV text file")
    return (f"not UTF-8 text: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line cannot be decoded; "
            "save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8')")


def _reject_constant(name: str):
    raise LineError(f"malformed JSON: {name} is not JSON (write a number, or null)")


def parse_json(text: str) -> tuple[object, list[str]]:
    """Parse one JSON value strictly; returns `(value, warnings)` or raises `LineError` with the cause."""
    dups: list[str] = []

    def pairs_hook(pairs: list) -> dict:
        out = dict(pairs)
        if len(out) < len(pairs):
            seen: set = set()
            for k, _ in pairs:
                if k in seen and k not in dups:
                    dups.append(k)
                seen.add(k)
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise LineError(f"malformed JSON: {e.msg} at column {e.colno} (each line must hold one whole JSON "
                        "object)") from None
    except RecursionError:
        raise LineError(f"JSON nested too deeply (over {MAX_DEPTH} levels; a chat example needs 4)") from None
    except LineError:
        raise
    except ValueError as e:  # e.g. an integer with thousands of digits
        raise LineError(f"malformed JSON: {str(e).split(':')[0]}") from None
    if too_deep(value, MAX_DEPTH):
        raise LineError(f"JSON nested too deeply (over {MAX_DEPTH} levels; a chat example needs 4)")
    return value, [f"duplicate key {short(k)} in one JSON object: only its last value is kept; remove the other"
                   for k in dups]


def too_deep(value, limit: int) -> bool:
    """True when lists / objects nest more than `limit` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > limit:
                return True
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def read_records(path: str | Path) -> tuple[list[tuple[int, object]], list[Problem]]:
    """The JSON values of a JSONL file the kit wrote (decisions, ratings), with their line numbers, and a
    problem for each line that cannot be read (for example the last one, cut short by a killed process)."""
    records, problems = [], []
    for line_no, text, why in iter_lines(path):
        if text is not None:
            try:
                records.append((line_no, parse_json(text)[0]))
                continue
            except LineError as e:
                why = str(e)
        problems.append(Problem(line_no, "", "error", why))
    return records, problems
