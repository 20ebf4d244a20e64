import csv

import pytest

from kit.world.chats import CHAT_QUESTIONS, chat_splits
from kit.world.corpus import (
    ANSWERS,
    COUNTRIES_CSV,
    FACTS,
    CorpusConfig,
    build_corpus,
    cloze_prompts,
    country_splits,
    load_world,
    split_countries,
)

CONTINENTS = {"Africa", "Asia", "Europe", "North America", "South America", "Oceania"}


def test_facts_table_is_complete_and_clean(world):
    assert len(world) >= 150
    with open(COUNTRIES_CSV, newline="") as f:
        assert csv.DictReader(f).fieldnames == ["name", *FACTS]
    capitals = [c.capital for c in world.values()]
    assert len(set(capitals)) == len(capitals)
    assert all(c.continent in CONTINENTS for c in world.values())
    assert all(getattr(c, f) for c in world.values() for f in FACTS)
    assert world["France"].capital == "Paris" and world["Japan"].capital == "Tokyo"


def test_split_is_stable_and_disjoint(world):
    halves = split_countries(world)
    assert set(halves["qa"]).isdisjoint(halves["heldout"])
    assert set(halves["qa"]) | set(halves["heldout"]) == set(world)
    assert 0.35 < len(halves["heldout"]) / len(world) < 0.65
    smaller = dict(list(world.items())[:50])  # removing countries never moves the others
    assert set(split_countries(smaller)["heldout"]) == set(halves["heldout"]) & set(smaller)


def test_corpus_is_seeded_and_split():
    cfg = CorpusConfig(bios_per_country=2, qa_per_country=1, stories=30, seed=7)
    a, b = build_corpus(cfg), build_corpus(cfg)
    assert a.train == b.train and a.val == b.val
    assert set(a.train).isdisjoint(a.val) or len(set(a.train) & set(a.val)) < 3  # stories may repeat
    c = build_corpus(CorpusConfig(bios_per_country=2, qa_per_country=1, stories=30, seed=8))
    assert c.train != a.train


def test_every_country_and_its_capital_is_in_the_training_text(world):
    text = " ".join(build_corpus(CorpusConfig(bios_per_country=2, qa_per_country=1, stories=0)).train)
    missing = [c.name for c in world.values() if c.capital not in text]
    assert missing == []


def test_qa_pages_only_about_the_qa_half(world):
    corpus = build_corpus(CorpusConfig(bios_per_country=0, qa_per_country=2, stories=0))
    heldout = split_countries(world)["heldout"]
    for doc in corpus.train + corpus.val:
        assert not any(f"of {n}?" in doc or f"in {n}?" in doc for n in heldout), doc


def test_cloze_prompts_align_with_answers():
    world = load_world()
    prompts, answers = cloze_prompts(world)
    assert prompts[list(world).index("France")] == "The capital of France is"
    assert answers[list(world).index("France")] == "Paris"


def test_edited_templates_reach_the_generated_examples(world):
    questions = {fact: list(qs) for fact, qs in CHAT_QUESTIONS.items()}
    questions["capital"] = ["Capital of {name}, please?"]
    answers = {**ANSWERS, "capital": "{capital} is where the government of {name} sits."}
    edited = chat_splits(world, per_fact=1, questions=questions, answers=answers)
    default = chat_splits(world, per_fact=1)
    pairs = [(ex["messages"][-2]["content"], ex["messages"][-1]["content"]) for split in edited.values()
             for ex in split]
    capital = [(q, a) for q, a in pairs if q.startswith("Capital of ")]
    splits = country_splits(world)
    assert len(capital) == len(splits["train"]) + len(splits["dev"])  # the test countries are in neither
    name = capital[0][0].removeprefix("Capital of ").removesuffix(", please?")
    assert capital[0][1] == f"{world[name].capital} is where the government of {name} sits."
    assert not any("The capital of" in a for _, a in pairs)  # the old capital answer is gone everywhere
    assert len(edited["train"]) == len(default["train"])  # only the wording changed
    assert CHAT_QUESTIONS["capital"][0] == "What is the capital of {name}?"  # the module's lists are untouched


def test_broken_templates_are_listed_at_once(world):
    questions = {**CHAT_QUESTIONS, "capital": ["What is the capital?"], "currency": []}
    answers = {**ANSWERS, "language": "People in {name} speak {lang}."}
    with pytest.raises(ValueError) as e:
        chat_splits(world, questions=questions, answers=answers)
    msg = str(e.value)
    assert "questions['currency'] is missing or empty" in msg
    assert "'What is the capital?' has no {name}" in msg
    assert "uses {lang}" in msg and "{capital}" in msg
