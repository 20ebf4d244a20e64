"""Notebook 05's rounds: sweeps of real fine-tuning runs, run records, error analysis, targeted data, the CLI."""

import dataclasses
import json

import pytest

from kit.engine import runs, sweeps
from kit.engine.config import ConfigError
from kit.lessons.iterate import best_run, error_analysis, sft_changes, sft_run_fn, targeted_examples
from kit.lessons.profiles import PROFILES, CourseSFTConfig
from kit.world.chats import QAItem, split_items
from kit.world.corpus import country_splits, load_world, split_countries


@pytest.fixture
def sft_profile(tiny_profile):
    return dataclasses.replace(tiny_profile, sft=CourseSFTConfig(epochs=1, batch_size=4, seq_len=64, log_every=1,
                                                           lr=3e-3, lora_lr=1e-2, lora_r=4, lora_alpha=8))


def test_sweep_fields_map_to_the_fine_tuning_config(sft_profile):
    assert sft_changes(sft_profile, {"lr": 1e-3, "lora_r": 8}) == {"lora_r": 8, "lora": True, "lora_lr": 1e-3}
    assert sft_changes(sft_profile, {"lr": 1e-3}) == {"lr": 1e-3}
    with pytest.raises(ConfigError, match=r"\['learning_rate'\]"):
        sft_changes(sft_profile, {"learning_rate": 1})


def test_real_sweep_records_finished_and_failed_runs(cache, sft_profile, tmp_path):
    points = [{"lr": -1.0}, {"lr": 3e-3}]  # the first is refused by the config check inside its run
    out = sweeps.sweep(points, sft_run_fn(sft_profile), name="s", root=tmp_path, progress=False)
    assert [r["status"] for r in out] == ["failed", "finished"]  # the sweep went on after the bad point
    recorded = {r["name"]: r for r in runs.list_runs(tmp_path)}
    ok, bad = recorded["s-lr=0.003"], recorded["s-lr=-1.0"]
    assert ok["status"] == "finished" and 0 <= ok["results"]["heldout_qa_accuracy"] <= 1
    assert 0 <= ok["results"]["heldout_qa_strict"] <= ok["results"]["heldout_qa_accuracy"]
    assert ok["datasets"]["train"]["rows"] > 0 and ok["config"]["lr"] == ok["config"]["sft.lr"] == 3e-3
    assert (tmp_path / "s-lr=0.003" / "model" / "config.json").exists()
    assert [e["event"] for e in runs.metrics(ok)].count("step") >= 1
    assert bad["status"] == "failed" and "lr must be a positive number" in bad["error"]
    assert ok["params"] == {"lr": 3e-3} and bad["params"] == {"lr": -1.0}
    again = sweeps.sweep(points[1:], sft_run_fn(sft_profile), name="s", root=tmp_path, progress=False)
    assert again[0]["started"] == ok["started"]  # finished: loaded, not trained again
    assert best_run(again)["name"] == "s-lr=0.003"


def test_finetune_records_its_own_run_by_default(cache, sft_profile):
    from kit.lessons.artifacts import base_model
    from kit.lessons.recipe import finetune_recipe as finetune

    finetune(sft_profile, base_model(sft_profile), measure=False)
    (rec,) = runs.list_runs()
    assert rec["name"].startswith("sft-tiny-full-") and rec["status"] == "finished"
    assert rec["config"]["sft.epochs"] == 1 and rec["results"]["train_loss"] > 0


def test_error_analysis_groups_by_fact_continent_and_wording():
    world = load_world()
    items = [QAItem("Italy", "capital", "What is the capital of Italy?", "", "Rome"),
             QAItem("Peru", "capital", "What is the capital of Peru?", "", "Lima"),
             QAItem("Peru", "currency", "Which currency does Peru use?", "", world["Peru"].currency)]
    out = error_analysis(items, ["The capital of Italy is Rome.", "It is Quito.", "The euro."], world)
    assert out["by_fact"] == {"currency": (1, 1), "capital": (1, 2)}  # worst group first
    assert out["by_continent"]["South America"] == (2, 2) and out["by_continent"]["Europe"] == (0, 1)
    assert out["by_wording"]["What is the capital of {name}?"] == (1, 2)
    assert [it.country for it, _ in out["wrong"]] == ["Peru", "Peru"]


