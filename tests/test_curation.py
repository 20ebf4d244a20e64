import json
import os

import pytest

from kit.widgets.curation import Curator
from kit.world.chats import chat_splits


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


def test_decisions_follow_the_content_not_the_position(tmp_path, examples):
    path = tmp_path / "cur.jsonl"
    cur = Curator(examples, path)
    cur.accept()
    cur.reject()  # examples 0 and 1
    other = Curator([examples[1], examples[4], examples[0]], path)  # another list: reordered, one new
    assert other.decisions == {0: {"decision": "reject", "messages": examples[1]["messages"]},
                               2: {"decision": "accept", "messages": examples[0]["messages"]}}
    assert other.index == 1 and other.accepted() == [{"messages": examples[0]["messages"]}]
    new = Curator([examples[3]], path)  # none of its examples decided: nothing old comes back...
    assert new.accepted() == [] and new.counts()["undecided"] == 1
    new.accept()
    assert len(lines(path)) == 3  # ...and the decisions about the other examples stay in the file


def test_an_empty_list_is_handled(tmp_path, tok):
    cur = Curator([], tmp_path / "cur.jsonl", tok)
    assert cur.current is None and cur.accepted() == [] and cur.counts()["undecided"] == 0
    with pytest.raises(ValueError, match="the list given to Curator is empty"):
        cur.accept()
    box = cur.widget()
    assert box.buttons["accept"].disabled and "no example" in box.children[0].value


def test_truncated_decisions_file_is_reported_and_the_rest_kept(tmp_path, examples):
    path = tmp_path / "cur.jsonl"
    cur = Curator(examples, path)
    for _ in range(3):
        cur.accept()
    path.write_bytes(path.read_bytes()[:-25] + b"\n" + b'["not a decision"]\n')  # a cut write, a stray line
    (tmp_path / f".cur.jsonl.tmp-{2**22 + 7}").write_text("left by a killed write")
    with pytest.warns(UserWarning) as caught:
        again = Curator(examples, path)
    assert ["line 3: malformed JSON" in str(w.message) for w in caught] == [True, False]
    assert [(p.line, p.message.split(" ")[0]) for p in again.load_problems] == [(3, "malformed"), (4, "not")]
    assert again.counts()["accept"] == 2 and again.index == 2
    assert [p.name for p in tmp_path.iterdir()] == ["cur.jsonl"]  # the stale temporary file is gone


def test_example_text_is_escaped_in_the_widget(tmp_path, tok):
    evil = {"messages": [{"role": "user", "content": "<img src=x onerror=alert(1)>"},
                         {"role": "assistant", "content": "<script>alert(2)</script>"}]}
    box = Curator([evil, {"messages": [{"role": "user", "content": "<b>x</b>"}]}], tmp_path / "c<i>.jsonl",
                  tok).widget()
    box.buttons["next ▶"].click()  # the second one has an error: shown as JSON, problems listed
    shown = box.children[0].value + box.children[-1].value
    box.buttons["◀ prev"].click()
    shown += box.children[0].value + box.children[-1].value
    for raw in ("<img", "<script", "<b>x", "c<i>"):
        assert raw not in shown
