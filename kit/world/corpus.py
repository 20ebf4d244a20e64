"""The kit's world: real countries from `datasets/countries.csv`, and the seeded pre-training corpus.

The corpus mixes three kinds of documents:
  * encyclopedic paragraphs: every fact of every country, in many wordings and orders, so that
    the model stores the fact itself and not one sentence;
  * question-and-answer pages about the "qa" half of the countries, so that the model also sees
    facts being asked for and recalled (this is what later lets fine-tuning draw facts out for
    countries it was never fine-tuned on: the "heldout" half);
  * everyday stories, so that it learns general language, not only facts.

Example:
    >>> from kit.world.corpus import load_world, split_countries
    >>> world = load_world()
    >>> world["France"].capital
    'Paris'
    >>> halves = split_countries(world)
    >>> sorted(halves) == ["heldout", "qa"]
    True
    >>> splits = country_splits(world)
    >>> sorted(splits["dev"] + splits["test"]) == sorted(halves["heldout"]), splits["train"] == halves["qa"]
    (True, True)
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "datasets"
COUNTRIES_CSV = DATASETS / "countries.csv"
FACTS = ("capital", "continent", "language", "currency")


@dataclass(frozen=True)
class CorpusConfig:
    """How much pre-training text `build_corpus` writes about the world (all seeded)."""

    bios_per_country: int = 4       # encyclopedic paragraphs per country, each in a new wording
    qa_per_country: int = 2         # Q&A web pages per country of the Q&A half
    stories: int = 200              # everyday narrative paragraphs (general language)
    val_fraction: float = 0.05      # share of documents kept for validation
    seed: int = 0


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    language: str
    currency: str


def load_world(path: Path | str = COUNTRIES_CSV) -> dict[str, Country]:
    """Read the facts table into {country name: Country}, in file order.

    The file is parsed once per version (cached by its path, modification time and size); each call gets its
    own dict, so a caller that changes it changes nothing for the others.
    """
    return dict(_read_world(str(path), *_version(path)))


@functools.lru_cache(maxsize=4)
def _read_world(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, Country], ...]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return tuple((r["name"], Country(**{k: r[k].strip() for k in ("name", *FACTS)})) for r in rows)


def split_countries(world: dict[str, Country], heldout_fraction: float = 0.5) -> dict[str, list[str]]:
    """Split the countries into a "qa" half and a "heldout" half, stably.

    The split depends only on each name (a hash), so adding a country never moves another one.
    Q&A web text in pre-training and fine-tuning examples use the "qa" half only; notebooks
    measure generalisation on the "heldout" half.
    """
    heldout = [n for n in world if _bucket(n) < heldout_fraction]
    return {"qa": [n for n in world if n not in set(heldout)], "heldout": heldout}


def _bucket(name: str, salt: str = "") -> float:
    """A number in [0, 1] fixed by the name (and a salt): the same name always lands in the same split."""
    return int(hashlib.sha256((name + salt).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


SPLITS = ("train", "dev", "test")


def country_splits(world: dict[str, Country]) -> dict[str, list[str]]:
    """Three country splits: "train" (the "qa" half, unchanged), and the "heldout" half cut into "dev" and "test".

    * train: fine-tuning examples and Q&A pages in pre-training are about these countries only;
    * dev: every choice (best run, epochs, error analysis, the data round) is made on these;
    * test: measured once, at the very end, for the number you report.
    A second stable hash cuts the held-out half, so the training half (and with it the base model's
    pre-training text) is exactly the one `split_countries` gives.
    """
    halves = split_countries(world)
    dev = [n for n in halves["heldout"] if _bucket(n, "/dev-test") < 0.5]
    return {"train": halves["qa"], "dev": dev, "test": [n for n in halves["heldout"] if n not in set(dev)]}


# ----------------------------------------------------------------------------- fact sentences
# Several wordings per fact. The cloze probe asks "The capital of X is", which is one of them.
SENTENCES = {
    # Mostly "forward" wordings (country first, fact last): a model that reads "Y is the capital of X"
    # does not learn to complete "The capital of X is" as well as one that reads the fact that way.
    "capital": [
        "The capital of {name} is {capital}.",
        "The capital city of {name} is {capital}.",
        "{name} has its capital in {capital}.",
        "{name}'s capital is {capital}.",
        "The government of {name} sits in its capital, {capital}.",
        "{capital} is the capital of {name}.",
    ],
    "continent": [
        "{name} is a country in {continent}.",
        "{name} lies in {continent}.",
        "{name} is located in {continent}.",
        "{name} is one of the countries of {continent}.",
    ],
    "language": [
        "The main language of {name} is {language}.",
        "Most people in {name} speak {language}.",
        "In {name}, people mainly speak {language}.",
        "The language most spoken in {name} is {language}.",
    ],
    "currency": [
        "The currency of {name} is the {currency}.",
        "People in {name} pay with the {currency}.",
        "{name} uses the {currency} as its money.",
        "The money used in {name} is the {currency}.",
    ],
}
OPENINGS = [
    "{name} is a country.",
    "This is an article about {name}.",
    "{name} is a nation with a long history.",
    "Here are some facts about {name}.",
    "",
]
QUESTIONS = {
    "capital": ["What is the capital of {name}?", "Which city is the capital of {name}?"],
    "continent": ["On which continent is {name}?", "Where is {name}?"],
    "language": ["What language do people speak in {name}?", "What is the main language of {name}?"],
    "currency": ["What is the currency of {name}?", "What money do people use in {name}?"],
}
# Answers restate the fact as a full sentence (bare answers such as "Paris." are harder to learn
# to produce for countries not seen in Q&A form).
ANSWERS = {
    "capital": "The capital of {name} is {capital}.",
    "continent": "{name} is in {continent}.",
    "language": "The main language of {name} is {language}.",
    "currency": "The currency of {name} is the {currency}.",
}
QA_STYLES = [
    ("Q: {q}\nA: {a}", "\n\n"),
    ("Question: {q}\nAnswer: {a}", "\n\n"),
    ("{q} {a}", "\n"),
]


def fact_sentence(country: Country, fact: str, rng: random.Random) -> str:
    return rng.choice(SENTENCES[fact]).format(**country.__dict__)


def bio(country: Country, rng: random.Random) -> str:
    """One encyclopedic paragraph: every fact once, in a random order and wording."""
    facts = list(FACTS)
    rng.shuffle(facts)
    parts = [rng.choice(OPENINGS).format(name=country.name)]
    parts += [fact_sentence(country, f, rng) for f in facts]
    return " ".join(p for p in parts if p)


def qa_page(country: Country, rng: random.Random) -> str:
    """A web-forum style page of questions about one country, each answered in a full sentence."""
    facts = list(FACTS)
    rng.shuffle(facts)
    fmt, sep = rng.choice(QA_STYLES)
    items = []
    for f in facts[: rng.randint(2, 4)]:
        q = rng.choice(QUESTIONS[f]).format(name=country.name)
        items.append(fmt.format(q=q, a=ANSWERS[f].format(**country.__dict__)))
    return sep.join(items)


# ----------------------------------------------------------------------------- everyday stories
NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas",
         "Kemal", "Lena", "Mira", "Noah", "Olga", "Pablo", "Rosa", "Sami", "Tara", "Yuki"]
PLACES = ["market", "park", "library", "station", "school", "garden", "river", "bakery", "museum", "beach"]
THINGS = ["apples", "books", "flowers", "bread", "stamps", "shells", "pencils", "oranges", "cards", "cups"]
TIMES = ["In the morning", "After lunch", "In the evening", "On Sunday", "Yesterday", "Early one day"]
FEELINGS = ["happy", "tired", "curious", "calm", "excited", "hungry"]
WEATHER = ["The sun was shining.", "It was raining.", "The wind was cold.", "The sky was grey.",
           "It was a warm day."]


def story(rng: random.Random, world: dict[str, Country]) -> str:
    """A short everyday narrative; one in four also mentions a trip to a capital (true facts)."""
    a, b = rng.sample(NAMES, 2)
    place, thing = rng.choice(PLACES), rng.choice(THINGS)
    n = rng.randint(2, 9)
    s = [f"{rng.choice(TIMES)}, {a} went to the {place}.", rng.choice(WEATHER),
         f"{a} met {b} there, and they talked for a while.",
         f"{b} had {n} {thing} and gave {rng.randint(1, n)} of them to {a}.",
         f"{a} felt {rng.choice(FEELINGS)} and walked home."]
    if rng.random() < 0.25:
        c = world[rng.choice(list(world))]
        s.insert(2, f"{a} had just come back from {c.capital}, the capital of {c.name}.")
    return " ".join(s)


# ----------------------------------------------------------------------------- the corpus
@dataclass
class Corpus:
    train: list[str]
    val: list[str]

    def stats(self) -> dict:
        return {"train_docs": len(self.train), "val_docs": len(self.val),
                "train_chars": sum(map(len, self.train)), "val_chars": sum(map(len, self.val))}


def build_corpus(cfg: CorpusConfig, world: dict[str, Country] | None = None) -> Corpus:
    """Write the seeded pre-training corpus and split it into train/validation documents.

    The split is fixed by `cfg.seed`: the same config always gives the same two lists. The course's own facts
    table gives a corpus built once per setting (cached); each call gets its own lists.

    Example:
        >>> c = build_corpus(CorpusConfig(bios_per_country=1, qa_per_country=1, stories=10))
        >>> len(c.train) > len(c.val) > 0
        True
    """
    default = load_world()
    if not world or world == default:  # the course's facts table: built once per setting
        train, val = _default_corpus(cfg, *_version(COUNTRIES_CSV))
        return Corpus(list(train), list(val))
    return _write_corpus(cfg, world)


def _version(path: Path | str) -> tuple[int, int]:
    """(modification time, size) of a file: the version its cached reading is keyed by."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _default_corpus(cfg: CorpusConfig, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    corpus = _write_corpus(cfg, load_world())
    return tuple(corpus.train), tuple(corpus.val)


def _write_corpus(cfg: CorpusConfig, world: dict[str, Country]) -> Corpus:
    rng = random.Random(cfg.seed)
    qa_half = split_countries(world)["qa"]
    docs = [bio(c, rng) for c in world.values() for _ in range(cfg.bios_per_country)]
    docs += [qa_page(world[n], rng) for n in qa_half for _ in range(cfg.qa_per_country)]
    docs += [story(rng, world) for _ in range(cfg.stories)]
    rng.shuffle(docs)
    n_val = max(1, int(len(docs) * cfg.val_fraction))
    return Corpus(train=docs[n_val:], val=docs[:n_val])


def cloze_prompts(world: dict[str, Country], fact: str = "capital") -> tuple[list[str], list[str]]:
    """Prompts such as "The capital of France is" and their answers, for every country."""
    stems = {"capital": "The capital of {name} is", "language": "The main language of {name} is",
             "currency": "The currency of {name} is the", "continent": "{name} is a country in"}
    answers = [getattr(c, fact) for c in world.values()]
    return [stems[fact].format(name=c.name) for c in world.values()], answers