def test_targeted_examples_never_name_an_evaluation_country(world):
    from kit.world.chats import mentioned_countries

    extra = targeted_examples("currency", n_per_country=2)
    halves = split_countries(world)
    assert len(extra) == 2 * len(halves["qa"])
    assert not mentioned_countries(extra, halves["heldout"], world)


def test_cli_sweep_prints_runs_and_the_best(cache, sft_profile, monkeypatch, capsys, tmp_path):
    from kit.__main__ import main

    monkeypatch.setitem(PROFILES, "tiny", sft_profile)
    assert main(["sweep", "--profile", "tiny", "--grid", "lr=1e-3,3e-3", "--root", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["params"] for r in out["runs"]] == [{"lr": 1e-3}, {"lr": 3e-3}]
    assert out["best"] in {r["name"] for r in out["runs"]} and all(r["status"] == "finished" for r in out["runs"])


def test_cli_sweep_with_no_finished_run_says_why(monkeypatch, capsys, tmp_path):
    import kit.lessons.iterate as iterate
    from kit.__main__ import main

    def hopeless_or_refused(profile):
        def run_fn(params, run):
            if params["lora_r"] == 0:
                profile.with_sft(**sft_changes(profile, params))  # the real check: refused with its message
            for i, loss in enumerate([4.0] * 10, start=1):  # a flat loss: stopped early as hopeless
                if not run.stop.is_set():
                    run.on_step({"step": i, "max_steps": 10, "loss": loss, "lr": 1e-3, "tokens": i,
                                 "elapsed": 0.1, "tokens_per_s": 10.0})
            run.on_end(type("H", (), {"stopped": run.stop.is_set()})())
            return {}
        return run_fn

    monkeypatch.setattr(iterate, "sft_run_fn", hopeless_or_refused)
    assert main(["sweep", "--profile", "smoke", "--grid", "lr=1e-4,3e-4;lora_r=0,4", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert [r["status"] for r in out["runs"]] == ["failed", "stopped", "failed", "stopped"]
    assert "sft.lora_r must be a positive number, got 0" in out["runs"][0]["error"]
    assert out["best"] is None and out["reason"].startswith("no run finished (2 failed, 2 stopped early as hopeless")
    assert "| status |" in captured.err  # the table was printed


def test_error_analysis_uses_the_strict_rule_and_refuses_test_questions(world):
    from kit.lessons.iterate import TestSplitError

    angola = QAItem("Angola", "continent", "Which continent is Angola in?", "", "Africa")
    out = error_analysis([angola, angola], [("Slovakia is in Africa.", True), ("Angola is in Africa.", False)], world)
    assert out["by_fact"] == {"continent": (2, 2)}  # wrong subject; right answer that never ended its turn
    test_country = country_splits(world)["test"][0]
    with pytest.raises(TestSplitError, match="test countries"):
        error_analysis([QAItem(test_country, "capital", "?", "", world[test_country].capital)], ["x"], world)
    with pytest.raises(TestSplitError, match="test figure"):
        best_run([], key="test_qa_strict")


def test_sweep_reruns_when_epochs_change_outside_the_grid(cache, sft_profile, tmp_path):
    points = [{"lr": 3e-3}]
    first = sweeps.sweep(points, sft_run_fn(sft_profile, save_model=False), name="e", root=tmp_path, progress=False)
    same = sweeps.sweep(points, sft_run_fn(sft_profile, save_model=False), name="e", root=tmp_path, progress=False)
    assert same[0]["started"] == first[0]["started"]  # nothing changed: loaded
    longer = sft_profile.with_sft(epochs=2)  # not a grid key
    again = sweeps.sweep(points, sft_run_fn(longer, save_model=False), name="e", root=tmp_path, progress=False)
    assert again[0]["reuse_key"] != first[0]["reuse_key"]
    assert again[0]["config"]["sft.epochs"] == 2 and again[0]["results"]["steps"] > first[0]["results"]["steps"]
    assert again[0]["parent"].startswith("base model ")


def test_selection_never_sees_a_test_question(cache, sft_profile, tmp_path, monkeypatch):
    """Spy on every question put to a model and every result best_run reads, through a sweep, the choice of
    the best run, the error analysis and a data round: none is about a test country."""
    import kit.lessons.iterate as iterate
    import kit.world.probes as probes

    asked: list[str] = []

    def spy(real):
        def wrapped(model, tok, conversations, **kw):
            asked.extend(m["content"] for c in conversations for m in c if m["role"] == "user")
            return real(model, tok, conversations, **kw)
        return wrapped

    monkeypatch.setattr(probes, "chat_replies", spy(probes.chat_replies))
    monkeypatch.setattr(iterate, "chat_replies", spy(iterate.chat_replies))

    class Spied(dict):
        read: set = set()

        def __getitem__(self, key):
            Spied.read.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            Spied.read.add(key)
            return super().get(key, default)

    from kit.lessons.artifacts import base_model

    base = base_model(sft_profile)
    swept = sweeps.sweep([{"lr": 3e-3}, {"lr": 1e-2}], sft_run_fn(sft_profile, base=base), name="s", root=tmp_path,
                       progress=False)
    for r in swept:
        r["results"] = Spied(r["results"])
    best = iterate.best_run(swept)
    assert Spied.read <= {"heldout_qa_strict", "heldout_split"}  # a dev figure, and the split it was measured on
    items = split_items("dev")
    iterate.error_analysis(items, iterate.ask(iterate.load_run_model(best, base=base), base.tokenizer, items))
    iterate.data_round(sft_profile, best, "capital", base=base, root=tmp_path)
    world = load_world()
    test = set(country_splits(world)["test"])
    assert asked and not [q for q in asked if any(c in test for c in probes.named_countries(q, world))]
    assert {c for q in asked for c in probes.named_countries(q, world)} & set(country_splits(world)["dev"])


def test_feedback_round_records_its_parent_and_a_paired_interval(cache, sft_profile, tmp_path):
    from kit.lessons.artifacts import base_model
    from kit.lessons.iterate import feedback_round

    base = base_model(sft_profile)
    pairs = [{"prompt": [{"role": "user", "content": "What is the capital of Peru?"}],
              "chosen": [{"role": "assistant", "content": "The capital of Peru is Lima."}],
              "rejected": [{"role": "assistant", "content": "The capital of Peru is Cusco."}]}] * 4
    _, res = feedback_round(base.fresh_model(), base.tokenizer, pairs, sft_profile, root=tmp_path,
                            parent="sweep-lr=0.003")
    (rec,) = runs.list_runs(tmp_path)
    assert rec["parent"] == "sweep-lr=0.003" and rec["results"]["heldout_split"] == "dev"
    lo, hi = res["change_ci"]
    assert lo <= res["heldout_qa_strict"] - res["heldout_qa_strict_before"] <= hi


def test_targeted_examples_for_a_continent(world):
    extra = targeted_examples(continent="Africa", n_per_country=1)
    africa = [n for n in country_splits(world)["train"] if world[n].continent == "Africa"]
    assert len(extra) == 4 * len(africa)  # every fact, one wording each
    named = set(mentioned_countries_in(extra, world))
    assert named == set(africa)
    with pytest.raises(ValueError, match="either fact= .* or continent="):
        targeted_examples("capital", continent="Africa")


def mentioned_countries_in(examples, world):
    from kit.world.chats import mentioned_countries

    return mentioned_countries(examples, list(world), world)
