"""Chat datasets: load (JSONL, CSV, HF datasets), validate into a report, statistics, splits, SFT rows.

Nothing is dropped silently: every line that cannot be used appears in the report with its line
number, and validation never writes to the source file.

Example:
    >>> examples, report = load_jsonl("datasets/broken_example.jsonl")   # doctest: +SKIP
    >>> report.errors[0]                                                  # doctest: +SKIP
    Problem(line=3, field='', severity='error', message='malformed JSON: ...')
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .chat import ROLES, Problem, Rendered, check_example, render
from .tokenizer import stop_token_ids


class DataError(ValueError):
    """A dataset that strict mode refuses; the message lists every problem."""


@dataclass
class Report:
    """Validation problems, one row each; shows as a table in a notebook."""

    problems: list[Problem] = field(default_factory=list)
    n_examples: int = 0
    summary: dict = field(default_factory=dict)

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

    def to_json(self) -> str:
        return json.dumps([{"line": p.line, "field": p.field, "severity": p.severity, "message": p.message}
                           for p in self.sorted()], indent=1)

    def __str__(self) -> str:
        head = f"{self.n_examples} examples: {len(self.errors)} errors, {len(self.warnings)} warnings"
        if self.summary:
            head += (f"; {self.summary['tokens']} tokens, {self.summary['loss_tokens']} carry loss "
                     f"({self.summary['loss_token_share']:.0%})")
        rows = [f"  line {p.line:>5}  {p.severity:<7}  {p.field or '-':<22}  {p.message}" for p in self.sorted()]
        return "\n".join([head, *rows])

    def _repr_html_(self) -> str:
        colour = {"error": "#fdd", "warning": "#ffd"}
        rows = "".join(
            f"<tr style='background:{colour[p.severity]}'><td>{p.line}</td><td>{p.severity}</td>"
            f"<td><code>{html.escape(p.field)}</code></td><td>{html.escape(p.message)}</td></tr>"
            for p in self.sorted())
        return (f"<p><b>{self.n_examples}</b> examples: <b>{len(self.errors)}</b> errors, "
                f"<b>{len(self.warnings)}</b> warnings</p><table><tr><th>line</th><th>severity</th>"
                f"<th>field</th><th>message</th></tr>{rows}</table>")


def _finish(examples: list[dict], report: Report, strict: bool, source: str) -> tuple[list[dict], Report]:
    if strict and report.errors:
        raise DataError(f"{source}: {len(report.errors)} errors\n{report}")
    return examples, report


# ----------------------------------------------------------------------------- loading
def _accept(entry, line_no: int, examples: list[dict], report: Report) -> None:
    """Check one entry; report its problems; keep it (with its line number) unless it has an error."""
    problems = check_example(entry, line_no)
    report.problems += problems
    if not any(p.severity == "error" for p in problems):
        examples.append({**entry, "_line": line_no})


def load_jsonl(path: str | Path, strict: bool = False) -> tuple[list[dict], Report]:
    """Read a JSONL file of chat examples; each example gets its line number in `example["_line"]`.

    Lenient (default): every well-formed, valid line is returned, every other one is in the report.
    Strict: raise one DataError listing every error.
    """
    examples, report = [], Report()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            report.n_examples += 1
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                report.problems.append(Problem(line_no, "", "error", f"malformed JSON: {e.msg} at column {e.colno}"))
                continue
            _accept(entry, line_no, examples, report)
    return _finish(examples, report, strict, str(path))


def load_csv(path: str | Path, strict: bool = False) -> tuple[list[dict], Report]:
    """Read a CSV with columns `user`, `assistant` and optionally `system` (one turn per row),
    or with one column `messages` holding the JSON list. Row 1 is the header, as in a spreadsheet."""
    examples, report = [], Report()
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.DictReader(f), start=2):
            report.n_examples += 1
            if "messages" in row:
                try:
                    entry = {"messages": json.loads(row["messages"])}
                except json.JSONDecodeError as e:
                    report.problems.append(Problem(line_no, "messages", "error", f"malformed JSON: {e.msg}"))
                    continue
            else:
                entry = {"messages": [{"role": r, "content": row[r]} for r in ROLES if row.get(r)]}
            _accept(entry, line_no, examples, report)
    return _finish(examples, report, strict, str(path))


def _columns(example: dict) -> tuple[str, ...]:
    return ("messages",) if "messages" in example else ("prompt", "chosen", "rejected")


def from_hf_dataset(ds) -> list[dict]:
    """Examples from a Hugging Face `datasets.Dataset` with a `messages` column (chat) or
    `prompt` / `chosen` / `rejected` columns (preference pairs)."""
    cols = ("messages",) if "messages" in ds.column_names else ("prompt", "chosen", "rejected")
    return [{c: [dict(m) for m in row[c]] for c in cols} for row in ds]


def to_hf_dataset(examples: list[dict]):
    """A Hugging Face `datasets.Dataset` of chat or preference examples (weights kept on messages)."""
    import datasets

    def msgs(ms):
        return [{"role": m["role"], "content": m["content"], "weight": int(m.get("weight", 1))} for m in ms]

    return datasets.Dataset.from_list([{c: msgs(ex[c]) for c in _columns(ex)} for ex in examples])


def clean(example: dict) -> dict:
    """The example without the kit's bookkeeping keys (such as `_line`)."""
    return {k: v for k, v in example.items() if not k.startswith("_")}


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically: a temporary file in the same folder, synced, then renamed over the
    old one (a crash leaves the old file whole, and the temporary file is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, examples: list[dict]) -> None:
    """Write examples as JSONL atomically (see `write_text_atomic`)."""
    write_text_atomic(path, "".join(json.dumps(clean(ex), ensure_ascii=False) + "\n" for ex in examples))


