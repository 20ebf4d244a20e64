"""Notebook 03 trains on what notebook 02 saved (curated, else the training set), else on the generated set."""

import json

from kit.engine import data
from kit.lessons.profiles import get_profile
from kit.lessons.recipe import course_examples
from kit.world.chats import chat_splits
from kit.world.corpus import load_world, split_countries


def chat(q, a):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


PROFILE = get_profile("smoke")
HALVES = split_countries(load_world())
TRAINED, HELDOUT = HALVES["qa"][:3], HALVES["heldout"][0]  # countries fine-tuning may see; one it must not


def test_without_saved_data_it_generates_the_recipes_set(tmp_path):
    examples, source = course_examples(PROFILE, tmp_path / "data")
    assert examples == chat_splits(per_fact=PROFILE.sft.per_fact, seed=PROFILE.sft.seed)["train"]
    assert source.startswith(f"generated: {len(examples)} examples") and "run notebook 02" in source


def test_the_saved_training_set_is_used_and_named(tmp_path):
    saved = [chat(f"Tell me about {TRAINED[0]}.", f"{TRAINED[0]} is a country."),
             chat(f"Tell me about {TRAINED[1]}.", f"{TRAINED[1]} is a country.")]
    data.write_jsonl(tmp_path / "train.jsonl", saved)
    examples, source = course_examples(PROFILE, tmp_path)
    assert examples == saved  # as written: no bookkeeping keys such as _line
    assert source == f"{tmp_path / 'train.jsonl'}: 2 examples saved by notebook 02"


def test_curated_examples_win_over_the_training_set(tmp_path):
    data.write_jsonl(tmp_path / "train.jsonl", [chat(f"Capital of {TRAINED[0]}?", "A city.")] * 3)
    data.write_jsonl(tmp_path / "curated.jsonl", [chat(f"Capital of {TRAINED[1]}?", "Another city.")])
    examples, source = course_examples(PROFILE, tmp_path)
    assert examples == [chat(f"Capital of {TRAINED[1]}?", "Another city.")]
    assert source.startswith(str(tmp_path / "curated.jsonl")) and "1 examples" in source


def test_a_broken_file_is_passed_over_with_its_first_error(tmp_path):
    good = chat(f"Capital of {TRAINED[2]}?", "A city.")
    (tmp_path / "curated.jsonl").write_text("{not json\n")
    data.write_jsonl(tmp_path / "train.jsonl", [good])
    examples, source = course_examples(PROFILE, tmp_path)
    assert examples == [good]
    first, second = source.splitlines()
    assert "curated.jsonl passed over: 1 errors (line 1: malformed JSON" in first
    assert second.startswith(str(tmp_path / "train.jsonl"))
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + '\n{"messages": []}\n')  # one good line, one bad
    examples, source = course_examples(PROFILE, tmp_path)
    assert source.splitlines()[-1].startswith("generated:") and "line 2" in source.splitlines()[1]


def test_held_out_countries_in_the_saved_data_are_pointed_out(tmp_path):
    data.write_jsonl(tmp_path / "train.jsonl", [chat(f"Tell me about {HELDOUT}.", f"{HELDOUT} is a country.")])
    _, source = course_examples(PROFILE, tmp_path)
    assert f"name 1 held-out (dev or test) countries ({HELDOUT})" in source
