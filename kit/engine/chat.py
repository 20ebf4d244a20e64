"""Conversations rendered into token ids and a loss mask, under any chat template.

The format and its checks are in `kit.engine.checks` (re-exported here). `render` gives a
conversation's ids and mask: the template's `{% generation %}` spans where it has them, else each
reply found inside the rendering of the whole conversation (`reply_spans`).

Example:
    >>> conv = {"messages": [{"role": "user", "content": "Capital of Peru?"},
    ...                      {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    >>> check_example(conv)
    []
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from .checks import ENTRY_KEYS as ENTRY_KEYS
from .checks import MESSAGE_KEYS as MESSAGE_KEYS
from .checks import PREFERENCE_KEYS as PREFERENCE_KEYS
from .checks import ROLES as ROLES
from .checks import TEMPLATE_KEYS as TEMPLATE_KEYS
from .checks import Problem as Problem
from .checks import check_example as check_example
from .checks import check_preference as check_preference
from .checks import short as short
from .errors import KitError
from .vocab import MESSAGE_CHARS as MESSAGE_CHARS
from .vocab import _cached, _special_re, document_start
from .vocab import conversation_chars as conversation_chars
from .vocab import conversation_size as conversation_size
from .vocab import cut_budget as cut_budget
from .vocab import cut_messages as cut_messages
from .vocab import find_special_token as find_special_token
from .vocab import max_token_chars as max_token_chars
from .vocab import special_tokens as special_tokens


@dataclass
class Rendered:
    """A conversation as the model sees it: token ids and the loss mask (1 = learn this token)."""

    input_ids: list[int]
    loss_mask: list[int]
    n_assistant_tokens: int   # before any truncation
    truncated: int            # tokens cut off by max_length
    lost_assistant_tokens: int
    exact: bool = True        # False: the text was too long to tokenise whole, and was cut in characters
                              # first; the counts above then cover only the part that was tokenised

    @property
    def n_loss_tokens(self) -> int:
        return sum(self.loss_mask)


class TemplateError(KitError, ValueError):
    """A chat template that cannot give a loss mask for a conversation; the message names cause and fix."""


_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")


def has_generation_marks(tok) -> bool:
    """True when the tokenizer's chat template marks assistant replies with `{% generation %}`."""
    template = getattr(tok, "chat_template", None)
    return isinstance(template, str) and bool(_GENERATION.search(template))


