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