# ----------------------------------------------------------------------------- validation
_norm_re = re.compile(r"[^a-z0-9]+")


def normalise(text: str) -> str:
    """Lower case, punctuation and spacing removed: two texts equal here are near duplicates."""
    return _norm_re.sub(" ", text.lower()).strip()


def _line(ex: dict, i: int) -> int:
    return ex.get("_line", i + 1)


def validate(examples: list[dict], tok, max_length: int | None = None,
             eval_examples: list[dict] | None = None) -> Report:
    """Checks that need the chat template: truncation, loss tokens, duplicates, split overlap.

    Args:
        examples: format-checked examples (e.g. from `load_jsonl`).
        tok: the tokenizer whose chat template training will use.
        max_length: the training context length; longer examples are reported.
        eval_examples: an evaluation split; prompts found in both splits are reported.
    """
    report = Report(n_examples=len(examples))
    end_ids = set(stop_token_ids(tok))
    seen_exact: dict[str, int] = {}
    seen_near: dict[str, int] = {}
    n_tokens = n_loss = 0
    for i, ex in enumerate(examples):
        line = _line(ex, i)
        for conv in conversations(ex):
            r = _check_render(conv, tok, max_length, end_ids, line, report)
            n_tokens += len(r.input_ids)
            n_loss += r.n_loss_tokens
        exact = json.dumps(clean(ex), sort_keys=True)
        near = normalise(" ".join(m["content"] for c in conversations(ex) for m in c["messages"]))
        if exact in seen_exact:
            report.problems.append(Problem(line, "messages", "warning", f"exact duplicate of line {seen_exact[exact]}"))
        elif near in seen_near:
            report.problems.append(Problem(line, "messages", "warning",
                                           f"near duplicate of line {seen_near[near]} (same text up to case, "
                                           "punctuation and spacing)"))
        seen_exact.setdefault(exact, line)
        seen_near.setdefault(near, line)
    if eval_examples:
        eval_prompts = {}
        for i, ex in enumerate(eval_examples):
            eval_prompts.setdefault(_prompt_key(ex), _line(ex, i))
        for i, ex in enumerate(examples):
            if _prompt_key(ex) in eval_prompts:
                report.problems.append(Problem(_line(ex, i), "messages", "error", (
                    f"prompt also in the evaluation split (its line {eval_prompts[_prompt_key(ex)]}): "
                    "the evaluation score would be inflated")))
    report.summary = {"tokens": n_tokens, "loss_tokens": n_loss, "loss_token_share": n_loss / max(1, n_tokens)}
    return report


