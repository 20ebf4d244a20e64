"""The results contracts: each flat key listed once, the views the CLI and the tables print, typed in, JSON out."""

import json
from dataclasses import dataclass

import pytest

from kit.engine.results import Contract, Key, columns_table, dig
from kit.lessons.results import SFT, STAGE, TEST_QA, BeforeAfter, Countries, QAScore, RecipeFigures

# The CLI's JSON keys are an interface: `kit sft` printed exactly these before the contract existed.
CLI_SFT = {"profile", "lora", "epochs", "seed", "steps", "train_examples", "trainable_params", "train_seconds",
           "train_loss", "train_chat_loss", "train_replay_loss", "val_loss", "heldout_split", "heldout_qa_strict",
           "heldout_qa_strict_ci", "base_heldout_qa_strict", "majority_baseline_strict", "heldout_qa_strict_by_fact",
           "heldout_qa_accuracy", "base_heldout_qa_accuracy", "heldout_qa_by_fact", "format_rate", "ppl_before",
           "ppl_after", "cloze_before", "cloze_after", "cloze_before_train_countries", "cloze_after_train_countries",
           "cloze_before_heldout_countries", "cloze_after_heldout_countries"}
CLI_STAGE = {"refusal_rate", "refusal_ci", "over_refusal_rate", "over_refusal_ci", "refusal_rate_classifier",
             "over_refusal_rate_classifier", "judge_disagreement_rate", "eval_unseen_refusal_rate",
             "eval_unseen_refusal_ci", "eval_unseen_over_refusal_rate", "eval_unseen_over_refusal_ci", "helpfulness",
             "capability", "capability_ci", "redteam_refusal_rate", "redteam_refusal_ci", "redteam_over_refusal_rate",
             "redteam_over_refusal_ci", "eval_prompts"}


def figures(measured: bool = True) -> RecipeFigures:
    training = {"steps": 12, "train_loss": 1.5, "train_chat_loss": 1.2, "train_replay_loss": None, "val_loss": 1.3,
                "lora": False, "epochs": 2, "train_examples": 40, "trainable_params": 1000, "train_seconds": 3.0,
                "planned_steps": 12, "epochs_done": 2.0, "replay_docs": 0, "lr": 1e-3, "stopped": False}
    fig = RecipeFigures("smoke", 0, 0.0, "dev", None, training)
    if measured:
        fig.qa = QAScore(0.5, [0.25, 0.75], 0.75, {"capital": 0.5}, {"capital": 0.75}, [1, 0], ["Peru", "Chile"], 1.0)
        fig.base = QAScore(0.0, [0.0, 0.0], 0.5, {}, {}, [0, 0], ["Peru", "Chile"], 0.5)
        fig.majority_strict = 0.1
        fig.ppl = BeforeAfter(4.0, 4.5)
        fig.cloze = BeforeAfter(Countries(0.9, 0.95, 0.8), Countries(0.85, 0.9, 0.75))
    return fig


def test_the_cli_keys_stay_as_they_were():
    assert set(SFT.names("cli")) == CLI_SFT
    assert set(SFT.flat(figures(), "cli")) == CLI_SFT
    assert set(STAGE.names("cli")) == CLI_STAGE


def test_nested_groups_come_out_under_their_flat_names():
    flat = SFT.flat(figures())
    assert flat["cloze_before_heldout_countries"] == 0.8 and flat["cloze_after_train_countries"] == 0.9
    assert flat["heldout_qa_strict_ci"] == [0.25, 0.75] and flat["base_heldout_qa_strict_rows"] == [0, 0]
    assert flat["steps"] == 12 and flat["train_replay_loss"] is None  # an engine figure: kept when None
    json.dumps(flat)  # JSON-ready
    assert SFT.read(flat, "qa.rows") == [1, 0] and SFT.name("cloze.before.heldout") in flat


def test_an_unmeasured_run_leaves_out_what_it_did_not_measure():
    flat = SFT.flat(figures(measured=False))
    assert "heldout_qa_strict" not in flat and "ppl_before" not in flat and flat["steps"] == 12


def test_views_are_subsets_in_one_order():
    for view in ("cli", "table", "sweep", "brief", "ablation"):
        names = SFT.names(view)
        assert names and list(names) == [n for n in SFT.names() if n in names]
    assert set(TEST_QA.names()) >= {"test_qa_strict", "test_qa_strict_rows", "test_qa_countries"}


def test_a_key_listed_twice_is_refused():
    with pytest.raises(ValueError, match="listed twice: a"):
        Contract([Key("a", "x"), Key("a", "y")])


def test_dig_reads_dataclasses_and_dicts():
    @dataclass
    class Inner:
        value: float

    assert dig({"group": Inner(0.5)}, "group.value") == 0.5
    assert dig({"group": None}, "group.value") is None


@pytest.mark.parametrize("fmt", ["text", "markdown", "html"])
def test_one_table_for_every_output(fmt):
    text = columns_table({"run a": {"x": 0.123456, "ci": [0.1, 0.2]}, "run <b>": {"x": None}}, ["x", "ci"], fmt)
    assert "0.123" in text and "[0.100, 0.200]" in text and "-" in text
    assert ("&lt;b&gt;" in text) == (fmt == "html") and ("| --- |" in text) == (fmt == "markdown")


def test_numbers_print_as_people_read_them():
    from kit.engine.results import number, rounded

    assert [number(x) for x in (0.31669407129339494, 64466.0, 9.547611261950806e-05, 0.0)] == [
        "0.317", "64,466", "9.55e-05", "0.000"]
    assert rounded({"a": 0.123456, "b": [0.98765, 2], "c": "x"}) == {"a": 0.123, "b": [0.988, 2], "c": "x"}
