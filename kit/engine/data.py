"""Chat datasets: load (JSONL, CSV, HF datasets), validate into a report, statistics, splits, SFT rows.

Nothing is dropped silently: every line that cannot be used appears in the report with its line
number, and validation never writes to the source file.

Example:
    >>> examples, report = load_jsonl("datasets/chat_with_problems.jsonl")   # doctest: +SKIP
    >>> report.errors[0]                                                  # doctest: +SKIP
    Problem(line=2, field='', severity='error', message="malformed JSON: Expecting ',' delimiter ...")
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

from .cache import write_text_atomic
from .chat import (
    Problem,
    Rendered,
    TemplateError,
    check_example,
    conversation_chars,
    conversation_size,
    cut_budget,
    find_special_token,
    max_token_chars,
    render,
)
from .formats import from_hf_dataset, load_csv, to_hf_dataset
from .lines import LineError, iter_lines, parse_json
from .report import DataError, Report, accept, finish
from .tokenizer import stop_token_ids

__all__ = ["DataError", "Report", "load_jsonl", "load_csv", "load_file", "to_hf_dataset", "from_hf_dataset",
           "validate", "validate_file", "stats", "sft_rows", "write_jsonl", "clean"]
MAX_CHARS = 200_000  # the longest conversation (in characters) checked without a max_length


# ----------------------------------------------------------------------------- loading
def load_jsonl(path: str | Path, strict: bool = False) -> tuple[list[dict], Report]:
    """Read a JSONL file of chat examples; each example gets its line number in `example["_line"]`.

    Lenient (default): every well-formed, valid line is returned, every other one is in the report
    (lines that are not UTF-8, malformed or deeply nested JSON, format errors, a chat example among
    preference pairs or the other way round; an empty file is an error too).
    Strict: raise one DataError listing every error.
    """
    examples, report, first = [], Report(), {}
    for line_no, text, why in iter_lines(path):
        report.n_examples += 1
        if text is not None:
            try:
                entry, dups = parse_json(text)
            except LineError as e:
                why = str(e)
        if why is not None:
            report.problems.append(Problem(line_no, "", "error", why))
            continue
        del text  # a long line is held once, as its parsed value
        report.problems += [Problem(line_no, "", "warning", d) for d in dups]
        accept(entry, line_no, examples, report, first)
    return finish(examples, report, strict, str(path))


def load_file(path: str | Path, strict: bool = False) -> tuple[list[dict], Report]:
    """`load_csv` for a `.csv` file, `load_jsonl` for any other."""
    return (load_csv if Path(path).suffix.lower() == ".csv" else load_jsonl)(path, strict)


def clean(example: dict) -> dict:
    """The example without the kit's bookkeeping keys (such as `_line`)."""
    return {k: v for k, v in example.items() if not k.startswith("_")}


def _json_line(obj) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be written as UTF-8: keep it as a \u escape
        text = json.dumps(obj)
    return text + "\n"


def write_jsonl(path: str | Path, examples: list[dict]) -> None:
    """Write examples as JSONL atomically (see `write_text_atomic`)."""
    write_text_atomic(path, "".join(_json_line(clean(ex)) for ex in examples))


# ----------------------------------------------------------------------------- validation
_norm_re = re.compile(r"[^a-z0-9]+")


def near_duplicate_key(text: str) -> str:
    """Lower case, punctuation and spacing removed: two texts equal here are near duplicates."""
    return _norm_re.sub(" ", text.lower()).strip()


def _line(ex: dict, i: int) -> int:
    return ex.get("_line", i + 1) if isinstance(ex, dict) else i + 1


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def validate(examples: list[dict], tok, max_length: int | None = None,
             eval_examples: list[dict] | None = None) -> Report:
    """Checks that need the chat template: special tokens in the text, truncation, tokens with loss,
    duplicates, split overlap. Examples with format errors get those errors and nothing else.

    Text is measured in characters before it is tokenised: a conversation far longer than
    `max_length` is cut first (see `kit.engine.chat.render`), and one over `MAX_CHARS` characters
    without a `max_length` is an error, not tokenised.

    Args:
        examples: format-checked examples (e.g. from `load_jsonl`).
        tok: the tokenizer whose chat template training will use.
        max_length: the training context length (>= 1); longer examples are reported.
        eval_examples: an evaluation split; prompts found in both splits are reported.

    Over 60 lines on purpose: one pass over the examples keeps every check's problems in line order.
    """
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        raise ValueError(f"max_length must be a whole number >= 1 (the training context in tokens), got "
                         f"{max_length!r}")
    report = Report(n_examples=len(examples))
    end_ids = set(stop_token_ids(tok))
    seen_exact: dict[str, int] = {}
    seen_near: dict[str, int] = {}
    n_tokens = n_loss = 0
    usable = []  # (line, example) of the examples without format errors
    for i, ex in enumerate(examples):
        line = _line(ex, i)
        errors = [p for p in check_example(clean(ex) if isinstance(ex, dict) else ex, line) if p.severity == "error"]
        if errors:
            report.problems += errors
            continue
        usable.append((line, ex))
        if _special_tokens(ex, tok, line, report):
            continue
        for conv in conversations(ex):
            r = _check_render(conv, tok, max_length, end_ids, line, report)
            if r is not None:
                n_tokens += len(r.input_ids)
                n_loss += r.n_loss_tokens
        if sum(conversation_size(messages_of(c)) for c in conversations(ex)) > MAX_CHARS:
            continue  # too long to be anyone's duplicate, and comparing it would copy it several times
        exact = _digest(json.dumps(clean(ex), sort_keys=True))
        text = " ".join(m.get("content") or "" for c in conversations(ex) for m in messages_of(c))
        near = _digest(near_duplicate_key(text))
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
            if not any(p.severity == "error" for p in check_example(clean(ex) if isinstance(ex, dict) else ex)):
                eval_prompts.setdefault(_prompt_key(ex), _line(ex, i))
        for line, ex in usable:
            if _prompt_key(ex) in eval_prompts:
                report.problems.append(Problem(line, "messages", "error", (
                    f"prompt also in the evaluation split (its line {eval_prompts[_prompt_key(ex)]}): "
                    "the evaluation score would be inflated")))
    report.summary = {"tokens": n_tokens, "loss_tokens": n_loss, "loss_token_share": n_loss / max(1, n_tokens)}
    return report


