import json

import pytest

from kit.engine.chat import check_preference
from kit.engine.data import load_jsonl
from kit.widgets.rating import RatingSession, RatingWidget, auto_rate, fact_judge

CAPITALS = {"Peru": "Lima", "Chad": "N'Djamena", "Chile": "Santiago", "Kenya": "Nairobi", "Laos": "Vientiane",
            "Mali": "Bamako", "Nepal": "Kathmandu", "Oman": "Muscat"}


@pytest.fixture
def items():
    """(prompt, answer of run 1, answer of run 2): run 1 states the capital, run 2 does not."""
    return [(f"What is the capital of {c}?", f"The capital of {c} is {city}.", f"I think {c} has no capital.")
            for c, city in CAPITALS.items()]


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_widget_clicks_make_valid_pairs_with_the_right_answer_chosen(tmp_path, items):
    path = tmp_path / "prefs.jsonl"
    session = RatingSession(items, path, seed=0)
    assert set(session.swapped) == {True, False}  # run 1's answer is shown as A for some items, as B for others
    ui = RatingWidget(session)
    for k in range(len(items)):
        shown_a = ui.answers["a"].value
        if k == 2:
            ui.reason.value = "neither is what I asked"
            ui.buttons["both_bad"].click()
        else:
            ui.reason.value = "states the capital"
            ui.buttons["a" if " is " in shown_a and "no capital" not in shown_a else "b"].click()
        assert ui.reason.value == ""  # cleared for the next item
        assert len(lines(path)) == k + (0 if k >= 2 else 1)  # saved after every click
    assert ui.buttons["a"].disabled and "every item is rated" in ui.prompt.value
    examples, report = load_jsonl(path)
    assert report.problems == [] and len(examples) == len(items) - 1
    for ex in lines(path):
        assert check_preference(ex) == []
        assert "is" in ex["chosen"][0]["content"] and "no capital" in ex["rejected"][0]["content"]
        country = ex["prompt"][0]["content"].split()[-1].rstrip("?")
        assert CAPITALS[country] in ex["chosen"][0]["content"]
    assert [b["prompt"][0]["content"] for b in session.both_bad] == [items[2][0]]
    log = lines(session.log_path)
    assert [r["choice"] for r in log].count("both_bad") == 1 and log[2]["reason"] == "neither is what I asked"
    assert session.counts()["unrated"] == 0


def test_choices_map_back_through_the_shuffle(tmp_path, items):
    session = RatingSession(items[:4], tmp_path / "p.jsonl", seed=5)
    for _ in range(4):
        session.choose("a")  # always the answer shown first, whichever run gave it
    chosen = [p["chosen"][0]["content"] for p in session.pairs()]
    expected = [it[2] if swapped else it[1] for it, swapped in zip(items[:4], session.swapped)]
    assert chosen == expected
    assert RatingSession(items, tmp_path / "q.jsonl", seed=5).swapped[:4] == session.swapped  # seeded
    other = RatingSession(items, tmp_path / "r.jsonl", seed=6)
    assert other.swapped != RatingSession(items, tmp_path / "q.jsonl", seed=5).swapped


def test_scripted_reviewer_prefers_the_stated_fact(tmp_path, items):
    items = items + [("What is the capital of Peru?", "Lima.", "It is Lima."),  # both right: no preference
                     ("What is the capital of Oman?", "Cairo.", "Rome.")]       # both wrong
    expected = {f"What is the capital of {c}?": city for c, city in CAPITALS.items()}
    session = RatingSession(items, tmp_path / "auto.jsonl", seed=1)
    counts = auto_rate(session, fact_judge(expected))
    assert counts == {"a": sum(not s for s in session.swapped[:8]), "b": sum(session.swapped[:8]),
                      "both_bad": 1, "unrated": 1}
    pairs = session.pairs()
    assert len(pairs) == 8 and all(CAPITALS[p["prompt"][0]["content"].split()[-1][:-1]] in p["chosen"][0]["content"]
                                   for p in pairs)


