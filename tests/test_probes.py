"""The strict QA rule, the majority baseline and the three country splits."""

import pytest

from kit.world.chats import QAItem, split_items
from kit.world.corpus import Country, country_splits, load_world, split_countries
from kit.world.probes import (
    cloze_on,
    contains_fact,
    majority_baseline,
    majority_values,
    named_countries,
    score_answers,
    strict_correct,
)


def item(country, fact, expected):
    return QAItem(country, fact, f"question about {country}", "", expected)


def test_strict_rejects_a_wrong_subject_and_accepts_a_correct_answer():
    angola = item("Angola", "continent", "Africa")
    assert contains_fact("Slovakia is in Africa.", "Africa")  # the lenient rule credits it
    assert not strict_correct(angola, "Slovakia is in Africa.", True)
    assert strict_correct(angola, "Angola is in Africa.", True)
    assert not strict_correct(angola, "Angola is in Africa.", False)  # the turn did not end
    assert not strict_correct(angola, "Angola is in Europe.", True)  # the wrong fact
    assert not strict_correct(angola, "Angola is in Africa, like Kenya.", True)  # another country named
    assert not strict_correct(angola, "It is in Africa.", True)  # no subject at all


def test_strict_rule_on_names_that_hide_in_other_names():
    world = load_world()
    guinea = item("Guinea", "continent", "Africa")
    assert named_countries("Equatorial Guinea is in Africa.", world) == ["Equatorial Guinea"]
    assert not strict_correct(guinea, "Equatorial Guinea is in Africa.", True)
    assert strict_correct(guinea, "Guinea is in Africa.", True)
    tiny = {"Djibouti": Country("Djibouti", "Djibouti", "Africa", "French", "Djiboutian franc"), "Peru": world["Peru"]}
    djibouti = item("Djibouti", "capital", "Djibouti")  # a capital named like its country is no other country
    assert strict_correct(djibouti, "The capital of Djibouti is Djibouti.", True, tiny)
    assert not strict_correct(djibouti, "The capital of Peru is Djibouti.", True, tiny)
    ecuador = item("Ecuador", "currency", world["Ecuador"].currency)  # "United States dollar" names no country
    assert strict_correct(ecuador, f"The currency of Ecuador is the {world['Ecuador'].currency}.", True)


def test_score_answers_keeps_rows_in_item_order():
    items = [item("Angola", "continent", "Africa"), item("Peru", "capital", "Lima"),
             item("Chad", "capital", "N'Djamena")]
    replies = [("Slovakia is in Africa.", True), ("The capital of Peru is Lima.", True), ("Lima", False)]
    out = score_answers(items, replies)
    assert out["strict_rows"] == [0, 1, 0] and out["lenient_rows"] == [1, 1, 0]
    assert out["strict"] == pytest.approx(1 / 3) and out["accuracy"] == pytest.approx(2 / 3)
    assert out["countries"] == ["Angola", "Peru", "Chad"] and out["format_rate"] == pytest.approx(2 / 3)
    assert out["strict_by_fact"] == {"continent": 0.0, "capital": 0.5}


def test_majority_baseline_counts_the_most_common_training_value():
    world = load_world()
    values = majority_values(world)
    train = country_splits(world)["train"]
    continents = [world[n].continent for n in train]
    assert values["continent"] == max(set(continents), key=continents.count)
    items = [item("Angola", "continent", "Africa"), item("France", "continent", "Europe"),
             item("Peru", "capital", "Lima")]
    expected = [values["continent"] == "Africa", values["continent"] == "Europe", values["capital"] == "Lima"]
    assert majority_baseline(items, world)["accuracy"] == pytest.approx(sum(expected) / 3)


def test_three_splits_keep_the_training_half_and_cut_the_held_out_one():
    world = load_world()
    splits, halves = country_splits(world), split_countries(world)
    assert splits["train"] == halves["qa"]  # the base model's Q&A pages keep their meaning
    assert set(splits["dev"]) | set(splits["test"]) == set(halves["heldout"])
    assert not set(splits["dev"]) & set(splits["test"]) and splits["dev"] and splits["test"]
    fewer = {n: world[n] for n in list(world)[::2]}  # a split depends on the name alone
    for name in fewer:
        side = next(k for k, v in splits.items() if name in v)
        assert name in country_splits(fewer)[side]
    assert {it.country for it in split_items("test")} == set(splits["test"])
    with pytest.raises(ValueError, match="split must be one of"):
        split_items("heldout")


def test_cloze_reads_any_group_of_countries():
    result = {"hits": {"Peru": True, "Chad": False, "Fiji": True}}
    assert cloze_on(result, ["Peru", "Chad"]) == 0.5 and cloze_on(result, ["Fiji"]) == 1.0
