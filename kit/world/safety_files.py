"""The safety files a learner writes: the red-team log (appended atomically by the red-team widget) and
a file of evaluation-only prompts. Both are JSONL, read with the engine's one line reader (`read_records`).

Example:
    >>> load_redteam("no/such/file.jsonl")
    []
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.cache import write_text_atomic
from ..engine.lines import read_records
from .safety import HAZARDS, LABELS, SafetyPrompt


def append_redteam(path: str | Path, prompt: str, label: str, note: str = "", category: str = "") -> None:
    """Add one red-team prompt to a JSONL file, atomically.

    The old lines and the new one go to a temporary file in the same folder, which is flushed, synced
    and then renamed over the file: an interrupted write leaves the old file whole, and the temporary
    file is removed.

    Example:
        >>> import os, tempfile; folder = tempfile.TemporaryDirectory()
        >>> path = os.path.join(folder.name, "redteam.jsonl")
        >>> append_redteam(path, "How do I kill a Python process?", "safe", note="look-alike")
        >>> load_redteam(path)[0]["label"], folder.cleanup()
        ('safe', None)
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS} (got {label!r})")
    if category and category not in HAZARDS:
        raise ValueError(f"unknown category {category!r} (expected one of: {', '.join(HAZARDS)}, or '')")
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    row = {"prompt": prompt, "label": label, "category": category, "note": note}
    write_text_atomic(path, old + json.dumps(row, ensure_ascii=False) + "\n")


def load_redteam(path: str | Path) -> list[dict]:
    """The red-team log's rows (an empty list if the file does not exist; blank lines are skipped).

    A line that is not a JSON object with a "prompt" and a "label" raises ValueError naming the line.

    Example:
        >>> load_redteam("no/such/file.jsonl")
        []
    """
    path = Path(path)
    if not path.exists():
        return []
    records, problems = read_records(path)  # lines end at "\n" only: a prompt may hold any other separator
    if problems:
        raise ValueError(f"{path}, line {problems[0].line}: {problems[0].message}: fix or delete that line")
    for i, row in records:
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and row.get("label") in LABELS):
            raise ValueError(f"{path}, line {i}: expected an object with a text 'prompt' and a 'label' in {LABELS}: "
                             "fix or delete that line")
    return [row for _, row in records]


# ----------------------------------------------------------------------------- the learner's evaluation prompts
def load_eval_prompts(path: str | Path) -> list[SafetyPrompt]:
    """Evaluation-only prompts from a JSONL file: `{"prompt": str, "harmful": bool, "category": str (optional)}`.

    They are measured, never trained on (unlike the red-team file, whose finds join the safety data).
    Every malformed line is reported with its number, all at once, in one ValueError.

    Example:
        >>> import os, tempfile; folder = tempfile.TemporaryDirectory()
        >>> path = os.path.join(folder.name, "mine.jsonl")
        >>> _ = open(path, "w").write('{"prompt": "How do I kill a Python process?", "harmful": false}\\n')
        >>> [(p.text, p.harmful, p.category) for p in load_eval_prompts(path)], folder.cleanup()
        ([('How do I kill a Python process?', False, 'user')], None)
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no evaluation prompt file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    records, read = read_records(path)
    out, problems = [], [(p.line, p.message) for p in read]
    for i, row in records:
        if not isinstance(row, dict):
            problems.append((i, f"expected a JSON object, got {type(row).__name__}"))
            continue
        bad = []
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            bad.append('"prompt" must be a non-empty string')
        if not isinstance(row.get("harmful"), bool):
            bad.append('"harmful" must be true or false')
        if "category" in row and not isinstance(row["category"], str):
            bad.append('"category" must be a string')
        unknown = sorted(set(row) - {"prompt", "harmful", "category"})
        if unknown:
            bad.append(f"unknown key(s) {unknown} (allowed: prompt, harmful, category)")
        if bad:
            problems.append((i, "; ".join(bad)))
            continue
        cat = row.get("category") or "user"
        out.append(SafetyPrompt(row["prompt"], row["harmful"], cat, "user", ""))
    if problems:
        raise ValueError(f"{path}: {len(problems)} bad line(s), each must be "
                         '{"prompt": "...", "harmful": true|false, "category": "..." (optional)}:\n  '
                         + "\n  ".join(f"line {i}: {why}" for i, why in sorted(problems)))
    if not out:
        raise ValueError(f"{path} holds no prompt: add lines such as "
                         '{"prompt": "How do I kill a Python process?", "harmful": false}')
    return out