def _render_text(tok, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja's TemplateError, or a template's own raise_exception(...)
        raise TemplateError(f"the chat template refused this conversation ({type(e).__name__}: {e}); many hub "
                            "templates require user and assistant turns to alternate, and some refuse a system "
                            "message: fix the conversation, or give the tokenizer another chat_template") from e


def template_messages(messages: list[dict]) -> list[dict]:
    """The messages as a chat template reads them: role and content, and the tool fields where given (the
    kit's own keys, such as `weight`, left out)."""
    return [{k: m[k] for k in TEMPLATE_KEYS if k in m} for m in messages]


def fold_system(messages: list[dict]) -> list[dict]:
    """The system message(s) written at the start of the first user turn, for a template that refuses the
    system role (Gemma 2, the first Mixtral): "<system text>\\n\\n<user text>"."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m.get("content"))
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user" and system:
            m["content"] = f"{system}\n\n{m.get('content') or ''}"
            break
    else:
        if system:
            rest.insert(0, {"role": "user", "content": system})
    return rest


def render_conversation(tok, messages: list[dict], add_generation_prompt: bool = False) -> tuple[str, list[dict]]:
    """The template's text of a conversation, and the messages it rendered: when the template refuses a system
    message, the system text is folded into the first user turn (`fold_system`) and a one-line note is given."""
    return _folding(tok, messages, lambda m: _render_text(tok, m, add_generation_prompt))


def _folding(tok, messages: list[dict], render):
    """(render(messages), messages); when that raises a TemplateError and there is a system message,
    (render(fold_system(messages)), the folded messages), noted once per tokenizer."""
    try:
        return render(messages), messages
    except TemplateError as first:
        if not any(m["role"] == "system" for m in messages):
            raise
        folded = fold_system(messages)
        try:
            out = render(folded)
        except TemplateError:
            raise first from None
        if not getattr(tok, "_kit_folded_note", False):
            warnings.warn("this chat template refuses the system role: the system text is written at the start of "
                          "the first user turn instead", stacklevel=4)
            try:
                tok._kit_folded_note = True
            except AttributeError:  # pragma: no cover - a tokenizer that refuses new attributes
                pass
        return out, folded


def _marked_render(tok, messages: list[dict]) -> dict:
    """The template's own ids and `{% generation %}` mask (`assistant_masks`)."""
    try:
        return tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    except Exception as e:
        raise TemplateError(f"the chat template refused this conversation ({type(e).__name__}: {e})") from e


def _marker(k: int) -> str:
    """A stand-in for the k-th assistant reply: private-use characters that no template trims, splits or
    matches (a reply's reasoning, when it has one, is kept before it: see `reply_spans`)."""
    return "\ue000" + "".join(chr(0xe010 + int(d)) for d in str(k)) + "\ue001"


def _answer(content: str) -> tuple[str, str]:
    """A reply split into (its reasoning up to and including '</think>', the answer after it)."""
    cut = content.rfind("</think>")
    return (content[: cut + len("</think>")], content[cut + len("</think>"):]) if cut >= 0 else ("", content)


def _content_regions(real: str, marked: str, markers: list[str]) -> list[tuple[int, int]] | None:
    """Where each marker of `marked` (the conversation with stand-ins for the replies) lies in `real` (the
    same conversation with the replies): the text between the template's own text around it. None when a
    marker is missing (the template dropped or rewrote that reply)."""
    where = []
    for m in markers:
        i = marked.find(m)
        if i < 0:
            return None
        where.append((i, i + len(m)))
    segments = [marked[b0:a1] for (_, b0), (a1, _) in zip([(0, 0), *where], [*where, (len(marked), 0)])]
    out, p = [], 0  # fast path: the template only inserts each reply (perhaps trimmed) between fixed texts
    for k, seg in enumerate(segments[:-1]):
        if not real.startswith(seg, p):
            break
        start = p + len(seg)
        nxt = segments[k + 1]
        end = real.find(nxt, start) if k + 1 < len(segments) - 1 else len(real) - len(nxt)
        if end < start or (k + 1 == len(segments) - 1 and not real.endswith(nxt)):
            break
        out.append((start, end))
        p = end
    else:
        return out
    import difflib  # slow path: the template writes something else around an empty reply (a tool call)

    blocks = difflib.SequenceMatcher(None, marked, real, autojunk=False).get_matching_blocks()
    out = []
    for a, b in where:
        start = max((blk.b + blk.size for blk in blocks if blk.a + blk.size <= a), default=0)
        end = min((blk.b for blk in blocks if blk.a >= b and blk.size), default=len(real))
        out.append((start, max(start, end)))
    return out


def reply_spans(messages: list[dict], tok, use_marks: bool = True) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a whole conversation and the [start, end) token span of every assistant reply, in order.

    With `{% generation %}` in the template the spans are the template's own. Otherwise each reply is
    found inside the rendering of the whole conversation (so a template that rewrites earlier turns,
    moves the system text or adds an empty think block still gives exact spans): the conversation is
    rendered once with the replies and once with a stand-in for each, and the text between the
    template's own text around a stand-in is that reply as the template wrote it. The span runs from
    the reply (with a space the template writes before it, which the model generates too) over the
    end-of-turn token the template writes after it (the first special token), and the newline after
    that; not an end-of-conversation token some templates append after the last turn. A reply's
    reasoning that the template drops from past turns is not in the rendering, so not in the loss;
    an empty think block the template writes before the last reply is context, as the generation
    prompt is.

    `use_marks=False` finds the spans as for a template without marks (to compare the two).
    One function over 60 lines on purpose: the two renderings, the stand-ins and the span ends must be read
    together to see why a reply's span is exact under every template family.

    Raises:
        TemplateError: the template drops or rewrites a reply, or refuses the conversation; the
            message says which and what to do.
    """
    if not getattr(tok, "chat_template", None):
        raise TemplateError("the tokenizer has no chat template, so a conversation cannot be rendered: set "
                            "tok.chat_template (a Jinja template) or use a tokenizer that has one")
    plain = template_messages(messages)
    if has_generation_marks(tok) and use_marks:
        out, _ = _folding(tok, plain, lambda m: _marked_render(tok, m))
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        spans, start = [], None
        for i, bit in enumerate([*mask, 0]):  # the k-th run of ones is the k-th assistant reply
            if bit and start is None:
                start = i
            elif not bit and start is not None:
                spans.append((start, i))
                start = None
        return ids, spans
    full, plain = render_conversation(tok, plain)
    assistant = [k for k, m in enumerate(plain) if m["role"] == "assistant"]
    replies = [k for k in assistant if plain[k].get("content") or not plain[k].get("tool_calls")]
    markers = [_marker(j) for j in range(len(replies))]
    stand_in = [dict(m) for m in plain]
    for j, k in enumerate(replies):
        stand_in[k]["content"] = _answer(plain[k].get("content") or "")[0] + markers[j]
    regions = _content_regions(full, _render_text(tok, stand_in), markers)
    if regions is None:
        _rewritten(0)
    where = dict(zip(replies, regions))
    char_spans = []
    for k in assistant:
        limit = next((where[i][0] for i in replies if i > k), len(full))
        if k not in where:  # a reply that only calls a tool: it starts where the generation prompt stops
            prompt = _render_text(tok, plain[:k], add_generation_prompt=True)  # matching (DeepSeek's ends in
            start = next((i for i, (x, y) in enumerate(zip(prompt, full)) if x != y), len(prompt))  # <think>)
            if char_spans and start < char_spans[-1][1]:
                raise TemplateError(f"assistant message {k} only calls a tool, and the chat template writes the "
                                    "conversation before it differently once it goes on, so where the call starts "
                                    "cannot be found: give the message a short content, or use {% generation %}")
            end = _turn_end(full, start, limit, tok, tool_call=True)
            if not _special_re_strip(full[start:end], tok).strip():
                raise TemplateError(f"the chat template does not write the tool call of assistant message {k} (it "
                                    "ignores tool_calls, or writes them only when tools= is given): the model would "
                                    "learn an empty reply; use a template that writes tool calls")
            char_spans.append((start, end))
            continue
        answer = _answer(plain[k].get("content") or "")[1].strip()
        a, b = where[k]
        at = full.find(answer, a, b) if answer else a
        if at < 0:
            _rewritten(replies.index(k))
        if answer:
            a, b = at, at + len(answer)
        while a > 0 and full[a - 1] in " \t":  # "[/INST] reply": the model writes that space itself
            a -= 1
        char_spans.append((a, _turn_end(full, b, limit, tok, tool_call=bool(plain[k].get("tool_calls")))))
    try:
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as e:
        raise TemplateError("finding the loss mask of a template without {% generation %} needs a fast tokenizer "
                            "(offsets): load it with AutoTokenizer.from_pretrained(..., use_fast=True)") from e
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    spans = []
    for a, b in char_spans:  # a token that straddles an edge is in when its outside part is only whitespace
        inside = [i for i, (s, e) in enumerate(offsets) if e > s and e > a and s < b
                  and not full[s:a].strip() and not full[b:e].strip()]
        if inside:
            spans.append((inside[0], inside[-1] + 1))
    if len(spans) != len(char_spans):
        raise TemplateError("an assistant reply renders to no token at all: check the conversation's content")
    return ids, spans


def _special_re_strip(text: str, tok) -> str:
    """The text without the tokenizer's special tokens."""
    pattern = _cached(tok, "_kit_special_re", lambda: _special_re(tok))
    return pattern.sub("", text) if pattern is not None else text


def _rewritten(j: int):
    raise TemplateError(
        f"the chat template does not write assistant reply {j + 1} as it is (it drops or rewrites a reply, e.g. "
        "keeps only a summary of past turns), so the reply's tokens cannot be found: put {% generation %}..."
        "{% endgeneration %} around the assistant content in tok.chat_template, or use a template that writes "
        "every reply")


def _turn_end(full: str, end: int, limit: int, tok, tool_call: bool = False) -> int:
    """Where a reply's turn ends: after the first special token the template writes after it (its end of turn),
    with only whitespace before it, and the newlines right after that token. After a tool call (which the
    template writes in its own words and tokens): the first end-of-turn token."""
    if tool_call:
        ends = [tok.convert_ids_to_tokens(i) for i in end_of_turn_ids(tok)] or [tok.eos_token]
        pattern = re.compile("|".join(map(re.escape, [e for e in ends if e]))) if any(ends) else None
    else:
        pattern = _cached(tok, "_kit_special_re", lambda: _special_re(tok))
    m = pattern.search(full, end, limit) if pattern is not None else None
    if m is None or not (tool_call or not full[end:m.start()].strip()):
        return end
    stop = m.end()
    while stop < limit and full[stop] in "\r\n":
        stop += 1
    return stop


def render(conversation: dict | list, tok, max_length: int | None = None) -> Rendered:
    """Token ids and loss mask of a conversation under the tokenizer's chat template.

    The mask covers each assistant reply with its end-of-turn token (see `reply_spans`: the
    template's `{% generation %}` spans, or spans found from rendered prefixes when the template
    has none); replies with `weight: 0` are left out of it.

    Example:
        >>> r = render({"messages": [{"role": "user", "content": "Hi"},
        ...                          {"role": "assistant", "content": "Hello."}]}, tok)  # doctest: +SKIP
        >>> tok.decode([i for i, m in zip(r.input_ids, r.loss_mask) if m])                 # doctest: +SKIP
        'Hello.<|end|>'
    """
    if isinstance(conversation, dict) and "text" in conversation and "messages" not in conversation:
        return render_text(conversation["text"], tok, max_length)
    messages = conversation["messages"] if isinstance(conversation, dict) else conversation
    exact = True
    if max_length is not None:  # a text far longer than max_length is cut in characters before tokenising
        budget = cut_budget(tok, max_length)
        if conversation_size(messages) > budget:
            messages, exact = cut_messages(messages, budget), False
    ids, spans = reply_spans(messages, tok)
    weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
    mask = [0] * len(ids)
    for (a, b), w in zip(spans, weights):
        if w != 0:
            mask[a:b] = [1] * (b - a)
    n_assistant = sum(mask)
    truncated = 0
    if max_length is not None and len(ids) > max_length:
        truncated = len(ids) - max_length
        ids, mask = ids[:max_length], mask[:max_length]
    return Rendered(ids, mask, n_assistant, truncated, n_assistant - sum(mask), exact)


def render_text(text: str, tok, max_length: int | None = None) -> Rendered:
    """A plain text as a document (a `{"text": ...}` row): what the tokenizer starts a document with, the
    text, and its EOS token; every token after the start carries loss."""
    exact = True
    if max_length is not None and len(text) > cut_budget(tok, max_length):
        text, exact = text[: cut_budget(tok, max_length)], False
    start = document_start(tok)
    body = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if tok.eos_token_id is not None
                                                               else [])
    ids, mask = start + body, [0] * len(start) + [1] * len(body)
    truncated = max(0, len(ids) - max_length) if max_length is not None else 0
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    return Rendered(ids, mask, len(body), truncated, len(body) - sum(mask), exact)