def test_reopening_resumes_and_bad_choices_are_refused(tmp_path, items):
    path = tmp_path / "prefs.jsonl"
    session = RatingSession(items, path)
    with pytest.raises(ValueError, match="choice must be one of"):
        session.choose("c")
    session.choose("a", "first")
    session.choose("both_bad")
    session.skip()
    session.choose("b")
    again = RatingSession(items, path)
    assert again.index == 2 and again.counts() == {"a": 1, "b": 1, "both_bad": 1, "unrated": 5}
    assert again.pairs() == session.pairs() and len(lines(path)) == 2
    again.choose("a")
    assert again.index == 4
    for _ in range(4):
        again.choose("b")
    with pytest.raises(IndexError):
        again.choose("a")


def test_saved_choices_apply_only_to_the_same_items(tmp_path):
    from kit.widgets.rating import RatingSession

    path = tmp_path / "prefs.jsonl"
    first = RatingSession([("Capital of Peru?", "Lima.", "Quito.")], path)
    first.choose("a")
    same = RatingSession([("Capital of Peru?", "Lima.", "Quito.")], path)
    changed = RatingSession([("Capital of Peru?", "Lima, of course.", "Quito.")], path)  # new answers
    assert same.done and same.counts()["unrated"] == 0
    assert not changed.done and changed.counts()["unrated"] == 1


def test_a_kill_between_the_two_writes_is_repaired_at_the_next_open(tmp_path, items, monkeypatch):
    import kit.widgets.rating as rating

    path = tmp_path / "prefs.jsonl"
    session = RatingSession(items, path)
    session.choose("a")
    real = rating.write_jsonl

    def killed_after_the_log(p, rows):
        if p == path:
            raise KeyboardInterrupt  # killed once the decisions (the file of record) are written
        real(p, rows)

    monkeypatch.setattr(rating, "write_jsonl", killed_after_the_log)
    with pytest.raises(KeyboardInterrupt):
        session.choose("b")
    monkeypatch.setattr(rating, "write_jsonl", real)
    assert len(lines(path)) == 1  # the pairs are one behind the decisions...
    again = RatingSession(items, path)
    assert len(lines(path)) == 2 and lines(path) == again.pairs()  # ...until the next open derives them again


def test_a_cut_decisions_file_is_reported_and_the_rest_kept(tmp_path, items):
    path = tmp_path / "prefs.jsonl"
    session = RatingSession(items, path)
    for choice in ("a", "b", "a"):
        session.choose(choice)
    log = session.log_path
    log.write_bytes(log.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="line 3: malformed JSON"):
        again = RatingSession(items, path)
    assert again.counts()["unrated"] == len(items) - 2 and [p.line for p in again.load_problems] == [3]
    assert len(lines(path)) == 2  # the pairs follow the readable decisions


def test_rated_text_is_escaped(tmp_path):
    session = RatingSession([("<img src=x onerror=alert(1)>", "<u>one</u>", "<script>x</script>")],
                            tmp_path / "p.jsonl")
    ui = RatingWidget(session)
    shown = ui.prompt.value + ui.answers["a"].value + ui.answers["b"].value
    assert "<img" not in shown and "<script" not in shown and "<u>" not in shown and "&lt;img" in shown


def test_noisy_reviewer_errs_on_about_its_share_of_decisions():
    from kit.widgets.rating import fact_judge

    expected = {f"q{i}": "Lima" for i in range(400)}
    honest, noisy, always = fact_judge(expected), fact_judge(expected, noise=0.3, seed=1), fact_judge(expected, 1.0)
    shown = [(f"q{i}", "It is Lima.", "It is Cusco.") for i in range(400)]
    assert {honest(*s) for s in shown} == {"a"} and {always(*s) for s in shown} == {"b"}
    flipped = sum(noisy(*s) == "b" for s in shown) / len(shown)
    assert 0.22 < flipped < 0.38
    assert always("q1", "Lima", "Lima.") is None  # both right: still no preference
    assert always("q1", "Cusco", "Quito") in ("a", "b")  # both wrong: a random pick instead of both_bad
    with pytest.raises(ValueError, match="noise must be"):
        fact_judge(expected, noise=1.5)
