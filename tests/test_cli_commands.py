"""The console command `ftkit`: --help for every subcommand, one small file of every data shape
trained through `sft --model ... --data ...`, and `chat`, `eval`, `dpo` on a tiny model, each ending
with one JSON line."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hubstyle import tiny_model, tokenizer

from kit.__main__ import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "datasets" / "shapes"
COMMANDS = ["pretrain", "sft", "safety", "sweep", "chat", "eval", "dpo", "data validate"]


def ftkit() -> str:
    found = Path(sys.executable).parent / "ftkit"
    return str(found) if found.exists() else shutil.which("ftkit")


@pytest.mark.parametrize("command", COMMANDS)
def test_the_console_script_gives_help_for_every_subcommand(command):
    assert ftkit(), "the console script is not installed: run `make install`"
    proc = subprocess.run([ftkit(), *command.split(), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ftkit"), proc.stderr


def test_every_config_field_is_a_flag():
    import dataclasses

    from kit.engine.config import DPOConfig, SFTConfig

    sub = build_parser()._subparsers._group_actions[0].choices
    for command, cls in (("sft", SFTConfig), ("dpo", DPOConfig)):
        flags = {a.dest for a in sub[command]._actions}
        assert {f.name for f in dataclasses.fields(cls)} <= flags, command
        helps = {a.dest: a.help for a in sub[command]._actions}
        assert all(helps[f.name] and "default" in helps[f.name] for f in dataclasses.fields(cls))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder, tok = tmp_path_factory.mktemp("tiny") / "qwen2", tokenizer("chatml")
    tiny_model("qwen2", len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(p.name for p in SHAPES.glob("*.jsonl") if p.name != "tools.jsonl"))
def test_one_small_file_of_each_shape_trains_through_sft(name, tiny_folder, tmp_path, capsys):
    code = main(["sft", "--model", str(tiny_folder), "--data", str(SHAPES / name), "--max-steps", "2",
                 "--batch-size", "2", "--out", str(tmp_path / "out")])
    res = last_json(capsys)
    assert code == 0 and res["steps"] == 2 and res["loss_tokens"] > 0 and res["train_examples"] == 6
    assert (tmp_path / "out" / "README.md").exists()


def test_chat_eval_and_dpo_on_a_tiny_model(tiny_folder, tmp_path, capsys):
    assert main(["chat", "--model", str(tiny_folder), "--prompt", "Capital of Peru?", "--max-new-tokens", "4"]) == 0
    res = last_json(capsys)
    assert res["turns"] == 1 and res["prompt"] == "Capital of Peru?" and isinstance(res["reply"], str)
    assert main(["eval", "--model", str(tiny_folder), "--data", str(SHAPES / "messages.jsonl"),
                 "--max-new-tokens", "4"]) == 0
    res = last_json(capsys)
    assert res["examples"] == 6 and res["eval_loss"] > 0 and 0 <= res["exact_match"] <= 1
    assert main(["dpo", "--model", str(tiny_folder), "--data", str(SHAPES / "implicit_preference.jsonl"),
                 "--batch-size", "2", "--epochs", "1", "--out", str(tmp_path / "dpo")]) == 0
    res = last_json(capsys)
    assert res["pairs"] == 6 and res["steps"] >= 1 and Path(res["saved_to"], "config.json").exists()
    assert main(["dpo", "--model", str(tiny_folder), "--data", str(SHAPES / "messages.jsonl")]) == 1
    assert "not preference pairs" in capsys.readouterr().err


def test_chat_reads_a_conversation_from_stdin(tiny_folder):
    proc = subprocess.run([sys.executable, "-m", "kit", "chat", "--model", str(tiny_folder), "--max-new-tokens", "3"],
                          input="Hi\nCapital of Peru?\n\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["turns"] == 2
