import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kit.engine import data
from kit.world.corpus import DATASETS, chat_splits, load_world, mentioned_countries, split_countries

BROKEN = DATASETS / "chat_with_problems.jsonl"
# (line, severity, fragment): every problem planted in the broken file, at its editor line number
EXPECTED = [
    (2, "error", "malformed JSON"), (3, "error", "not a JSON object"), (4, "error", "missing 'messages'"),
    (4, "warning", "unknown key 'msgs'"), (5, "error", "non-empty list"), (6, "error", "missing 'role'"),
    (7, "error", "missing 'content'"), (8, "error", "unknown key 'mood'"), (9, "error", "unknown role"),
    (10, "error", "content is empty"), (11, "error", "must be a string"), (12, "error", "no assistant"),
    (13, "warning", "two user messages"), (14, "warning", "starts with the assistant"),
    (15, "warning", "exact duplicate of line 1"), (16, "warning", "near duplicate of line 1"),
    (17, "warning", "over the token limit"), (17, "warning", "no trained end-of-turn"),
    (18, "error", "over the token limit"), (18, "error", "no token carries loss"),
    (19, "error", "no token carries loss"),
]


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_every_planted_problem_is_reported_at_its_line(tok):
    before = sha(BROKEN)
    report = data.validate_file(BROKEN, tok, max_length=64)
    got = {(p.line, p.severity, p.message) for p in report.problems}
    for line, severity, fragment in EXPECTED:
        assert any(ln == line and sev == severity and fragment in msg for ln, sev, msg in got), (line, fragment)
    assert {p.line for p in report.problems} == {ln for ln, _, _ in EXPECTED}  # nothing on the good lines
    assert sha(BROKEN) == before  # validation never writes to the source


def test_lenient_keeps_good_lines_strict_lists_every_error(tok):
    examples, report = data.load_jsonl(BROKEN)
    assert [ex["_line"] for ex in examples] == [1, 13, 14, 15, 16, 17, 18, 19, 21]
    with pytest.raises(data.DataError) as e:
        data.load_jsonl(BROKEN, strict=True)
    for line in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
        assert re.search(rf"line\s+{line}\s+error", str(e.value)), line


def test_cli_exit_status_and_json(tmp_path):
    cmd = [sys.executable, "-m", "kit", "data", "validate", "--profile", "smoke", "--max-length", "64"]
    bad = subprocess.run([*cmd, "--json", str(BROKEN)], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    rows = json.loads(bad.stdout)
    assert {"line", "field", "severity", "message"} == set(rows[0])
    assert {r["line"] for r in rows} == {ln for ln, _, _ in EXPECTED}
    clean = tmp_path / "clean.jsonl"
    data.write_jsonl(clean, chat_splits()["train"][:50])
    ok = subprocess.run([*cmd, str(clean)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 errors" in ok.stdout


def test_warnings_alone_exit_zero(tmp_path):
    path = tmp_path / "dup.jsonl"
    ex = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    data.write_jsonl(path, [ex, ex])
    r = subprocess.run([sys.executable, "-m", "kit", "data", "validate", "--profile", "smoke", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "exact duplicate of line 1" in r.stdout


def test_train_eval_overlap_is_an_error(tok):
    ex = {"messages": [{"role": "user", "content": "What is the capital of Peru?"},
                       {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    other = {"messages": [{"role": "user", "content": "what is the capital of PERU"},
                          {"role": "assistant", "content": "Lima."}]}
    report = data.validate([ex], tok, eval_examples=[other])
    assert [p.severity for p in report.problems] == ["error"] and "evaluation split" in report.problems[0].message


def test_jsonl_and_hf_dataset_round_trip(tmp_path):
    examples = chat_splits()["train"][:20]
    examples[0]["messages"][-1]["weight"] = 0
    ds = data.to_hf_dataset(examples)
    back = data.from_hf_dataset(ds)
    data.write_jsonl(tmp_path / "a.jsonl", back)
    loaded, report = data.load_jsonl(tmp_path / "a.jsonl")
    assert report.ok and [data.clean(e) for e in loaded] == back
    assert back[0]["messages"][-1]["weight"] == 0
    assert [m["content"] for m in back[5]["messages"]] == [m["content"] for m in examples[5]["messages"]]


def test_csv_single_turn_rows(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("system,user,assistant\n,What is the capital of Peru?,The capital of Peru is Lima.\n"
                    "Be brief.,Hi,\n")
    examples, report = data.load_csv(path)
    assert len(examples) == 1 and examples[0]["_line"] == 2
    assert [(p.line, p.message) for p in report.errors] == [(3, "no assistant message: the example teaches nothing")]


def test_heldout_countries_never_in_training_examples(world):
    from kit.world.corpus import country_splits

    splits = chat_splits(world)
    heldout = split_countries(world)["heldout"]
    assert mentioned_countries(splits["train"], heldout, world) == []
    assert mentioned_countries(splits["eval"], heldout, world) == country_splits(world)["dev"]  # test stays unseen
    # the check itself sees a leak, and ignores a currency name
    leak = {"messages": [{"role": "user", "content": f"Tell me about {heldout[0]}."}]}
    assert mentioned_countries([leak], heldout, world) == [heldout[0]]
    money = {"messages": [{"role": "user", "content": "Is the United States dollar used in Ecuador?"}]}
    assert "United States" not in mentioned_countries([money], list(world), world)


def test_stats_and_dropped_rows_are_counted(tok):
    examples = chat_splits()["train"][:30]
    st = data.stats(examples, tok, epochs=2)
    assert st["tokens"] == sum(st["per_example"]) and st["training_tokens"] == 2 * st["tokens"]
    assert 0 < st["loss_token_share"] < 1 and set(st["per_role"]) >= {"user", "assistant"}
    silent = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    rows, dropped = data.sft_rows([*examples, silent], tok, max_length=256)
    assert len(rows) == 30 and len(dropped) == 1 and "dropped" in dropped[0].message


def test_generated_data_is_clean(tok):
    splits = chat_splits(load_world())
    report = data.validate(splits["train"], tok, 256, eval_examples=splits["eval"])
    assert report.errors == []


PAIR = {"prompt": [{"role": "user", "content": "What is the capital of Peru?"}],
        "chosen": [{"role": "assistant", "content": "The capital of Peru is Lima."}],
        "rejected": [{"role": "assistant", "content": "I do not know."}]}


def test_preference_pairs_load_validate_and_round_trip(tmp_path, tok):
    bad_role = {**PAIR, "chosen": [{"role": "user", "content": "x"}]}
    no_user = {**PAIR, "prompt": [{"role": "system", "content": "Be brief."}]}
    same = {**PAIR, "rejected": PAIR["chosen"]}
    path = tmp_path / "pairs.jsonl"
    data.write_jsonl(path, [PAIR, bad_role, no_user, same, {"prompt": PAIR["prompt"], "chosen": PAIR["chosen"]}])
    examples, report = data.load_jsonl(path)
    got = {(p.line, p.field, p.severity) for p in report.problems}
    assert got == {(2, "chosen", "error"), (3, "prompt", "error"), (4, "chosen", "warning"), (5, "rejected", "error")}
    assert [e["_line"] for e in examples] == [1, 4]
    deep = data.validate(examples, tok, max_length=256)
    assert deep.errors == [] and deep.summary["loss_tokens"] > 0  # both replies of each pair render with loss
    back = data.from_hf_dataset(data.to_hf_dataset([PAIR]))
    plain = [{k: [{"role": m["role"], "content": m["content"]} for m in v] for k, v in b.items()} for b in back]
    assert plain == [PAIR]
