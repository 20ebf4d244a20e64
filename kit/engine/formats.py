"""Chat data in other formats: a spreadsheet's CSV, and Hugging Face `datasets`.

CSV: row 1 is the header, with columns `user`, `assistant` and optionally `system` (one turn per
row), or one column `messages` holding the JSON list. Excel's "CSV UTF-8" (with a byte-order mark)
is read as is; a row whose number of cells differs from the header's is an error with its line
(usually an unquoted comma), never a silently shifted row.

Datasets: `to_hf_dataset` / `from_hf_dataset` round-trip the kit's examples exactly (chat and
preference examples, mixed or not; `weight` and `name` only where they were given).

Example:
    >>> examples, report = load_csv("my_data.csv")      # doctest: +SKIP
    >>> from_hf_dataset(to_hf_dataset(examples)) == [clean(e) for e in examples]   # doctest: +SKIP
    True
"""

from __future__ import annotations

import csv
from pathlib import Path

from .chat import Problem, short
from .lines import LineError, iter_lines, parse_json
from .report import Report, accept, finish

COLUMNS = ("messages", "prompt", "chosen", "rejected")
CSV_ROLES = ("system", "user", "assistant")


def _physical_lines(path: str | Path, bad: dict[int, str]):
    """Every line of the file (blank ones too) with "\\n" put back, for the csv module; lines that cannot
    be decoded are given as empty and their reason kept in `bad`."""
    for line_no, text, why in iter_lines(path, keep_blank=True):
        if why is not None:
            bad[line_no] = why
        yield (text or "") + "\n"


def load_csv(path: str | Path, strict: bool = False) -> tuple[list[dict], Report]:
    """Read a CSV of chat examples; every row that cannot be used is in the report with its line number.

    Each example gets the line its row starts on in `example["_line"]` (row 1 is the header, as in a
    spreadsheet). Strict: raise one DataError listing every error.
    """
    examples, report, first, bad = [], Report(), {}, {}
    reader = csv.reader(_physical_lines(path, bad))
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            report.n_examples += header is not None
            report.problems.append(Problem(start, "", "error", _csv_message(str(e))))
            continue
        lines = range(start, reader.line_num + 1)
        if any(n in bad for n in lines):
            report.n_examples += header is not None
            report.problems += [Problem(n, "", "error", bad[n]) for n in lines if n in bad]
            continue
        if not row or all(not c.strip() for c in row):
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            if not _check_header(header, start, report):
                return finish(examples, report, strict, str(path))
            continue
        report.n_examples += 1
        if len(row) != len(header):
            why = (f"this row has {len(row)} cells but the header has {len(header)}: an unquoted comma (or a missing "
                   "one) shifts the cells; put every cell that holds a comma in double quotes")
            if len(lines) > 1:
                why += (f" (the row runs on to line {lines[-1]}: a double quote that is never closed joins the lines "
                        "after it)")
            report.problems.append(Problem(start, "", "error", why))
            continue
        cells = dict(zip(header, row))
        if "messages" in cells:
            try:
                value, dups = parse_json(cells["messages"])
            except LineError as e:
                report.problems.append(Problem(start, "messages", "error", str(e)))
                continue
            report.problems += [Problem(start, "messages", "warning", d) for d in dups]
            entry = {"messages": value}
        else:
            entry = {"messages": [{"role": r, "content": cells[r]} for r in CSV_ROLES if cells.get(r)]}
        accept(entry, start, examples, report, first)
    return finish(examples, report, strict, str(path))


def _csv_message(error: str) -> str:
    if "field limit" in error:
        return (f"a cell longer than {csv.field_size_limit():,} characters (or a double quote that is never closed, "
                "which joins the lines after it): shorten the cell, close the quote, or give the data as JSONL")
    if "new-line character" in error:
        return ("a carriage return (\\r) inside a cell that is not quoted: save the file with ordinary line endings "
                "(\\n or \\r\\n), or put the cell in double quotes")
    return f"this row cannot be read as CSV ({error}): check its quotes; a quote inside a cell is written twice (\"\")"


