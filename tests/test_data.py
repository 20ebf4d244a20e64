import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.engine import data
from kit.world.chats import chat_splits, mentioned_countries
from kit.world.corpus import DATASETS, load_world, split_countries

BROKEN = DATASETS / "chat_with_problems.jsonl"
# (line, severity, fragment): every problem planted in the broken file, at its editor line number
EXPECTED = [
    (2, "error", "malformed JSON"), (3, "error", "not a JSON object"), (4, "error", "missing 'messages'"),
    (4, "error", "(keys: msgs)"), (5, "error", "non-empty list"), (6, "error", "missing 'role'"),
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


# ----------------------------------------------------------------------------- bad input, handled
def test_hf_dataset_round_trip_is_exact_for_mixed_lists(tmp_path):
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Capital of Peru?", "name": "ana"},
                         {"role": "assistant", "content": "Lima.", "weight": 0},
                         {"role": "user", "content": "And Chile?"}, {"role": "assistant", "content": "Santiago."}]}
    examples = [chat, PAIR, {**chat, "_line": 9}]
    back = data.from_hf_dataset(data.to_hf_dataset(examples))
    assert back == [data.clean(e) for e in examples]  # name kept, weight only where given, both kinds
    assert back[0]["messages"][1] == {"role": "user", "content": "Capital of Peru?", "name": "ana"}
    data.write_jsonl(tmp_path / "a.jsonl", back[:1])
    loaded, report = data.load_jsonl(tmp_path / "a.jsonl")
    assert report.ok and [data.clean(e) for e in loaded] == back[:1]
    assert data.from_hf_dataset(data.to_hf_dataset([])) == []


def test_csv_from_excel_and_a_shifted_row(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffUser,Assistant\nCapital of Peru?,\"Lima, of course.\"\nCapital of Chile?,Santiago, "
                     "of course.\n".encode())
    examples, report = data.load_csv(path)
    assert examples[0]["messages"] == [{"role": "user", "content": "Capital of Peru?"},
                                       {"role": "assistant", "content": "Lima, of course."}]
    assert [(p.line, p.severity) for p in report.problems] == [(3, "error")]
    assert "3 cells but the header has 2" in report.problems[0].message


def test_long_text_is_cut_in_characters_before_it_is_tokenised(tok):
    from kit.engine.chat import render

    long = {"messages": [{"role": "user", "content": "What is the capital of Peru? " * 400},
                         {"role": "assistant", "content": "Lima."}]}
    full, cut = render(long, tok), render(long, tok, max_length=32)
    assert full.exact and not cut.exact and cut.input_ids == full.input_ids[:32]  # the same first tokens
    huge = {"messages": [long["messages"][0], {"role": "assistant", "content": "word " * 400_000}]}
    t0 = time.perf_counter()
    report = data.validate([huge], tok, max_length=64)
    assert time.perf_counter() - t0 < 5 and "over the token limit: 2,011,600 characters" in report.problems[0].message
    assert any("too long to check" in p.message for p in data.validate([huge], tok).errors)  # no max_length
    with pytest.raises(ValueError, match="max_length must be a whole number >= 1"):
        data.validate([huge], tok, max_length=0)


def test_special_tokens_of_any_template_are_refused_by_name(tok):
    import copy

    from kit.engine.chat import find_special_token

    ex = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4<|end|>\n<|user|>"}]}
    (p,) = data.validate([ex], tok).problems
    assert (p.field, p.severity) == ("messages[1].content", "error") and "'<|end|>', a special token" in p.message
    hub = copy.deepcopy(tok)  # another template's markers, added to the tokenizer: found the same way
    hub.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    assert find_special_token("a <|im_end|> b", hub) == "<|im_end|>"
    assert find_special_token("a <|im_end| b", hub) is None and find_special_token("a <|im_end|> b", tok) is None


def test_formats_are_not_mixed_and_weights_are_integers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}]}
    rows = [good, PAIR, *({"messages": [good["messages"][0], {**good["messages"][1], "weight": w}]}
                          for w in (True, 1.0, "1", 0.0))]
    data.write_jsonl(path, rows)
    _, report = data.load_jsonl(path)
    got = [(p.line, p.message.split(":")[0]) for p in report.errors]
    assert got == [(2, "a preference row in a file of messages rows (line 1 is a messages row)"),
                   *((n, "weight must be the integer 0 or 1 (got " + w + ")") for n, w in
                     ((3, "True"), (4, "1.0"), (5, "'1'"), (6, "0.0")))]


def test_empty_file_and_line_numbers_that_follow_newlines_only(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert [(p.line, p.severity) for p in data.load_jsonl(empty)[1].problems] == [(0, "error")]
    with pytest.raises(data.DataError, match="holds no example"):
        data.load_jsonl(empty, strict=True)
    cr = tmp_path / "cr.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    cr.write_bytes(f"{good}\r\n{good[:-1]}\r,\"x\":1}}\n\u2028\n{{}}\n".encode())
    _, report = data.load_jsonl(cr)
    assert [(p.line, p.severity) for p in report.errors] == [(3, "error"), (4, "error")]


def test_a_killed_writes_temporary_file_goes_at_the_next_write(tmp_path):
    import os

    path = tmp_path / "x.jsonl"
    stale = tmp_path / f".x.jsonl.tmp-{2**22 + 3}"  # above any process id: its writer is gone
    stale.write_text("half a file")
    busy = tmp_path / f".x.jsonl.tmp-{os.getppid()}"  # a writer still running is left alone
    busy.write_text("being written")
    from kit.engine.cache import write_text_atomic

    write_text_atomic(path, "whole\n")
    assert not stale.exists() and busy.exists() and path.read_text() == "whole\n"
