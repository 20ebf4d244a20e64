"""Preference pairs as a CSV for a reviewer's spreadsheet, and back (notebook 05's feedback round).

Example:
    >>> export_pairs_csv(pairs, "data/for_reviewer.csv", blind=True)     # doctest: +SKIP
    >>> import_pairs_csv("data/for_reviewer.csv").skipped                  # doctest: +SKIP
    Counter({'unlabelled': 2})
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

from .checks import check_preference
from .sanitize import safe_cell, unsafe_cell


def export_pairs_csv(pairs: list[dict], path: str | Path, blind: bool = False, seed: int = 0) -> Path:
    """Preference pairs as a CSV for a reviewer's spreadsheet: texts to read (prompt, answer_a, answer_b), choice
    ("a", "b", "both_bad" or empty), reason, the exact messages (messages_json). `blind=False`: A is the chosen
    answer, choice "a" (an exact round trip); `blind=True`: A/B in seeded random order, choice left to fill in."""
    rng, text = random.Random(seed), lambda msgs: safe_cell("\n\n".join(m["content"] for m in msgs))
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["prompt", "answer_a", "answer_b", "choice", "reason", "messages_json"])
        for p in pairs:
            a, b = (p["rejected"], p["chosen"]) if blind and rng.random() < 0.5 else (p["chosen"], p["rejected"])
            user = next((m["content"] for m in reversed(p["prompt"]) if m["role"] == "user"), "")
            out.writerow([safe_cell(user), text(a), text(b), "" if blind else "a", "",
                          json.dumps({"prompt": p["prompt"], "a": a, "b": b}, ensure_ascii=False)])
    return Path(path)


class ImportedPairs(list):
    """Preference pairs read from a CSV; `.skipped` counts the rows left out, by reason."""


def import_pairs_csv(path: str | Path) -> ImportedPairs:
    """Labelled rows -> preference pairs; "both_bad", unlabelled and invalid rows are skipped and counted in
    `.skipped`. A row without messages_json is one user message and two one-message answers."""
    pairs, pairs.skipped = ImportedPairs(), Counter()
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's "CSV UTF-8" too
        for row in csv.DictReader(f):
            choice = (row.get("choice") or "").strip().lower().replace(" ", "_")
            if choice not in ("a", "b"):
                pairs.skipped[{"": "unlabelled", "both_bad": "both_bad"}.get(choice, "invalid")] += 1
                continue
            try:
                m = json.loads(row["messages_json"]) if row.get("messages_json") else {
                    "prompt": [{"role": "user", "content": unsafe_cell(row["prompt"])}],
                    **{k: [{"role": "assistant", "content": unsafe_cell(row[f"answer_{k}"])}] for k in ("a", "b")}}
                pair = {"prompt": m["prompt"], "chosen": m[choice], "rejected": m["b" if choice == "a" else "a"]}
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # a cell a person broke
                pairs.skipped["invalid"] += 1
                continue
            if any(p.severity == "error" for p in check_preference(pair)):
                pairs.skipped["invalid"] += 1
            else:
                pairs.append(pair)
    return pairs
