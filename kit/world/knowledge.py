"""General knowledge beyond the countries world: what a model trained on the web knows and the kit's own cannot.

`datasets/general_knowledge.jsonl` holds 105 facts (science, geography, history, language, numbers,
everyday life), each asked two ways: a chat question ("Which planet is closest to the Sun?") and a
cloze for plain completion ("The planet closest to the Sun is"), with the answers that count as right.
`datasets/everyday_english.txt` is a page of ordinary English prose, written for the kit.

  * `knowledge_cloze`: greedy completion of each cloze; right when its first line names an answer;
  * `knowledge_qa`: greedy chat reply to each question; right when it names an answer anywhere
    (lenient: a reply that also says something wrong still counts). This is the capability probe of
    notebooks 03 and 04: what fine-tuning must not take away;
  * `everyday_requests`: 120 ordinary requests (cooking, travel, school, chores, trivia), for training data that
    keeps a chat model helpful;
  * `bits_per_char`: how well a model predicts everyday English. Two models with different tokenizers
    cut the same text into different numbers of tokens, so their per-token losses do not compare; the
    loss per character does.

Example:
    >>> items = knowledge_items()
    >>> len(items), items[0].question
    (105, 'What gas do plants take in from the air to make their food?')
    >>> KnowledgeMatch().compute(predictions=["It is carbon dioxide."], references=["carbon dioxide|CO2"])["accuracy"]
    1.0
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass

from ..engine.generate import chat_replies, complete
from ..engine.metrics import MatchAccuracy
from ..engine.stats import bootstrap_ci
from .corpus import DATASETS

KNOWLEDGE_JSONL = DATASETS / "general_knowledge.jsonl"
EVERYDAY_TXT = DATASETS / "everyday_english.txt"
REQUESTS_TXT = DATASETS / "everyday_requests.txt"
REPLY_TOKENS = 24  # new tokens of a reply to a general-knowledge question: room for a sentence with the answer


@dataclass(frozen=True)
class Fact:
    question: str               # asked in a chat
    cloze: str                  # completed as plain text
    answers: tuple[str, ...]    # any of them, as whole words, counts as right


@functools.lru_cache(maxsize=1)
def knowledge_items() -> tuple[Fact, ...]:
    """The facts of `datasets/general_knowledge.jsonl` (read once)."""
    rows = [json.loads(line) for line in KNOWLEDGE_JSONL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple(Fact(r["question"], r["cloze"], tuple(r["answers"])) for r in rows)


def names_answer(text: str, answers: str | tuple[str, ...] | list[str]) -> bool:
    """True when `text` holds one of the answers as whole words, case-blind ("|" separates answers in a string)."""
    options = answers.split("|") if isinstance(answers, str) else answers
    return any(re.search(rf"(?<!\w){re.escape(a.strip())}(?!\w)", text, re.IGNORECASE) for a in options if a.strip())


class KnowledgeMatch(MatchAccuracy):
    """Share of texts that name one of their accepted answers (references: answers joined by "|")."""

    description = "Share of generated texts that name an accepted answer as whole words, anywhere."
    match = staticmethod(names_answer)


def _scored(texts: list[str], facts: tuple[Fact, ...]) -> dict:
    rows = [int(names_answer(t, f.answers)) for t, f in zip(texts, facts)]
    acc = KnowledgeMatch().compute(predictions=texts, references=["|".join(f.answers) for f in facts])["accuracy"]
    return {"accuracy": acc, "ci": list(bootstrap_ci(rows)["ci"]), "rows": rows,
            "examples": [(f.question, t, f.answers[0], bool(r)) for f, t, r in zip(facts, texts, rows)]}


def knowledge_cloze(model, tok, n: int | None = None, max_new_tokens: int = 8) -> dict:
    """Plain completion of the first `n` clozes (all by default): `accuracy`, its 95% `ci`, per-fact `rows`,
    and `examples` (cloze, completion, first answer, right)."""
    facts = knowledge_items()[:n]
    texts = complete(model, tok, [f.cloze for f in facts], max_new_tokens=max_new_tokens)
    out = _scored([t.strip().split("\n")[0] for t in texts], facts)
    out["examples"] = [(f.cloze, t, a, r) for (_, t, a, r), f in zip(out["examples"], facts)]
    return out


def knowledge_qa(model, tok, n: int | None = None, max_new_tokens: int = REPLY_TOKENS, chat=None) -> dict:
    """Chat replies to the first `n` questions (all by default), scored leniently: `accuracy`, `ci`, `rows`,
    `examples` (question, reply, first answer, right). `chat` (prompts -> replies) replaces the plain chat,
    e.g. a guarded one."""
    facts = knowledge_items()[:n]
    questions = [f.question for f in facts]
    if chat is not None:
        replies = chat(questions)
    else:
        replies = [r for r, _ in chat_replies(model, tok, [[{"role": "user", "content": q}] for q in questions],
                                              max_new_tokens=max_new_tokens)]
    return _scored(replies, facts)


def everyday_requests() -> list[str]:
    """The ordinary requests of `datasets/everyday_requests.txt`: 80 everyday tasks ("How do I boil an egg so the
    yolk stays soft?"), then 40 trivia questions, none of them about a fact of the general-knowledge probe: what a
    chat model is asked most of the time."""
    return [line.strip() for line in REQUESTS_TXT.read_text(encoding="utf-8").splitlines() if line.strip()]


def everyday_text() -> list[str]:
    """The paragraphs of `datasets/everyday_english.txt`."""
    return [p.strip() for p in EVERYDAY_TXT.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def bits_per_char(model, tok, texts: list[str] | None = None) -> float:
    """Bits per character of `texts` (default: the everyday English page) under the model: the summed
    next-token loss of each text (after the tokenizer's own document start), in bits, over its characters.

    Example:
        >>> round(bits_per_char(model, tok), 2)    # doctest: +SKIP
        1.07
    """
    import torch

    from ..engine.losses import causal_lm_loss, eval_mode
    from ..engine.tokenizer import document_start

    texts = texts if texts is not None else everyday_text()
    device = next(model.parameters()).device
    start = document_start(tok)
    nats, chars = 0.0, 0
    with eval_mode(model):
        for text in texts:
            ids = start + tok(text, add_special_tokens=False)["input_ids"]
            scored = text if start else text[len(tok.decode(ids[:1])):]  # no start token: the first is not predicted
            x = torch.tensor([ids], device=device)  # (1, T)
            loss, _ = causal_lm_loss(model, {"input_ids": x[:, :-1], "labels": x[:, 1:]})
            nats, chars = nats + float(loss), chars + len(scored)
    return nats / max(1, chars) / math.log(2)
