"""The course's probes of what a model knows about the world: the capital cloze and country QA.

Both generate greedily and score with local `evaluate` metrics built on the engine's
`MatchAccuracy`: `FactCloze` (the completion starts with the fact) and `QAAccuracy` (the answer
states the fact as whole words).

Example:
    >>> FactCloze().compute(predictions=[" Paris. It is", " Rome"], references=["Paris", "Madrid"])
    {'accuracy': 0.5, 'correct': 1, 'total': 2}
"""

from __future__ import annotations

import re

from ..engine.generate import chat_replies, complete
from ..engine.metrics import FormatRate, MatchAccuracy, first_clause, matches
from .corpus import cloze_prompts


class FactCloze(MatchAccuracy):
    """Exact match: the completion starts with the expected fact, and the word ends there."""

    description = "Share of completions that start with the reference, ending on a word boundary."
    match = staticmethod(matches)


def contains_fact(answer: str, fact: str) -> bool:
    """True when the fact appears in the answer as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(fact.strip())}(?!\w)", answer, flags=re.IGNORECASE) is not None


class QAAccuracy(MatchAccuracy):
    """Share of answers that state the expected fact (as whole words, anywhere in the answer)."""

    description = "Share of generated answers that contain the expected fact as whole words."
    match = staticmethod(contains_fact)


def qa_eval(model, tok, items, max_new_tokens: int = 40) -> dict:
    """Ask every QAItem in chat form; QA accuracy, format rate, and (question, answer, expected, ok) rows."""
    replies = chat_replies(model, tok, [[{"role": "user", "content": it.question}] for it in items],
                           max_new_tokens=max_new_tokens)
    answers = [a for a, _ in replies]
    acc = QAAccuracy().compute(predictions=answers, references=[it.expected for it in items])
    fmt = FormatRate().compute(ended=[int(e) for _, e in replies])
    rows = [(it.question, a, it.expected, contains_fact(a, it.expected)) for it, a in zip(items, answers)]
    by_fact: dict[str, list[bool]] = {}
    for it, row in zip(items, rows):
        by_fact.setdefault(it.fact, []).append(row[3])
    return {"accuracy": acc["accuracy"], "correct": acc["correct"], "total": acc["total"],
            "format_rate": fmt["format_rate"], "rows": rows,
            "by_fact": {f: sum(v) / len(v) for f, v in by_fact.items()}}


def fact_cloze(model, tok, world, fact: str = "capital", max_new_tokens: int = 12) -> dict:
    """Greedy completion of "The capital of X is" for every country; exact match of the fact.

    Returns the metric's dict plus `examples`: (prompt, completion, expected) triples.
    """
    prompts, answers = cloze_prompts(world, fact)
    outs = complete(model, tok, prompts, max_new_tokens=max_new_tokens)
    result = FactCloze().compute(predictions=outs, references=answers)
    result["examples"] = list(zip(prompts, [first_clause(o) for o in outs], answers))
    return result