def _check_header(header: list[str], line: int, report: Report) -> bool:
    """Problems of the header row; False when no example can be read with it."""
    known = ("system", "user", "assistant", "messages")
    if not set(header) & set(known):
        report.problems.append(Problem(line, "", "error", (
            f"the header {short(','.join(header), 80)} names none of the columns user, assistant (and system), or "
            "messages: the first row must be the header, e.g. user,assistant")))
        return False
    dups = sorted({c for c in header if header.count(c) > 1})
    if dups:
        report.problems.append(Problem(line, "", "error", f"the header repeats the column(s) {', '.join(dups)}: "
                                                          "give each column once"))
        return False
    for c in header:
        if c not in known:
            report.problems.append(Problem(line, short(c, 30), "warning", f"unknown column {short(c, 40)} "
                                                                         f"(ignored; known: {', '.join(known)})"))
    return True


# ----------------------------------------------------------------------------- Hugging Face datasets
def _message_features():
    from datasets import Value

    kinds = {"role": "string", "content": "string", "weight": "int64", "name": "string"}
    return {k: Value(kinds[k]) for k in sorted(kinds)}


def to_hf_dataset(examples: list[dict]):
    """A Hugging Face `datasets.Dataset` of chat and/or preference examples.

    Columns: `messages` for chat examples, `prompt` / `chosen` / `rejected` for preference pairs
    (empty where a row is of the other kind). Each message keeps role, content, and weight and name
    where it has them; `from_hf_dataset` gives the examples back exactly.
    """
    import datasets

    cols = [c for c in COLUMNS if any(c in ex for ex in examples)] or ["messages"]
    message = _message_features()
    features = datasets.Features({c: [message] for c in cols})
    rows = {c: [[{k: m.get(k) for k in message} for m in ex[c]] if c in ex else None for ex in examples]
            for c in cols}
    return datasets.Dataset.from_dict(rows, features=features)


def _drop_none(value):
    """A dataset row as plain JSON values: the None that `datasets` writes for a missing field is left out."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def from_hf_dataset(ds, columns: dict[str, str] | None = None) -> list[dict]:
    """Examples in the kit's form from a Hugging Face `datasets.Dataset` in any shape `kit.engine.shapes`
    reads (`messages`; prompt / completion; prompt / chosen / rejected, or chosen / rejected alone;
    `text`; ShareGPT's `conversations`; Alpaca's instruction / input / output). `columns` renames
    columns first, e.g. `{"dialog": "messages"}` or `{"question": "prompt", "answer": "completion"}`.

    Raises:
        ValueError: a column named in `columns` is missing, or a row cannot be used (every problem listed,
            with its row number counted from 1).
    """
    from .report import Report, accept

    columns = dict(columns or {})
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"columns= names {', '.join(map(repr, missing))}, which the dataset does not have (it has "
                         f"{', '.join(ds.column_names)})")
    examples, report = [], Report()
    for i, row in enumerate(ds, start=1):  # rows of several shapes may share a dataset (see `to_hf_dataset`)
        entry = {columns.get(k, k): v for k, v in _drop_none(dict(row)).items()}
        accept(entry, i, examples, report, {})
    if report.errors:
        head = (f"the dataset's rows cannot be used as they are (columns: {', '.join(ds.column_names)}); map yours "
                "with columns={...} to messages, prompt / completion, prompt / chosen / rejected, text, "
                "conversations, or instruction / output")
        rows = [f"  row {p.line}: {p.field or '-'}: {p.message}" for p in report.errors[:10]]
        more = len(report.errors) - len(rows)
        raise ValueError("\n".join([head, *rows] + ([f"  ... and {more} more"] if more > 0 else [])))
    return [{k: v for k, v in ex.items() if k != "_line"} for ex in examples]
