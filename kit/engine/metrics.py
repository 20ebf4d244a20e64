"""Generic evaluation metrics as local `evaluate` modules: they load offline, nothing from the hub.

`evaluate.load("accuracy")` would fetch a script from the hub; the kit's metrics are
`evaluate.Metric` subclasses defined here: perplexity, format rate (did the reply end its turn),
exact match, token F1 and ROUGE-L (with the `rouge-score` package), and a base class for
"does the text state the expected fact" accuracies.

Example:
    >>> ExactMatch().compute(predictions=["Paris.", "Rome"], references=["paris", "Madrid"])
    {'exact_match': 0.5}
"""

from __future__ import annotations

import math
import re

import evaluate

import datasets

from .losses import batch_losses
from .train import TokenRows


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


class MatchAccuracy(evaluate.Metric):
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


class Perplexity(evaluate.Metric):
    """exp(mean token loss) from per-text summed losses and token counts."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Perplexity: exp of the mean next-token cross-entropy over all tokens.",
                           "loss_sums: summed token losses per text; token_counts: tokens per text.",
                           loss_sums="float64", token_counts="int64")

    def _compute(self, loss_sums, token_counts):
        mean = sum(loss_sums) / max(1, sum(token_counts))
        return {"perplexity": math.exp(mean), "mean_loss": mean}


class FormatRate(evaluate.Metric):
    """Share of replies that closed their turn with the end-of-turn token within the length limit."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Share of replies that end with the end-of-turn token within the length limit.",
                           "ended: 1 if the reply ended with an end token, else 0.",
                           ended="int32")

    def _compute(self, ended):
        return {"format_rate": sum(ended) / max(1, len(ended))}


def perplexity(model, rows: TokenRows, max_rows: int = 256, batch_size: int = 16) -> dict:
    """Perplexity of `model` on the first `max_rows` pre-tokenised rows (e.g. pre-training validation text)."""
    sums, counts = batch_losses(model, rows, max_rows, batch_size)
    return Perplexity().compute(loss_sums=sums, token_counts=counts)


# ----------------------------------------------------------------------------- comparing texts to references
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, spaces collapsed (the usual answer normalisation)."""
    return " ".join(_ARTICLES.sub(" ", _PUNCT.sub(" ", text.lower())).split())


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalised word multisets of a prediction and a reference (1.0 when both are empty)."""
    from collections import Counter

    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


class ExactMatch(evaluate.Metric):
    """Share of predictions equal to their reference after `normalize_answer`."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Exact match after lower-casing and removing punctuation, articles and extra spaces.",
                           "predictions: generated texts; references: expected texts.",
                           predictions="string", references="string")

    def _compute(self, predictions, references):
        hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
        return {"exact_match": hits / max(1, len(references))}


class TokenF1(evaluate.Metric):
    """Mean word-overlap F1 between predictions and references (`token_f1`)."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Mean F1 of the normalised words shared by a prediction and its reference.",
                           "predictions: generated texts; references: expected texts.",
                           predictions="string", references="string")

    def _compute(self, predictions, references):
        scores = [token_f1(p, r) for p, r in zip(predictions, references)]
        return {"token_f1": sum(scores) / max(1, len(scores))}


class RougeL(evaluate.Metric):
    """Mean ROUGE-L F-measure (longest common subsequence of words), from the `rouge-score` package."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info("Mean ROUGE-L F-measure: the longest common word subsequence of prediction and reference.",
                           "predictions: generated texts; references: expected texts.",
                           predictions="string", references="string")

    def _compute(self, predictions, references):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
        return {"rouge_l": sum(scores) / max(1, len(scores))}
