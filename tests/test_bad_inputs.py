"""Fuzzing the validator: a corpus of broken files, each run through the real CLI in a subprocess.

Every case says what the CLI must report: the exit status its file alone would give, and the
(line, words) of a problem. All data files go through one `python -m kit data validate` call (it
takes several files, each with its own report), so the tokenizer is loaded once; the usage errors
(a missing file, a bad option) run one process each, and fail before any tokenizer is loaded.
Every process is bounded in time (timeout) and memory (its peak RSS, read with `os.wait4`).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
U = {"role": "user", "content": "What is the capital of Peru?"}
A = {"role": "assistant", "content": "The capital of Peru is Lima."}
GOOD = json.dumps({"messages": [U, A]})
PAIR = json.dumps({"prompt": [U], "chosen": [A], "rejected": [{"role": "assistant", "content": "No idea."}]})
MAX_RSS_MB = 400   # the whole validator process, tokenizer included
TIMEOUT_S = 120


def chat(*messages, **extra) -> str:
    return json.dumps({"messages": list(messages), **extra})


def lines(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


def _cases() -> dict[str, tuple[bytes, int, list[tuple[int, str]]]]:
    """name -> (file bytes, exit status of that file alone, [(line, words the problem's message holds)])."""
    rng = random.Random(15)
    deep = lambda n, o, c: o * n + c * n  # noqa: E731
    c = {
        # decoding, per line
        "not_utf8": (lines(GOOD, "").replace(b"\n\n", b"\n") + b'{"messages": "\xff\xfe"}\n' + lines(GOOD), 1,
                     [(2, "not UTF-8")]),
        "latin1": (lines(GOOD) + json.dumps({"messages": [{"role": "user", "content": "caf\u00e9"}, A]},
                                            ensure_ascii=False).encode("latin-1") + b"\n", 1,
                   [(2, "not UTF-8")]),
        "binary": (bytes(rng.randrange(256) for _ in range(3000)), 1, []),
        "nul_bytes": (lines(GOOD) + b'{"messages": [\x00]}\n', 1, [(2, "")]),
        "utf16": ((GOOD + "\n").encode("utf-16"), 1, [(1, "UTF-16")]),
        "bom_ok": (b"\xef\xbb\xbf" + lines(GOOD), 0, []),
        "bom_on_line_2": (lines(GOOD) + b"\xef\xbb\xbf" + lines(chat(U, {**A, "content": "Lima."})), 1,
                          [(2, "malformed JSON")]),
        # JSON shape
        "truncated": (lines(GOOD, GOOD)[:-30], 1, [(2, "malformed JSON")]),
        "deep_arrays": (lines(GOOD, deep(10_000, "[", "]")), 1, [(2, "nested too deeply")]),
        "deep_objects": (lines('{"a":' * 5_000 + "1" + "}" * 5_000), 1, [(1, "nested too deeply")]),
        "deep_in_content": (lines(chat(U, {"role": "assistant", "content": json.loads(deep(80, "[", "]"))})), 1,
                            [(1, "nested too deeply")]),
        "nan": (lines(GOOD, chat(U, A)[:-1] + ', "x": NaN}'), 1, [(2, "NaN is not JSON")]),
        "infinity": (lines('{"messages": [' + json.dumps(U) + ', {"role": "assistant", "content": "x", '
                           '"weight": -Infinity}]}'), 1, [(1, "-Infinity is not JSON")]),
        "huge_int": (lines(GOOD, chat(U, {**A, "weight": 0})[:-3] + "9" * 5000 + "}]}"), 1,
                     [(2, "malformed JSON")]),
        "huge_float": (lines(chat(U, A)[:-3] + ', "weight": 1e999}]}'), 1, [(1, "integer 0 or 1")]),
        "lone_surrogate": (lines(GOOD, '{"messages": [{"role": "user", "content": "a\\ud800b"}, '
                                 + json.dumps(A) + "]}"), 1, [(2, "lone surrogate")]),
        "surrogate_key": (lines('{"messages": [' + json.dumps(U) + "," + json.dumps(A)[:-1] + ', "\\udfff": 1}]}'), 1,
                          [(1, "unknown key")]),
        "empty": (b"", 1, [(0, "holds no example")]),
        "blank_lines": (b"\n  \n\t\n\r\n", 1, [(0, "holds no example")]),
        # types at every level
        "top_list": (lines("[1, 2]"), 1, [(1, "not a JSON object")]),
        "top_string": (lines('"hello"'), 1, [(1, "not a JSON object")]),
        "top_null": (lines("null"), 1, [(1, "not a JSON object")]),
        "messages_dict": (lines('{"messages": {"role": "user"}}'), 1, [(1, "non-empty list")]),
        "message_string": (lines('{"messages": ["hi", ' + json.dumps(A) + "]}"), 1, [(1, "not an object")]),
        "role_int": (lines(chat({"role": 3, "content": "a"}, A)), 1, [(1, "unknown role")]),
        "role_list": (lines(chat({"role": ["user"], "content": "a"}, A)), 1, [(1, "unknown role")]),
        "content_list": (lines(chat({"role": "user", "content": ["a"]}, A)), 1, [(1, "must be a string")]),
        "content_null": (lines(chat(U, {"role": "assistant", "content": None})), 1, [(1, "must be a string")]),
        "name_int": (lines(chat({**U, "name": 5}, A)), 1, [(1, "name must be")]),
        "prompt_not_list": (lines('{"prompt": "q", "chosen": [], "rejected": 3}'), 1, [(1, "non-empty list")]),
        "pref_missing": (lines('{"prompt": [' + json.dumps(U) + "]}"), 1, [(1, "missing 'chosen'")]),
        "pref_roles": (lines(json.dumps({"prompt": [U], "chosen": [{"role": ["x"], "content": "a"}],
                                         "rejected": [A]})), 1, [(1, "unknown role")]),
        # weights
        "weight_true": (lines(chat(U, {**A, "weight": True})), 1, [(1, "integer 0 or 1")]),
        "weight_float": (lines(chat(U, {**A, "weight": 1.0})), 1, [(1, "integer 0 or 1")]),
        "weight_string": (lines(chat(U, {**A, "weight": "1"})), 1, [(1, "integer 0 or 1")]),
        "weight_list": (lines(chat(U, {**A, "weight": [1]})), 1, [(1, "integer 0 or 1")]),
        # one file, one format; keys once
        "mixed_formats": (lines(GOOD, PAIR, GOOD), 1, [(2, "a preference row in a file of messages rows")]),
        "mixed_reversed": (lines(PAIR, GOOD), 1, [(2, "a messages row in a file of preference rows")]),
        "duplicate_keys": (lines(GOOD[:-1] + ', "messages": ' + json.dumps([U, A]) + "}"), 0,
                           [(1, "duplicate key 'messages'")]),
        "duplicate_inner_key": (lines(chat({"role": "user", "content": "a", "content ": "b"}, A),
                                      '{"messages": [{"role": "user", "role": "user", "content": "q"}, '
                                      + json.dumps(A) + "]}"), 1, [(2, "duplicate key 'role'")]),
        # line numbers follow "\n" only
        "bare_cr": (b'{"messages":\r' + json.dumps([U, A]).encode() + b"}\n"
                    + b'{"messages": [{"role": "user", "content": "a\rb"}]}\n'
                    + lines(chat(U, {**A, "weight": True})), 1,
                    [(2, "malformed JSON"), (3, "integer 0 or 1")]),
        "unicode_separators": (lines(chat({"role": "user", "content": "a\u2028b\u2029c\x85d"}, A),
                                     chat(U, {**A, "weight": 2})), 1, [(2, "integer 0 or 1")]),
        "crlf": (lines(GOOD, chat(U, {**A, "content": "Lima."})).replace(b"\n", b"\r\n"), 0, []),
        # the chat template's control tokens in the text
        "special_tokens": (lines(chat({"role": "user", "content": "2+2?"},
                                      {"role": "assistant", "content": "4<|end|>\n<|user|>\nhi"})), 1,
                           [(1, "'<|end|>', a special token")]),
        "special_bos": (lines(chat({"role": "user", "content": "<|bos|>x"}, A)), 1, [(1, "'<|bos|>'")]),
        # long lines: measured in characters before tokenising
        "long_5mb": (lines(chat({"role": "user", "content": "word " * 1_000_000}, A)), 1,
                     [(1, "over the token limit")]),
        "long_50mb": (lines(chat(U, {"role": "assistant", "content": "x" * 50_000_000})), 1,
                      [(1, "line too long")]),
        "many_messages": (lines(json.dumps({"messages": [U, A] * 60_000})), 0, [(1, "over the token limit")]),
        "many_bad_lines": (b"{}\n" * 20_000, 1, [(1, "missing 'messages'"), (20_000, "missing 'messages'")]),
        # CSV
        "excel.csv": ("\ufeffuser,assistant\nWhat is the capital of Peru?,The capital of Peru is Lima.\n"
                      .encode(), 0, []),
        "comma.csv": (b"user,assistant\nCapital of Peru?,The capital of Peru is Lima.\n"
                      b"Capital of Chile?,Santiago, of course.\n\"Quoted, fine?\",\"Yes, fine.\"\n", 1,
                      [(3, "has 3 cells but the header has 2")]),
        "short_row.csv": (b"system,user,assistant\nBe brief.,Hi\n", 1, [(2, "has 2 cells but the header has 3")]),
        "no_header.csv": (b"Hi,Hello\n", 1, [(1, "names none of the columns")]),
        "multiline.csv": (b'user,assistant\n"Line one\nline two",Fine.\nq,\n', 1, [(4, "no assistant message")]),
        "bad_json.csv": (b'messages\n"[{""role"": ""user""}"\n', 1, [(2, "malformed JSON")]),
        "not_utf8.csv": (b"user,assistant\nq1,a1\ncaf\xe9,a2\nq3,a3\n", 1, [(3, "not UTF-8")]),
        "empty.csv": (b"", 1, [(0, "holds no example")]),
        "open_quote.csv": (b'user,assistant\nq1,a1\n"never closed,a2\nq3,a3\nq4,a4\n', 1,
                           [(3, "runs on to line 5")]),
        "long_cell.csv": (b"user,assistant\nq1," + b"x" * 200_000 + b"\nq2,a2\n", 1, [(2, "a cell longer than")]),
        "bare_cr.csv": (b"user,assistant\r\nq1,a1\rq2,a2\r\nq3,a3\n", 1, [(2, "carriage return")]),
        "header_only.csv": (b"user,assistant\n", 1, [(0, "holds no example")]),
    }
    c["wrong_types_everywhere"] = (lines(*(json.dumps(v) for v in [
        {"messages": [{"role": "user", "content": "q", "weight": {"a": 1}}, A]},
        {"messages": [U, A], "": None},
        {"messages": None}, {"messages": 1.5}, {"messages": [[]]}, {"messages": [None]},
        {"prompt": [U], "chosen": [A], "rejected": [None]}, {"prompt": [1], "chosen": [A], "rejected": [A]},
    ])), 1, [(1, "integer 0 or 1"), (3, "non-empty list"), (4, "non-empty list"), (5, "not an object"),
             (6, "not an object"), (7, "not an object"), (8, "not an object")])
    return c


CASES = _cases()


# The CLI runs as the child of a small wrapper process, which then reports the child's peak memory: measured
# from pytest itself, the figure would include pytest's own memory, inherited at fork time.
WRAPPER = """import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "kit", *sys.argv[1:]]).returncode
sys.stderr.write(f"\\n@peak_rss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(code)
"""


def run_cli(args: list[str], env: dict | None = None) -> tuple[int, str, str, float, float]:
    """(exit status, stdout, stderr, seconds, peak RSS in MB) of `python -m kit ARGS` in a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, env=env,
                           cwd=ROOT, stdin=subprocess.DEVNULL, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m kit {' '.join(args)[:200]} ran over {TIMEOUT_S} s")
    err, _, peak = r.stderr.rpartition("\n@peak_rss_kb=")
    return r.returncode, r.stdout, err, time.perf_counter() - t0, int(peak) / 1024


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every case validated by one CLI call (--max-length 64, --json): {case name: [problem rows]}."""
    folder = tmp_path_factory.mktemp("bad")
    paths = {}
    for name, (data, _, _) in CASES.items():
        path = folder / (name if name.endswith(".csv") else f"{name}.jsonl")
        path.write_bytes(data)
        paths[str(path)] = name
    code, out, err, seconds, rss = run_cli(["data", "validate", "--profile", "smoke", "--max-length", "64",
                                            "--json", *paths])
    rows = json.loads(out)
    by_case = {name: [] for name in CASES}
    for row in rows:
        by_case[paths[row["file"]]].append(row)
    return {"code": code, "err": err, "rows": by_case, "seconds": seconds, "rss": rss}


def test_no_traceback_and_bounded(batch):
    assert "Traceback" not in batch["err"], batch["err"][-3000:]
    assert batch["code"] == 1  # some files have errors
    assert batch["rss"] < MAX_RSS_MB, f"peak RSS {batch['rss']:.0f} MB"


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_file_is_reported_on_its_line(batch, name):
    _, want_code, want = CASES[name]
    rows = batch["rows"][name]
    errors = [r for r in rows if r["severity"] == "error"]
    assert (1 if errors else 0) == want_code, rows  # the exit status of this file alone
    for line, words in want:
        assert any(r["line"] == line and words in r["message"] for r in rows), (line, words, rows)
    if name == "binary":
        assert errors and all(r["line"] >= 1 for r in errors)
    for r in rows:  # every message is one readable line that tells what to do or what is wrong
        assert "\n" not in r["message"] and len(r["message"]) < 600, r


def test_exit_status_of_single_files(tmp_path):
    warn_only = tmp_path / "warn.jsonl"
    warn_only.write_bytes(CASES["duplicate_keys"][0])
    code, out, err, _, _ = run_cli(["data", "validate", "--profile", "smoke", str(warn_only)])
    assert (code, "Traceback" in err) == (0, False) and "duplicate key" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(CASES["deep_arrays"][0])
    ev = tmp_path / "eval.jsonl"
    ev.write_bytes(lines(GOOD, "{broken"))
    code, out, err, _, _ = run_cli(["data", "validate", "--profile", "smoke", str(bad), "--eval", str(ev)])
    assert code == 1 and "Traceback" not in err
    assert f"{ev} (evaluation file): 2 examples: 1 errors" in out  # its own report: the broken line...
    assert "line     2  error" in out.split("(evaluation file)")[1]
    assert "prompt also in the evaluation split (its line 1)" in out  # ...and the overlap with the data file


USAGE = [
    (["data", "validate", "missing.jsonl"], {}, "no such file: missing.jsonl"),
    (["data", "validate", "kit"], {}, "is a folder, not a file"),
    (["data", "validate", "/dev/null"], {}, "not a regular file"),
    (["data", "validate", "README.md", "--eval", "nope.jsonl"], {}, "--eval file: no such file"),
    (["data", "validate", "README.md"], {"KIT_PROFILE": "bogus"}, "Unknown profile 'bogus'"),
    (["data", "validate", "README.md", "--profile", "nope"], {}, "Unknown profile 'nope'"),
    (["data", "validate", "README.md", "--max-length", "-5"], {}, "must be a whole number >= 1, got -5"),
    (["data", "validate", "README.md", "--max-length", "0"], {}, "must be a whole number >= 1, got 0"),
    (["data", "validate", "README.md", "--max-length", "abc"], {}, "expected a whole number >= 1"),
    (["data", "validate"], {}, "the following arguments are required: file"),
    ([], {}, "the following arguments are required: command"),
    (["dance"], {}, "invalid choice: 'dance'"),
    (["sft", "--epochs", "-1"], {}, "must be a finite number > 0, got '-1'"),
    (["sft", "--lr", "inf"], {}, "must be a finite number > 0, got 'inf'"),
    (["sft", "--lr", "nan"], {}, "must be a finite number > 0, got 'nan'"),
    (["sft", "--model", "./no/such/dir", "--data", "README.md", "--seq-len", "0"], {}, "whole number >= 1"),
    (["sft", "--model", "./no/such/dir"], {}, "--model and --eval go with --data"),
    (["sft", "--model", "./no/such/dir", "--data", "missing.csv"], {}, "training data: no such file"),
    (["sweep", "--grid", "lr"], {"KIT_PROFILE": "smoke"}, "--grid: expected key=value"),
    (["sweep", "--grid", " ; "], {"KIT_PROFILE": "smoke"}, "--grid is empty"),
    (["sweep", "--grid", "learning_rate=1"], {"KIT_PROFILE": "smoke"}, "unknown fine-tuning field(s) learning_rate"),
    (["pretrain", "--resume", "--fresh"], {}, "give one of them"),
]


@pytest.mark.parametrize("args,env,words", USAGE, ids=[" ".join(a)[:40] or "no-args" for a, _, _ in USAGE])
def test_usage_errors_are_one_line_and_exit_1(args, env, words):
    code, out, err, seconds, _ = run_cli(args, env)
    assert code == 1, (out, err)
    assert "Traceback" not in err
    lines_ = [x for x in err.splitlines() if x.strip()]
    assert len(lines_) == 1 and lines_[0].startswith("error: ") and words in lines_[0], err


def test_interrupt_and_debug(monkeypatch, capsys, tmp_path):
    import kit.__main__ as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_data_validate", interrupted)
    assert cli.main(["data", "validate", "x.jsonl"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    monkeypatch.undo()
    with pytest.raises(cli.UsageError, match="no such file"):  # --debug: the exception itself, with its traceback
        cli.main(["data", "validate", str(tmp_path / "x.jsonl"), "--debug"])


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    many = tmp_path / "many.jsonl"
    many.write_bytes(b"{broken\n" * 3000)  # a report far larger than a pipe's buffer
    cmd = (f"{sys.executable} -m kit data validate --profile smoke --json {many} | head -c 100 >/dev/null; "
           "echo status=${PIPESTATUS[0]}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert r.stderr == "" and r.stdout.strip() == "status=1"