def end_of_turn_ids(tok) -> list[int]:
    """The special tokens the chat template writes right after an assistant reply (cached per template)."""
    template = getattr(tok, "chat_template", None)
    cached = getattr(tok, "_kit_end_of_turn", None)
    if cached is not None and cached[0] == template:
        return cached[1]
    found: list[int] = []
    if template:
        try:
            probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes"}]
            ids, spans = reply_spans(probe, tok)
            special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
            start, end = spans[0]
            found = sorted({t for t in ids[start:end] if t in special})
        except (TemplateError, ValueError, IndexError, TypeError):
            found = []
    try:
        tok._kit_end_of_turn = (template, found)
    except AttributeError:  # pragma: no cover - a tokenizer that refuses new attributes
        pass
    return found


def mask_html(rendered: Rendered, tok) -> str:
    """HTML of the rendered tokens, those that carry loss on green, the others grey."""
    import html

    spans = []
    for t, m in zip(rendered.input_ids, rendered.loss_mask):
        text = html.escape(tok.decode([t])).replace("\n", "↵<br>")
        style = "background:#c8f7c5" if m else "background:#eee;color:#777"
        spans.append(f"<span style='{style};border:1px solid #fff;font-family:monospace'>{text}</span>")
    return "<div style='line-height:1.8'>" + "".join(spans) + "</div>"
