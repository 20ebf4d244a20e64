"""Notebook 05's rounds: sweeps of real fine-tuning runs, run records, error analysis, targeted data, the CLI."""

import dataclasses
import json

import pytest

from kit.engine import runs
from kit.engine.config import ConfigError
from kit.lessons.iterate import best_run, error_analysis, sft_changes, sft_run_fn, targeted_examples
from kit.lessons.profiles import PROFILES, CourseSFTConfig
from kit.world.corpus import QAItem, load_world, split_countries


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
    out = runs.sweep(points, sft_run_fn(sft_profile), name="s", root=tmp_path, progress=False)
    assert [r["status"] for r in out] == ["failed", "finished"]  # the sweep went on after the bad point
    recorded = {r["name"]: r for r in runs.list_runs(tmp_path)}
    ok, bad = recorded["s-lr=0.003"], recorded["s-lr=-1.0"]
    assert ok["status"] == "finished" and 0 <= ok["results"]["heldout_qa_accuracy"] <= 1
    assert ok["datasets"]["train"]["rows"] > 0 and ok["config"]["lr"] == ok["config"]["sft.lr"] == 3e-3
    assert (tmp_path / "s-lr=0.003" / "model" / "config.json").exists()
    assert [e["event"] for e in runs.metrics(ok)].count("step") >= 1
    assert bad["status"] == "failed" and "lr must be a positive number" in bad["error"]
    assert ok["params"] == {"lr": 3e-3} and bad["params"] == {"lr": -1.0}
    again = runs.sweep(points[1:], sft_run_fn(sft_profile), name="s", root=tmp_path, progress=False)
    assert again[0]["started"] == ok["started"]  # finished: loaded, not trained again
    assert best_run(again)["name"] == "s-lr=0.003"


def test_finetune_records_its_own_run_by_default(cache, sft_profile):
    from kit.lessons.artifacts import base_model
    from kit.lessons.sft import finetune_recipe as finetune

    finetune(sft_profile, base_model(sft_profile), measure=False)
    (rec,) = runs.list_runs()
    assert rec["name"].startswith("sft-tiny-full-") and rec["status"] == "finished"
    assert rec["config"]["sft.epochs"] == 1 and rec["results"]["train_loss"] > 0


def test_error_analysis_groups_by_fact_continent_and_wording():
    world = load_world()
    items = [QAItem("France", "capital", "What is the capital of France?", "", "Paris"),
             QAItem("Peru", "capital", "What is the capital of Peru?", "", "Lima"),
             QAItem("Peru", "currency", "Which currency does Peru use?", "", world["Peru"].currency)]
    out = error_analysis(items, ["The capital of France is Paris.", "It is Quito.", "The euro."], world)
    assert out["by_fact"] == {"currency": (1, 1), "capital": (1, 2)}  # worst group first
    assert out["by_continent"]["South America"] == (2, 2) and out["by_continent"]["Europe"] == (0, 1)
    assert out["by_wording"]["What is the capital of {name}?"] == (1, 2)
    assert [it.country for it, _ in out["wrong"]] == ["Peru", "Peru"]


def test_targeted_examples_never_name_an_evaluation_country(world):
    from kit.world.corpus import mentioned_countries

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