def conversations(example: dict) -> list[dict]:
    """The conversation(s) an example trains on: itself, or prompt + chosen and prompt + rejected (a text row
    is itself, read by `messages_of` as one message)."""
    if "messages" in example or "text" in example:
        return [example]
    return [{"messages": example["prompt"] + example[k]} for k in ("chosen", "rejected")]


def messages_of(conv: dict) -> list[dict]:
    """The messages of a conversation; a text row's text as one message of the role "text"."""
    return conv["messages"] if "messages" in conv else [{"role": "text", "content": conv["text"]}]


def _special_tokens(ex: dict, tok, line: int, report: Report) -> bool:
    """Report every message whose text holds a special token of the template; True if one does."""
    found = False
    for key in ("messages", "prompt", "chosen", "rejected", "text"):
        for j, m in enumerate(messages_of(ex) if key == "text" and "text" in ex else ex.get(key) or []):
            token = find_special_token(m.get("content") or "", tok)
            if token is not None:
                found = True
                report.problems.append(Problem(line, "text" if key == "text" else f"{key}[{j}].content", "error", (
                    f"the text holds {token!r}, a special token of the chat template: it would be read as a "
                    "control token (such as an end of turn or a new role), not as text, and training would "
                    "learn it; remove it, or write it differently (e.g. with a space inside)")))
    return found


def _check_render(conv: dict, tok, max_length: int | None, end_ids: set[int], line: int,
                  report: Report) -> Rendered | None:
    """Template checks of one conversation (length, truncation, tokens with loss, a trained end-of-turn)."""
    chars, size = conversation_chars(messages_of(conv)), conversation_size(messages_of(conv))
    if size > MAX_CHARS and (max_length is None or cut_budget(tok, max_length) > MAX_CHARS):
        n = len(messages_of(conv))
        report.problems.append(Problem(line, "messages", "error", (
            f"too long to check: {chars:,} characters in {n:,} messages (over {MAX_CHARS:,} characters, the most "
            "the validator tokenises" + (" without a max_length" if max_length is None else "") + "): give the "
            "training context length (--max-length / max_length=) to see what training keeps, or split the "
            "conversation")))
        return None
    try:
        r = render(conv, tok, max_length)
    except (TemplateError, ValueError, TypeError) as e:  # a hub template's own refusal, text it cannot encode
        report.problems.append(Problem(line, "messages", "error", f"cannot be rendered: {e}"))
        return None
    if r.truncated and not r.exact:
        wants = any(m["role"] in ("assistant", "text") and m.get("weight", 1) != 0 for m in messages_of(conv))
        sev = "error" if r.n_loss_tokens == 0 and wants else "warning"
        report.problems.append(Problem(line, "messages", sev, (
            f"over the token limit: {chars:,} characters cannot fit in max_length={max_length} tokens (a token "
            f"of this tokenizer spans at most {max_token_chars(tok)} characters); everything after token "
            f"{max_length} is cut, {r.n_loss_tokens} tokens with loss remain")))
    elif r.truncated:
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
    messages = ex["prompt"] if "prompt" in ex else messages_of(ex)
    return near_duplicate_key(" ".join(m.get("content") or "" for m in messages if m["role"] != "assistant"))


def validate_file(path: str | Path, tok, max_length: int | None = None,
                  eval_examples: list[dict] | None = None) -> Report:
    """Format checks (`load_jsonl`, or `load_csv` for a .csv file) and template checks (`validate`) of one
    file, in one report."""
    examples, report = load_file(path)
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
        for m in messages_of(ex):
            per_role[m["role"]] += len(tok(m.get("content") or "", add_special_tokens=False)["input_ids"])
    total = sum(per_example)
    return {"examples": len(examples), "tokens": total, "per_example": per_example, "per_role": dict(per_role),
            "loss_tokens": loss, "loss_token_share": loss / max(1, total),
            "max_tokens": max(per_example, default=0), "mean_tokens": total / max(1, len(per_example)),
            "epochs": epochs, "training_tokens": round(total * epochs)}


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
