"""The course's probes of what a model knows about the world: the capital cloze and country QA.

Both generate greedily and score with local `evaluate` metrics built on the engine's
`MatchAccuracy`: `FactCloze` (the completion starts with the fact) and two QA rules:
  * lenient (`QAAccuracy`): the answer states the expected fact as whole words, anywhere. It credits
    "Slovakia is in Africa." for a question about Angola;
  * strict (`strict_correct`, the headline): the answer is about the country asked for and no other,
    states the fact, and the model ended its turn.
`majority_baseline` is what a model would score that knows the format but no facts: it always gives
the most common value of each fact type among the training countries.

Example:
    >>> FactCloze().compute(predictions=[" Paris. It is", " Rome"], references=["Paris", "Madrid"])
    {'accuracy': 0.5, 'correct': 1, 'total': 2}
    >>> from kit.world.chats import QAItem
    >>> item = QAItem("Angola", "continent", "Where is Angola?", "Angola is in Africa.", "Africa")
    >>> contains_fact("Slovakia is in Africa.", "Africa"), strict_correct(item, "Slovakia is in Africa.", True)
    (True, False)
    >>> strict_correct(item, "Angola is in Africa.", True), strict_correct(item, "Angola is in Africa.", False)
    (True, False)
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from ..engine.generate import chat_replies, complete
from ..engine.metrics import FormatRate, MatchAccuracy, first_clause, matches
from .chats import QAItem
from .corpus import FACTS, cloze_prompts, country_splits, load_world


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


@functools.lru_cache(maxsize=4)
def _names_pattern(world_key: tuple[str, ...], currencies: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern]:
    longest = lambda names: "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))  # noqa: E731
    return (re.compile(rf"(?<!\w)(?:{longest(world_key)})(?!\w)"), re.compile(longest(currencies)))


def named_countries(text: str, world=None) -> list[str]:
    """The countries a text names, in order, as whole words; the longest name wins ("Equatorial Guinea" is
    not also "Guinea"), and currency names ("United States dollar") name no country.

    Example:
        >>> named_countries("The currency of Ecuador is the United States dollar, as in Equatorial Guinea? No.")
        ['Ecuador', 'Equatorial Guinea']
    """
    world = world or load_world()
    names, money = _names_pattern(tuple(world), tuple(sorted({c.currency for c in world.values()})))
    return names.findall(money.sub(" ", text))


def strict_correct(item: QAItem, answer: str, ended: bool, world=None) -> bool:
    """The strict rule: the model ended its turn, the answer states the expected fact (whole words), names the
    country asked about, and names no other country (a capital that shares its country's name is no other)."""
    if not (ended and contains_fact(answer, item.expected)):
        return False
    named = set(named_countries(answer, world))
    return item.country in named and not named - {item.country, item.expected}


def majority_values(world=None, countries: list[str] | None = None) -> dict[str, str]:
    """The most common value of each fact type among `countries` (default: the training countries)."""
    world = world or load_world()
    countries = countries if countries is not None else country_splits(world)["train"]
    return {f: Counter(getattr(world[n], f) for n in countries).most_common(1)[0][0] for f in FACTS}


def majority_baseline(items: list[QAItem], world=None) -> dict:
    """What always answering the training countries' most common value of each fact type scores on `items`
    (in the strict form: the right country, that value, the turn ended), overall and per fact type."""
    values = majority_values(world)
    hits: dict[str, list[int]] = {}
    for it in items:
        hits.setdefault(it.fact, []).append(int(values[it.fact] == it.expected))
    total = [h for v in hits.values() for h in v]
    return {"accuracy": sum(total) / max(1, len(total)), "by_fact": {f: sum(v) / len(v) for f, v in hits.items()},
            "values": values}


def qa_eval(model, tok, items, max_new_tokens: int = 40) -> dict:
    """Ask every QAItem in chat form. Returns strict and lenient accuracy (`strict`, `accuracy`), per fact
    type (`strict_by_fact`, `by_fact`), the format rate, per-question 0/1 rows (`strict_rows`, `lenient_rows`,
    in the order of `items`, for paired comparisons) and (question, answer, expected, strict ok) `rows`."""
    replies = chat_replies(model, tok, [[{"role": "user", "content": it.question}] for it in items],
                           max_new_tokens=max_new_tokens)
    return score_answers(items, replies)


def score_answers(items, replies: list[tuple[str, bool]]) -> dict:
    """`qa_eval`'s figures for given (answer, ended) replies, e.g. from a guarded chat."""
    world = load_world()
    answers = [a for a, _ in replies]
    acc = QAAccuracy().compute(predictions=answers, references=[it.expected for it in items])
    fmt = FormatRate().compute(ended=[int(e) for _, e in replies])
    strict = [int(strict_correct(it, a, e, world)) for it, (a, e) in zip(items, replies)]
    lenient = [int(contains_fact(a, it.expected)) for it, a in zip(items, answers)]
    rows = [(it.question, a, it.expected, bool(s)) for it, a, s in zip(items, answers, strict)]

    def by_fact(flags: list[int]) -> dict[str, float]:
        groups: dict[str, list[int]] = {}
        for it, ok in zip(items, flags):
            groups.setdefault(it.fact, []).append(ok)
        return {f: sum(v) / len(v) for f, v in groups.items()}

    return {"strict": sum(strict) / max(1, len(strict)), "accuracy": acc["accuracy"], "correct": acc["correct"],
            "total": acc["total"], "format_rate": fmt["format_rate"], "rows": rows, "strict_rows": strict,
            "lenient_rows": lenient, "countries": [it.country for it in items],
            "strict_by_fact": by_fact(strict), "by_fact": by_fact(lenient)}


def fact_cloze(model, tok, world, fact: str = "capital", max_new_tokens: int = 12) -> dict:
    """Greedy completion of "The capital of X is" for every country; exact match of the fact.

    Returns the metric's dict plus `examples`: (prompt, completion, expected) triples, and `hits`:
    {country: right or not}, so that the probe can be read for any group of countries (`cloze_on`).
    """
    prompts, answers = cloze_prompts(world, fact)
    outs = complete(model, tok, prompts, max_new_tokens=max_new_tokens)
    result = FactCloze().compute(predictions=outs, references=answers)
    result["examples"] = list(zip(prompts, [first_clause(o) for o in outs], answers))
    result["hits"] = {name: matches(o, a) for name, o, a in zip(world, outs, answers)}
    return result


def cloze_on(result: dict, countries: list[str]) -> float:
    """The cloze accuracy of a `fact_cloze` result on some countries only (e.g. the never-fine-tuned ones)."""
    hits = [result["hits"][n] for n in countries]
    return sum(hits) / max(1, len(hits))
