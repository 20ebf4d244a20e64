import json
import os

import pytest

from kit.widgets.curation import Curator
from kit.world.corpus import chat_splits


@pytest.fixture
def examples():
    return chat_splits()["train"][:5]


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_buttons_decide_and_persist_at_once(tmp_path, examples, tok):
    path = tmp_path / "cur.jsonl"
    box = Curator(examples, path, tok).widget()
    box.buttons["accept"].click()
    assert [(d["index"], d["decision"]) for d in lines(path)] == [(0, "accept")]
    box.buttons["reject"].click()
    box.buttons["next ▶"].click()  # skip example 2
    box.editor.value = json.dumps([{"role": "user", "content": "Capital of Peru?"},
                                   {"role": "assistant", "content": "The capital of Peru is Lima."}])
    box.buttons["save edit"].click()
    saved = lines(path)
    assert [(d["index"], d["decision"]) for d in saved] == [(0, "accept"), (1, "reject"), (3, "edit")]
    assert saved[2]["messages"][-1]["content"] == "The capital of Peru is Lima."
    assert saved[0]["messages"] == examples[0]["messages"]


def test_broken_edit_is_refused_and_kept_for_fixing(tmp_path, examples, tok):
    path = tmp_path / "cur.jsonl"
    box = Curator(examples, path, tok).widget()
    box.editor.value = '[{"role": "user", "content": "no reply"}]'
    box.buttons["save edit"].click()
    assert not path.exists()  # nothing decided
    assert "no reply" in box.editor.value  # the draft is still there


def test_reopening_resumes(tmp_path, examples):
    path = tmp_path / "cur.jsonl"
    cur = Curator(examples, path)
    cur.accept()
    cur.reject()
    again = Curator(examples, path)
    assert again.index == 2 and again.counts() == {"accept": 1, "reject": 1, "edit": 0, "undecided": 3}
    assert again.accepted() == [{"messages": examples[0]["messages"]}]


def test_interrupted_write_leaves_previous_file_intact(tmp_path, examples, monkeypatch):
    path = tmp_path / "cur.jsonl"
    cur = Curator(examples, path)
    cur.accept()
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        cur.reject()
    assert path.read_bytes() == before
    assert lines(path)[0]["decision"] == "accept"
    assert [p.name for p in tmp_path.iterdir()] == ["cur.jsonl"]  # no temporary file left behind