def conversations(example: dict) -> list[dict]:
    """The conversation(s) an example trains on: itself, or prompt + chosen and prompt + rejected."""
    if "messages" in example:
        return [example]
    return [{"messages": example["prompt"] + example[k]} for k in ("chosen", "rejected")]


def _check_render(conv: dict, tok, max_length: int | None, end_ids: set[int], line: int, report: Report) -> Rendered:
    """Template checks of one conversation (truncation, tokens with loss, a trained end-of-turn)."""
    r = render(conv, tok, max_length)
    if r.truncated:
        sev = "error" if r.n_loss_tokens == 0 and r.n_assistant_tokens else "warning"
        report.problems.append(Problem(line, "messages", sev, (
            f"over the token limit: {len(r.input_ids) + r.truncated} tokens > max_length={max_length}; "
            f"{r.truncated} cut, {r.lost_assistant_tokens} of {r.n_assistant_tokens} assistant tokens lost")))
    if r.n_loss_tokens == 0:
        report.problems.append(Problem(line, "messages", "error",
                                       "no token carries loss (every reply has weight 0, or was cut off)"))
    elif not end_ids & {t for t, m in zip(r.input_ids, r.loss_mask) if m}:
        report.problems.append(Problem(line, "messages", "warning",
                                       "no trained end-of-turn token: the model will not learn to stop here"))
    return r


def _prompt_key(ex: dict) -> str:
    messages = ex["messages"] if "messages" in ex else ex["prompt"]
    return normalise(" ".join(m["content"] for m in messages if m["role"] != "assistant"))


def validate_file(path: str | Path, tok, max_length: int | None = None,
                  eval_examples: list[dict] | None = None) -> Report:
    """Format checks (`load_jsonl`) and template checks (`validate`) of one JSONL file, in one report."""
    examples, report = load_jsonl(path)
    deep = validate(examples, tok, max_length, eval_examples)
    report.problems += deep.problems
    report.summary = deep.summary
    return report


# ----------------------------------------------------------------------------- statistics
def stats(examples: list[dict], tok, max_length: int | None = None, epochs: int = 3) -> dict:
    """Token counts per example and per role, loss-token share, and the training tokens for `epochs`.

    The estimate follows the usual billing rule: tokens per example (capped at max_length) x epochs.
    """
    per_example, per_role, loss = [], Counter(), 0
    for ex in examples:
        r = render(ex, tok, max_length)
        per_example.append(len(r.input_ids))
        loss += r.n_loss_tokens
        for m in ex["messages"]:
            per_role[m["role"]] += len(tok(m["content"], add_special_tokens=False)["input_ids"])
    total = sum(per_example)
    return {"examples": len(examples), "tokens": total, "per_example": per_example, "per_role": dict(per_role),
            "loss_tokens": loss, "loss_token_share": loss / max(1, total),
            "max_tokens": max(per_example, default=0), "mean_tokens": total / max(1, len(per_example)),
            "epochs": epochs, "training_tokens": total * epochs}


def sft_rows(examples: list[dict], tok, max_length: int) -> tuple[list, list[Problem]]:
    """Rendered examples ready for SFT; rows with no loss token are dropped and each drop is reported."""
    rows, dropped = [], []
    for i, ex in enumerate(examples):
        r = render(ex, tok, max_length)
        if r.n_loss_tokens == 0:
            dropped.append(Problem(_line(ex, i), "messages", "warning", "dropped: no token carries loss"))
        else:
            rows.append(r)
    return rows, dropped
