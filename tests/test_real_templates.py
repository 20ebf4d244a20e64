"""The loss mask under the real, byte-exact chat templates of many model families (vendored in
tests/fixtures/chat_templates, each file's source in sources.json): every assistant reply, and only
the replies, carry loss, each with its end-of-turn token, in one-turn, system + two-turn and
three-turn conversations; templates that rewrite the history (Qwen3, DeepSeek-R1), move the system
text (Mistral v0.3) or refuse it (Gemma 2, Mistral v0.1) included."""

import json
import re
import warnings
from pathlib import Path

import pytest
from hubstyle import bpe_tokenizer
from transformers import PreTrainedTokenizerFast

from kit.engine.chat import has_generation_marks, render, reply_spans
from kit.engine.tokenizer import end_of_turn_ids

HERE = Path(__file__).resolve().parent / "fixtures" / "chat_templates"
SOURCES = json.loads((HERE / "sources.json").read_text())
END = {"qwen": "<|im_end|>", "smollm2": "<|im_end|>", "llama-3": "<|eot_id|>", "llama-2": "</s>", "mistral": "</s>",
       "zephyr": "</s>", "gemma": "<end_of_turn>", "phi-3": "<|end|>", "deepseek": "<｜end▁of▁sentence｜>",
       "granite": "<|end_of_text|>", "falcon3": "<|endoftext|>", "command-r": "<|END_OF_TURN_TOKEN|>"}
TEXT = ["The capital of Peru is Lima.", "Santiago is the capital of Chile.", "What is the capital of Kenya?",
        "Answer in one short sentence, please.", "Nairobi. Oslo! Tokyo? Cairo, Quito; Accra: Rabat"] * 20

ONE = [{"role": "user", "content": "What is the capital of Peru?"},
       {"role": "assistant", "content": "The capital of Peru is Lima."}]
SYSTEM_TWO = [{"role": "system", "content": "Answer in one short sentence, please."}, *ONE,
              {"role": "user", "content": "And of Chile?"},
              {"role": "assistant", "content": "Santiago is the capital of Chile."}]
THREE = [*ONE, {"role": "user", "content": "And of Chile?"}, {"role": "assistant", "content": "Santiago."},
         {"role": "user", "content": "And of Kenya?"}, {"role": "assistant", "content": "Nairobi is."}]


def end_token(family: str) -> str:
    return next(v for k, v in END.items() if family.startswith(k))


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here, with the family's special tokens and its real chat template."""
    src = SOURCES[family]
    specials = list(dict.fromkeys([t for t in (src.get("bos_token"), src.get("eos_token")) if t]
                                  + src["special_tokens"]))
    return bpe_tokenizer(specials, src.get("bos_token"), src.get("eos_token"),
                         (HERE / f"{family}.jinja").read_text(encoding="utf-8"), 400 + len(specials), TEXT)


def masked_runs(tok, conv) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the note on a folded system message
        r = render({"messages": conv}, tok)
    runs, cur = [], []
    for t, m in zip([*r.input_ids, None], [*r.loss_mask, 0]):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs


@pytest.fixture(scope="module", params=sorted(SOURCES))
def family(request):
    return request.param, family_tokenizer(request.param)


def test_at_least_twelve_families_are_vendored_with_their_source():
    assert len(SOURCES) >= 12
    for name, src in SOURCES.items():
        assert (HERE / f"{name}.jinja").is_file() and src["source"] and src["model"]


@pytest.mark.parametrize("conv", [ONE, SYSTEM_TWO, THREE], ids=["one-turn", "system-two-turn", "three-turn"])
def test_each_reply_and_its_end_of_turn_token_carry_the_loss(family, conv):
    name, tok = family
    assert not has_generation_marks(tok)
    replies = [m["content"] for m in conv if m["role"] == "assistant"]
    runs = masked_runs(tok, conv)
    assert len(runs) == len(replies), (name, runs)
    eot = re.escape(end_token(name))
    for run, reply in zip(runs, replies):  # the reply, the whitespace the template writes, its end of turn
        assert re.fullmatch(rf"[ ]?{re.escape(reply)}\s*{eot}\n*", run), (name, run)


def test_the_mask_lines_up_with_the_whole_rendering(family):
    name, tok = family
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, spans = reply_spans(THREE, tok)
    assert tok.decode(ids) == tok.apply_chat_template(THREE, tokenize=False)
    assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:]))
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids(end_token(name))]


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1", "deepseek-r1-distill-llama"])
def test_past_reasoning_is_dropped_and_the_mask_follows_the_rendering(name):
    tok = family_tokenizer(name)
    conv = [dict(m) for m in THREE]
    conv[1]["content"] = "<think>Peru's capital: Lima.</think>The capital of Peru is Lima."
    text = tok.apply_chat_template(conv, tokenize=False)
    assert "Peru's capital" not in text  # the template drops a past turn's reasoning
    runs = masked_runs(tok, conv)
    assert runs[0].startswith("The capital of Peru is Lima.") and len(runs) == 3


def test_a_folded_system_message_is_noted_once():
    tok = family_tokenizer("gemma-2")
    with pytest.warns(UserWarning, match="refuses the system role"):
        render({"messages": SYSTEM_TWO}, tok)
    text = tok.decode(render({"messages": SYSTEM_TWO}, tok).input_ids)
    assert "<start_of_turn>user\nAnswer in one short sentence, please.\n\nWhat is the capital of Peru?" in text


def test_located_spans_equal_transformers_generation_mask():
    """A template with {% generation %} marks: the spans found by locating each reply are the tokens
    transformers' own return_assistant_tokens_mask marks."""
    tok = family_tokenizer("smollm2")
    tok.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}{% if message['role'] == "
        "'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>\n' }}{% endgeneration %}{% else %}"
        "{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert has_generation_marks(tok)
    for conv in (ONE, SYSTEM_TWO, THREE):
        assert reply_spans(conv, tok, use_marks=False) == reply_spans(conv, tok)


@pytest.mark.parametrize("name", ["qwen2.5", "qwen3", "llama-3.1", "mistral-v0.3"])
def test_a_tool_call_is_learned_as_the_template_writes_it(name):
    row = json.loads((HERE.parent.parent.parent / "datasets" / "shapes" / "tools.jsonl").read_text().splitlines()[0])
    tok = family_tokenizer(name)
    call, reply = masked_runs(tok, row["messages"])
    assert "lookup_city" in call and '"Lima"' in call and call.rstrip().endswith(end_token(name))
    assert reply.strip().startswith("I looked up Lima") and "tool_response" not in call


def test_a_template_that_ignores_tool_calls_is_refused():
    from kit.engine.chat import TemplateError

    row = json.loads((HERE.parent.parent.parent / "datasets" / "shapes" / "tools.jsonl").read_text().splitlines()[0])
    with pytest.raises(TemplateError, match="does not write the tool call"):
        render(row, family_tokenizer("smollm2"))
