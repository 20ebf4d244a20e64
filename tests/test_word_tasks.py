"""The shipped word-task dataset (notebook 06's default data) is what its generator writes, and its split is clean."""

import importlib.util
import json
from pathlib import Path

from kit.engine.data import load_jsonl, near_duplicate_key

DATASETS = Path(__file__).resolve().parent.parent / "datasets"


def generator():
    spec = importlib.util.spec_from_file_location("make_word_tasks", DATASETS / "make_word_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_files_are_what_the_generator_writes():
    make = generator()
    assert make.main(["--check"]) == 0, "run python datasets/make_word_tasks.py"
    for split, examples in make.examples().items():
        lines = (DATASETS / f"word_tasks_{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == examples


def test_evaluation_words_are_never_asked_in_training():
    train, train_report = load_jsonl(DATASETS / "word_tasks_train.jsonl")
    evals, eval_report = load_jsonl(DATASETS / "word_tasks_eval.jsonl")
    assert train_report.ok and eval_report.ok and len(train) > 300 and 40 <= len(evals) <= 60
    prompts = {near_duplicate_key(ex["messages"][0]["content"]) for ex in train}
    assert not any(near_duplicate_key(ex["messages"][0]["content"]) in prompts for ex in evals)
    # the held-out words themselves: an evaluation word is never asked about in the same task in training
    asked = {(ex["messages"][1]["content"].split(" is ")[0]) for ex in train}  # e.g. "The plural of mouse"
    assert not any(ex["messages"][1]["content"].split(" is ")[0] in asked for ex in evals)
