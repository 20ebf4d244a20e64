"""Any chat template: the loss mask of hub-style templates (no `{% generation %}`) found from rendered
prefixes, checked by hand against what each reply should carry."""

import copy

import pytest
from hubstyle import FAMILIES, tokenizer

from kit.engine.chat import TemplateError, has_generation_marks, render, reply_spans
from kit.engine.tokenizer import CHAT_TEMPLATE, end_of_turn_ids, prepare, stop_token_ids

CONV = [{"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "content": "Lima."},
        {"role": "user", "content": "And Chile?"},
        {"role": "assistant", "content": "Santiago."}]

# What each family's replies carry, written out by hand from its template: the reply, its
# end-of-turn token, and the newline the template writes right after it (if any).
EXPECTED = {
    "chatml": ["Lima.<|im_end|>\n", "Santiago.<|im_end|>\n"],
    "llama3": ["Lima.<|eot_id|>", "Santiago.<|eot_id|>"],
    "gemma": ["Lima.<end_of_turn>\n", "Santiago.<end_of_turn>\n"],
    "mistral": [" Lima.</s>", " Santiago.</s>"],
    "phi3": ["Lima.<|end|>\n", "Santiago.<|end|>\n"],  # not the EOS it appends after the last turn
}


def masked_texts(tok, conv):
    r = render({"messages": conv}, tok)
    runs, cur = [], []
    for t, m in zip(r.input_ids, r.loss_mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return request.param, tokenizer(request.param)


def test_hub_templates_have_no_generation_marks(family):
    _, tok = family
    assert not has_generation_marks(tok) and has_generation_marks(_kit_template_tok())


def test_each_reply_carries_loss_with_its_end_of_turn_token_and_nothing_else(family):
    name, tok = family
    assert masked_texts(tok, CONV) == EXPECTED[name]
    single = [CONV[1], CONV[2]]
    assert masked_texts(tok, single) == EXPECTED[name][:1]


def test_weight_zero_keeps_a_reply_out_of_the_loss(family):
    name, tok = family
    conv = [dict(m) for m in CONV]
    conv[2]["weight"] = 0
    assert masked_texts(tok, conv) == EXPECTED[name][1:]
    conv[4]["weight"] = 0
    r = render({"messages": conv}, tok)
    assert r.n_loss_tokens == 0 and r.n_assistant_tokens == 0


def test_the_mask_lines_up_with_the_template_rendering(family):
    _, tok = family
    r = render({"messages": CONV}, tok)
    assert tok.decode(r.input_ids) == tok.apply_chat_template(CONV, tokenize=False)
    ids, spans = reply_spans(CONV, tok)
    assert ids == r.input_ids and len(spans) == 2 and spans[0][1] <= spans[1][0]


def test_end_of_turn_tokens_are_found_from_the_template(family):
    name, tok = family
    end_id = tok.convert_tokens_to_ids(FAMILIES[name]["end"])
    assert end_of_turn_ids(tok) == [end_id]
    assert end_id in stop_token_ids(tok) and tok.eos_token_id in stop_token_ids(tok)


def test_truncation_cuts_the_mask_with_the_ids(family):
    _, tok = family
    full = render({"messages": CONV}, tok)
    cut = render({"messages": CONV}, tok, max_length=len(full.input_ids) - 3)
    assert cut.truncated == 3 and cut.loss_mask == full.loss_mask[:-3]
    assert cut.lost_assistant_tokens == sum(full.loss_mask[-3:])


def _kit_template_tok():
    tok = tokenizer("chatml")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_prefixes_agree_with_generation_marks_on_the_kit_template(tok):
    """The kit's own template has {% generation %}; without the marks, the prefixes give the same
    replies plus the newline the template writes after each end-of-turn token."""
    conv = [m for m in CONV if m["role"] != "system"]
    marked = masked_texts(tok, conv)
    plain = copy.deepcopy(tok)
    plain.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert not has_generation_marks(plain)
    assert marked == ["Lima.<|end|>", "Santiago.<|end|>"]
    assert masked_texts(plain, conv) == [t + "\n" for t in marked]


def test_a_template_that_drops_earlier_replies_is_refused_with_the_fix():
    tok = tokenizer("chatml")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' "
                         "and not loop.last %}[earlier reply]{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match="drops or rewrites a reply") as e:
        render({"messages": CONV}, tok)
    assert "{% generation %}" in str(e.value) and "reply 1" in str(e.value)
    assert masked_texts(tok, CONV[1:3]) == ["Lima.<|im_end|>\n"]  # one turn: nothing to drop


def test_a_template_that_rewrites_the_history_still_gives_exact_spans():
    """Past replies lose their reasoning, the last one gets an empty think block, the system text moves
    into the last user turn: each reply is still found where the whole conversation writes it."""
    tok = tokenizer("chatml")
    tok.chat_template = (
        "{% set sys = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
        "{% for m in messages if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'user' and (loop.last or loop.revindex == 2) %}{{ sys }} {% endif %}"
        "{% if m['role'] == 'assistant' %}{% set c = m['content'].split('</think>')[-1] | trim %}"
        "{% if loop.last %}<think>\n\n</think>\n\n{% endif %}{{ c }}{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    conv = [dict(m) for m in CONV]
    conv[2]["content"] = "<think>Peru: Lima.</think>Lima."
    assert masked_texts(tok, conv) == ["Lima.<|im_end|>\n", "Santiago.<|im_end|>\n"]
    assert masked_texts(tok, CONV[1:3]) == ["Lima.<|im_end|>\n"]


def test_a_template_that_refuses_the_system_role_gets_it_folded_into_the_first_user_turn():
    tok = tokenizer("chatml")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}")
    with pytest.warns(UserWarning, match="refuses the system role"):
        r = render({"messages": CONV}, tok)
    assert tok.decode(r.input_ids).startswith("<|im_start|>user\nYou answer in one sentence.\n\nCapital of Peru?")
    assert masked_texts(tok, CONV) == EXPECTED["chatml"]


def test_a_template_that_refuses_the_conversation_says_so():
    tok = tokenizer("chatml")
    tok.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                         "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
                         "{{ m['content'] }}{% endfor %}")
    with pytest.raises(TemplateError, match="roles must alternate"):
        render({"messages": CONV[1:3] + CONV[2:3]}, tok)


def test_a_tokenizer_without_pad_gets_its_eos_with_a_note():
    tok = tokenizer("llama3")
    notes = []
    prepare(tok, note=notes.append)
    assert tok.pad_token == "<|end_of_text|>" and tok.padding_side == "left"
    assert len(notes) == 1 and "no pad token" in notes[0]
    prepare(tok, note=notes.append)
    assert len(notes) == 1  # already has one: nothing to say


def test_a_marked_template_that_refuses_the_system_role_is_folded_too(tok):
    marked = copy.deepcopy(tok)
    marked.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                            "{% endif %}" + CHAT_TEMPLATE)
    conv = [CONV[0], CONV[1], CONV[2]]
    with pytest.warns(UserWarning, match="refuses the system role"):
        r = render({"messages": conv}, marked)
    assert "You answer in one sentence.\n\nCapital of Peru?" in marked.decode(r.input_ids)
    assert masked_texts(marked, conv) == ["Lima.<|end|>"]
