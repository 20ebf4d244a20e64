"""The course's chat examples: questions about the countries' facts, answered in one sentence.

`qa_items` makes the questions (with their expected answers) for a list of countries, `chat_examples`
turns them into chats, and `chat_splits` / `split_items` give the train, dev and test sets by country
(`kit.world.corpus.country_splits`), so that evaluation asks about countries never fine-tuned on.

Example:
    >>> item = split_items("dev")[0]
    >>> item.country in item.question and bool(item.expected)
    True
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass

from .corpus import ANSWERS, FACTS, SPLITS, Country, country_splits, load_world

CHAT_QUESTIONS = {
    "capital": ["What is the capital of {name}?", "Which city is the capital of {name}?",
                "Tell me the capital of {name}.", "Name the capital city of {name}.",
                "What city is {name}'s capital?"],
    "continent": ["On which continent is {name}?", "Which continent is {name} in?", "Where is {name}?"],
    "language": ["What language do people speak in {name}?", "What is the main language of {name}?",
                 "Which language is most spoken in {name}?"],
    "currency": ["What is the currency of {name}?", "What money do people use in {name}?",
                 "Which currency does {name} use?"],
}
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You answer questions about countries in one sentence.",
                  "You are a friendly geography tutor."]


@dataclass(frozen=True)
class QAItem:
    """One question about one fact of one country, with the answer sentence and the bare fact."""

    country: str
    fact: str
    question: str
    answer: str
    expected: str


def check_templates(questions: dict[str, list[str]], answers: dict[str, str]) -> None:
    """Raise one ValueError listing every problem of edited question / answer templates (see `CHAT_QUESTIONS`).

    Every fact needs at least one question with `{name}` in it, and one answer; answers may use
    `{name}` and the facts' own fields (`{capital}`, `{continent}`, `{language}`, `{currency}`).
    """
    fields = {"name", *FACTS}
    problems = []
    for fact in FACTS:
        if not questions.get(fact):
            problems.append(f"questions[{fact!r}] is missing or empty: give at least one question")
        if not answers.get(fact):
            problems.append(f"answers[{fact!r}] is missing or empty: give the answer sentence")
    for where, texts in [*((f"questions[{f!r}]", qs) for f, qs in questions.items()),
                         *((f"answers[{f!r}]", [a]) for f, a in answers.items())]:
        for text in texts:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
            if where.startswith("questions") and "name" not in used:
                problems.append(f"{where}: {text!r} has no {{name}}, so it asks about no country")
            for name in sorted(used - fields):
                problems.append(f"{where}: {text!r} uses {{{name}}}; allowed: "
                                + ", ".join(f"{{{f}}}" for f in ("name", *FACTS)))
    if problems:
        raise ValueError("the chat templates have problems:\n  - " + "\n  - ".join(problems))


def qa_items(world: dict[str, Country], countries: list[str], per_fact: int = 1, seed: int = 0, *,
             questions: dict[str, list[str]] | None = None, answers: dict[str, str] | None = None) -> list[QAItem]:
    """Questions about every fact of the given countries, `per_fact` phrasings each (seeded).

    `questions` / `answers`: edited copies of `CHAT_QUESTIONS` / `ANSWERS` (default: those).
    """
    questions = CHAT_QUESTIONS if questions is None else questions
    answers = ANSWERS if answers is None else answers
    check_templates(questions, answers)
    rng = random.Random(seed)
    items = []
    for name in countries:
        c = world[name]
        for fact in FACTS:
            for q in rng.sample(questions[fact], min(per_fact, len(questions[fact]))):
                items.append(QAItem(name, fact, q.format(name=name), answers[fact].format(**c.__dict__),
                                    getattr(c, fact)))
    return items


def split_items(split: str = "dev", world: dict[str, Country] | None = None) -> list[QAItem]:
    """The evaluation questions of one country split ("train", "dev" or "test"): every fact, one wording each.

    Example:
        >>> {it.fact for it in split_items("dev")} == set(FACTS)
        True
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    world = world or load_world()
    return qa_items(world, country_splits(world)[split])


def _extra_tasks(c: Country, rng: random.Random) -> list[tuple[str, str]]:
    """Non-question tasks: a short explanation and a rewrite, both restating the facts."""
    overview = ["Tell me about {name}.", "Describe {name} in two sentences.", "Give me a short overview of {name}."]
    return [
        (rng.choice(overview).format(name=c.name),
         f"{c.name} is a country in {c.continent}. Its capital is {c.capital}, most people speak "
         f"{c.language}, and the currency is the {c.currency}."),
        (f"Turn this fact into a question: The capital of {c.name} is {c.capital}.",
         f"What is the capital of {c.name}?"),
    ]


def chat_examples(world: dict[str, Country], countries: list[str], per_fact: int = 2, extras: bool = True,
                  system_share: float = 0.3, seed: int = 0, *, questions: dict[str, list[str]] | None = None,
                  answers: dict[str, str] | None = None) -> list[dict]:
    """Chat examples (OpenAI fine-tuning format) about the given countries, answers restating the fact.

    `questions` / `answers`: edited copies of `CHAT_QUESTIONS` / `ANSWERS` (default: those).

    Example:
        >>> ex = chat_examples(load_world(), ["France"], per_fact=1, extras=False)[0]
        >>> [m["role"] for m in ex["messages"]][-2:]
        ['user', 'assistant']
    """
    rng = random.Random(seed)
    pairs = [(it.question, it.answer) for it in qa_items(world, countries, per_fact, seed, questions=questions,
                                                          answers=answers)]
    if extras:
        pairs += [p for name in countries for p in _extra_tasks(world[name], rng)]
    rng.shuffle(pairs)
    out = []
    for q, a in pairs:
        msgs = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < system_share else []
        out.append({"messages": msgs + [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


def chat_splits(world: dict[str, Country] | None = None, per_fact: int = 2, seed: int = 0, *,
                questions: dict[str, list[str]] | None = None,
                answers: dict[str, str] | None = None) -> dict[str, list[dict]]:
    """Train examples about the "train" countries; evaluation examples about the "dev" countries only.

    No evaluation country appears anywhere in a training example, so the evaluation measures what
    fine-tuning draws out of pre-training, not what it was shown. The "test" countries stay out of
    both (`country_splits`): they are measured once, at the end of the course. `questions` / `answers`:
    edited copies of `CHAT_QUESTIONS` / `ANSWERS` (default: those), e.g. from notebook 02.
    """
    world = world or load_world()
    splits = country_splits(world)
    wording = {"questions": questions, "answers": answers}
    return {"train": chat_examples(world, splits["train"], per_fact, seed=seed, **wording),
            "eval": chat_examples(world, splits["dev"], 1, extras=False, seed=seed + 1, **wording)}


def mentioned_countries(examples: list[dict], countries: list[str], world: dict[str, Country]) -> list[str]:
    """Which of `countries` are named in the examples' messages (as whole words, not inside a
    currency name such as "United States dollar")."""
    text = " ".join(m["content"] for ex in examples for m in ex["messages"])
    for cur in sorted({c.currency for c in world.values()}, key=len, reverse=True):
        text = text.replace(cur, " ")
    return [c for c in countries if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text)]
