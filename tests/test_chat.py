import pytest

from kit.engine.chat import check_example, mask_html, render
from kit.engine.tokenizer import END

U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c, **k: {"role": "assistant", "content": c, **k}  # noqa: E731


def messages_of(problems):
    return [(p.field, p.severity) for p in problems]


@pytest.mark.parametrize("entry,field,severity,fragment", [
    ([1, 2], "", "error", "not a JSON object"),
    ({"msgs": []}, "messages", "error", "missing 'messages'"),
    ({"msgs": [], "messages": [U("a"), A("b")]}, "msgs", "warning", "unknown key"),
    ({"messages": []}, "messages", "error", "non-empty list"),
    ({"messages": [{"content": "hi"}, A("b")]}, "messages[0].role", "error", "missing 'role'"),
    ({"messages": [{"role": "user"}, A("b")]}, "messages[0].content", "error", "missing 'content'"),
    ({"messages": [{**U("a"), "mood": 1}, A("b")]}, "messages[0].mood", "error", "unknown key"),
    ({"messages": [{"role": "bot", "content": "a"}, A("b")]}, "messages[0].role", "error", "unknown role"),
    ({"messages": [U("a"), A("  ")]}, "messages[1].content", "error", "empty"),
    ({"messages": [U("a"), A(7)]}, "messages[1].content", "error", "must be a string"),
    ({"messages": [U("a")]}, "messages", "error", "no assistant"),
    ({"messages": [U("a"), U("b"), A("c")]}, "messages", "warning", "two user messages"),
    ({"messages": [A("hi"), U("a"), A("c")]}, "messages", "warning", "starts with the assistant"),
    ({"messages": [U("a"), A("c", weight=2)]}, "messages[1].weight", "error", "0 or 1"),
])
def test_each_format_check(entry, field, severity, fragment):
    problems = check_example(entry, line=7)
    hits = [p for p in problems if p.field == field and p.severity == severity and fragment in p.message]
    assert hits, problems
    assert all(p.line == 7 for p in problems)


def test_a_good_example_has_no_problem():
    assert check_example({"messages": [{"role": "system", "content": "s"}, U("a"), A("b")]}) == []


def test_mask_is_exactly_assistant_tokens_plus_end_of_turn(tok):
    conv = {"messages": [{"role": "system", "content": "Be brief."}, U("Capital of Peru?"),
                         A("The capital of Peru is Lima."), U("And Chile?"), A("Santiago.")]}
    r = render(conv, tok)
    learned = [t for t, m in zip(r.input_ids, r.loss_mask) if m]
    end = tok.convert_tokens_to_ids(END)
    want = (tok("The capital of Peru is Lima.", add_special_tokens=False)["input_ids"] + [end]
            + tok("Santiago.", add_special_tokens=False)["input_ids"] + [end])
    assert learned == want
    assert r.n_loss_tokens == len(want) and r.truncated == 0


def test_weight_zero_reply_is_context_only(tok):
    conv = {"messages": [U("a?"), A("First.", weight=0), U("b?"), A("Second.")]}
    r = render(conv, tok)
    learned = tok.decode([t for t, m in zip(r.input_ids, r.loss_mask) if m])
    assert learned == "Second." + END
    assert "First." in tok.decode(r.input_ids)


def test_truncation_reports_lost_assistant_tokens(tok):
    conv = {"messages": [U("q"), A("word " * 50)]}
    full = render(conv, tok)
    cut = render(conv, tok, max_length=len(full.input_ids) - 10)
    assert cut.truncated == 10 and len(cut.input_ids) == len(full.input_ids) - 10
    assert cut.lost_assistant_tokens == full.n_loss_tokens - cut.n_loss_tokens > 0


def test_mask_html_colours_loss_tokens(tok):
    r = render({"messages": [U("q"), A("Lima.")]}, tok)
    page = mask_html(r, tok)
    assert page.count("#c8f7c5") == r.n_loss_tokens
    assert page.count("<span") == len(r.input_ids)


def test_replies_cut_by_the_token_limit_are_shown_cut_at_a_word(tok):
    """A random model never ends its turn in 5 tokens: the texts for reading lose their last word and end in "…";
    the plain texts (what the measurements take) are left alone."""
    from kit.engine.generate import chat, chat_replies, complete
    from kit.engine.models import load
    from kit.engine.sanitize import mark_cut

    model, _ = load("smoke", tokenizer=tok)
    conv = [[{"role": "user", "content": "What is the capital of Peru?"}]]
    (plain, ended), = chat_replies(model, tok, conv, max_new_tokens=5)
    (marked, _), = chat_replies(model, tok, conv, max_new_tokens=5, mark_cut=True)
    assert not ended and not plain.endswith("…")
    assert marked == mark_cut(plain, ended=False) and marked.endswith("…")
    assert chat(model, tok, "What is the capital of Peru?", max_new_tokens=5) == marked
    assert plain.startswith(marked[:-1].rstrip())  # only the end was cut
    cont, = complete(model, tok, ["The capital of France is"], max_new_tokens=5, mark_cut=True)
    assert cont.endswith("…") and cont != complete(model, tok, ["The capital of France is"], max_new_tokens=5)[0]


def test_mark_cut_leaves_a_finished_reply_and_guesses_from_the_ending():
    from kit.engine.sanitize import mark_cut

    assert mark_cut("It is Lima.", ended=True) == "It is Lima."
    assert mark_cut("It is Lim", ended=False) == "It is…"
    assert mark_cut("It is Lima.") == "It is Lima."          # not recorded: a sentence's end counts as finished
    assert mark_cut("I can't help with that (fraud). I c") == "I can't help with that (fraud). I…"
    assert mark_cut('{"country": "Peru", "capital": "Lima"}') == '{"country": "Peru", "capital": "Lima"}'
    assert mark_cut('{"country": "Peru", "capital": "Li') == '{"country": "Peru", "capital"…'  # cut inside JSON
