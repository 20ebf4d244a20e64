"""Evaluation metrics as local `evaluate` modules (they load offline), plus the probes that use them.

`evaluate.load("accuracy")` would fetch a script from the hub; the kit's metrics are
`evaluate.Metric` subclasses defined here, so `FactCloze().compute(...)` works with no network.

Example:
    >>> FactCloze().compute(predictions=[" Paris. It is", " Rome"], references=["Paris", "Madrid"])
    {'accuracy': 0.5, 'correct': 1, 'total': 2}
"""

from __future__ import annotations

import math
import re

import evaluate
import torch

import datasets

from .corpus import cloze_prompts
from .generate import complete
from .train import TokenRows, causal_lm_loss


def first_clause(text: str) -> str:
    """The completion up to its first line break or sentence end, trimmed: " Paris. It" -> "Paris"."""
    text = text.split("\n")[0].strip()
    for i, ch in enumerate(text):
        if ch in ".?!" and (i + 1 == len(text) or text[i + 1] == " "):  # "D.C." keeps its inner dots
            return text[:i].strip()
    return text


def matches(prediction: str, reference: str) -> bool:
    """True when the completion starts with the reference and the word ends there ("Parisian" is no match)."""
    text, ref = prediction.strip(), reference.strip()
    return text.startswith(ref) and (len(text) == len(ref) or not text[len(ref)].isalnum())


def metric_info(description: str, inputs: str, **features: str) -> evaluate.MetricInfo:
    """The MetricInfo every kit metric needs: a description, its inputs, and their value types."""
    return evaluate.MetricInfo(description=description, citation="", inputs_description=inputs,
                               features=datasets.Features({k: datasets.Value(v) for k, v in features.items()}))


class _FactMatch(evaluate.Metric):
    """Accuracy of generated texts against expected facts under a match rule (`match`)."""

    description = ""

    @staticmethod
    def match(prediction: str, reference: str) -> bool:
        raise NotImplementedError

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(self.description, "predictions: generated texts; references: expected facts.",
                           predictions="string", references="string")

    def _compute(self, predictions, references):
        correct = sum(self.match(p, r) for p, r in zip(predictions, references))
        return {"accuracy": correct / max(1, len(references)), "correct": correct, "total": len(references)}


class FactCloze(_FactMatch):
    """Exact match: the completion starts with the expected fact, and the word ends there."""

    description = "Share of completions that start with the reference, ending on a word boundary."
    match = staticmethod(matches)


class Perplexity(evaluate.Metric):
    """exp(mean token loss) from per-text summed losses and token counts."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Perplexity: exp of the mean next-token cross-entropy over all tokens.",
                           "loss_sums: summed token losses per text; token_counts: tokens per text.",
                           loss_sums="float64", token_counts="int64")

    def _compute(self, loss_sums, token_counts):
        mean = sum(loss_sums) / max(1, sum(token_counts))
        return {"perplexity": math.exp(mean), "mean_loss": mean}


def contains_fact(answer: str, fact: str) -> bool:
    """True when the fact appears in the answer as whole words (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(fact.strip())}(?!\w)", answer, flags=re.IGNORECASE) is not None


class QAAccuracy(_FactMatch):
    """Share of answers that state the expected fact (as whole words, anywhere in the answer)."""

    description = "Share of generated answers that contain the expected fact as whole words."
    match = staticmethod(contains_fact)


class FormatRate(evaluate.Metric):
    """Share of replies that closed their turn with the end-of-turn token within the length limit."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Share of replies that end with the end-of-turn token within the length limit.",
                           "ended: 1 if the reply ended with an end token, else 0.",
                           ended="int32")

    def _compute(self, ended):
        return {"format_rate": sum(ended) / max(1, len(ended))}


def qa_eval(model, tok, items, max_new_tokens: int = 40) -> dict:
    """Ask every QAItem in chat form; QA accuracy, format rate, and (question, answer, expected, ok) rows."""
    from .generate import chat_replies

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


@torch.no_grad()
def perplexity(model, rows: TokenRows, max_rows: int = 256, batch_size: int = 16) -> dict:
    """Perplexity of `model` on the first `max_rows` pre-tokenised rows (e.g. pre-training validation text)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums, counts = [], []
    n = min(len(rows), max_rows)
    for i in range(0, n, batch_size):
        batch = {k: v.to(device) for k, v in rows.collate([rows[j] for j in range(i, min(n, i + batch_size))]).items()}
        loss, k = causal_lm_loss(model, batch)
        sums.append(loss.item())
        counts.append(int(k))
    model.train(was_training)
    return Perplexity().compute(loss_sums=sums, token_counts=counts)
