"""Conversations: check one against the chat format, and render it into token ids and a loss mask.

The format is OpenAI's fine-tuning format:
    {"messages": [{"role": "system" | "user" | "assistant", "content": "...", "weight": 0 | 1}, ...]}
`weight` is optional (assistant messages only): 0 keeps a reply in the context but out of the loss.
Preference pairs (for DPO) use {"prompt": [messages], "chosen": [messages], "rejected": [messages]}.

Example:
    >>> conv = {"messages": [{"role": "user", "content": "Capital of Peru?"},
    ...                      {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    >>> check_example(conv)
    []
    >>> check_example({"messages": [{"role": "robot", "content": "hi"}]})[0].message
    "unknown role 'robot' (expected one of: system, user, assistant)"
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

ROLES = ("system", "user", "assistant")
ENTRY_KEYS = {"messages"}
MESSAGE_KEYS = {"role", "content", "weight", "name"}
PREFERENCE_KEYS = {"prompt", "chosen", "rejected"}


@dataclass(frozen=True)
class Problem:
    """One row of a validation report. `line` counts from 1, as in an editor (0: the whole file)."""

    line: int
    field: str
    severity: str  # "error" | "warning"
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


_SURROGATE = re.compile("[\ud800-\udfff]")


def short(value, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters (safe for any JSON value, even a 10,000-digit number)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "..."
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # int too long to convert, or nested too deeply
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _key(key) -> str:
    """A key as it may appear in a field name: itself when it is a plain short name, else its cut repr."""
    return key if isinstance(key, str) and key.isidentifier() and len(key) <= 40 else short(key, 40)


def _check_messages(messages, field: str, err) -> list:
    """Per-message checks shared by chat and preference examples; returns the roles seen (text roles only)."""
    if not isinstance(messages, list) or not messages:
        err(field, f"'{field}' must be a non-empty list of messages (got {short(messages, 40)})")
        return []
    roles = []
    for i, m in enumerate(messages):
        f = f"{field}[{i}]"
        if not isinstance(m, dict):
            err(f, f"message is not an object (got {type(m).__name__}): write {{\"role\": ..., \"content\": ...}}")
            continue
        for key in ("role", "content"):
            if key not in m:
                err(f"{f}.{key}", f"message is missing {key!r}" + (": add \"role\": \"user\" (or \"assistant\", "
                                                                   "\"system\")" if key == "role" else
                                                                   ": add the message's text as \"content\""))
        for key in sorted(set(m) - MESSAGE_KEYS, key=str):
            err(f"{f}.{_key(key)}", f"unknown key {short(key, 40)} in a message "
                                    f"(allowed: {', '.join(sorted(MESSAGE_KEYS))}): remove or rename it")
        role, content = m.get("role"), m.get("content")
        if "role" in m and not (isinstance(role, str) and role in ROLES):
            err(f"{f}.role", f"unknown role {short(role, 40)} (expected one of: {', '.join(ROLES)})")
        if "content" in m:
            if not isinstance(content, str):
                err(f"{f}.content", f"content must be a string (got {type(content).__name__}): write the text in "
                                    "double quotes")
            elif not content.strip():
                err(f"{f}.content", "content is empty: write the message's text, or remove the message")
            elif bad := _SURROGATE.search(content):
                err(f"{f}.content", f"content holds a lone surrogate ({bad.group()!r} at character {bad.start() + 1}), "
                                    "which is not valid Unicode text: fix the \\u escape (an emoji is a pair such as "
                                    "\\ud83d\\ude00) or remove it")
        if "weight" in m:
            w = m["weight"]
            if type(w) is not int or w not in (0, 1):
                err(f"{f}.weight", f"weight must be the integer 0 or 1 (got {short(w, 40)}): write 0 or 1, "
                                   "without quotes or a decimal point")
            elif role != "assistant":
                err(f"{f}.weight", "weight only applies to assistant messages", "warning")
        if "name" in m and not (isinstance(m["name"], str) and m["name"].strip()):
            err(f"{f}.name", f"name must be a non-empty string (got {short(m['name'], 40)})")
        roles.append(role if isinstance(role, str) else None)
    return roles


def check_example(entry, line: int = 0) -> list[Problem]:
    """The format problems of one chat example (OpenAI's data checks plus role order), as Problems.

    A preference example (keys `prompt`, `chosen`, `rejected`) is checked by `check_preference`.
    """
    def err(field: str, msg: str, severity: str = "error") -> None:
        out.append(Problem(line, field, severity, msg))

    out: list[Problem] = []
    if not isinstance(entry, dict):
        err("", f"entry is not a JSON object (got {type(entry).__name__}): write one object per line, "
                "{\"messages\": [...]}")
        return out
    if "messages" not in entry and {"prompt", "chosen", "rejected"} & set(entry):
        return check_preference(entry, line)
    for key in sorted(set(entry) - ENTRY_KEYS, key=str):
        err(_key(key), f"unknown key {short(key, 40)} in the entry (expected only 'messages')", "warning")
    if "messages" not in entry:
        err("messages", "missing 'messages': a chat example is {\"messages\": [{\"role\": ..., \"content\": ...}, "
                        "...]}")
        return out
    roles = _check_messages(entry["messages"], "messages", err)
    if not roles:
        return out
    if "assistant" not in roles:
        err("messages", "no assistant message: the example teaches nothing")
    body = [r for r in roles if r != "system"]
    if "system" in roles[1:]:
        err("messages", "a system message after the first message", "warning")
    if body and body[0] == "assistant":
        err("messages", "the conversation starts with the assistant (expected a user message first)", "warning")
    for a, b in zip(body, body[1:]):
        if a == b and a in ("user", "assistant"):
            err("messages", f"two {a} messages in a row", "warning")
            break
    return out


def check_preference(entry: dict, line: int = 0) -> list[Problem]:
    """Problems of one preference example: {"prompt": [messages], "chosen": [...], "rejected": [...]}.

    The prompt ends with a user message; chosen and rejected are the assistant's two candidate replies.
    """
    def err(field: str, msg: str, severity: str = "error") -> None:
        out.append(Problem(line, field, severity, msg))

    out: list[Problem] = []
    for key in sorted(set(entry) - PREFERENCE_KEYS, key=str):
        err(_key(key), f"unknown key {short(key, 40)} in a preference entry (expected: prompt, chosen, rejected)",
            "warning")
    for key in ("prompt", "chosen", "rejected"):
        if key not in entry:
            err(key, f"missing {key!r}: a preference pair has a prompt, a chosen and a rejected reply")
    if out and any(p.severity == "error" for p in out):
        return out
    prompt_roles = _check_messages(entry["prompt"], "prompt", err)
    if prompt_roles and prompt_roles[-1] != "user":
        err("prompt", "the prompt must end with a user message")
    for key in ("chosen", "rejected"):
        roles = _check_messages(entry[key], key, err)
        if roles and any(r != "assistant" for r in roles):
            err(key, f"'{key}' must hold assistant messages only")
    if entry["chosen"] == entry["rejected"]:
        err("chosen", "chosen and rejected are identical: the pair teaches nothing", "warning")
    return out


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


class TemplateError(ValueError):
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


def reply_spans(messages: list[dict], tok) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of a whole conversation and the [start, end) token span of every assistant reply, in order.

    With `{% generation %}` in the template the spans are the template's own. Otherwise they come
    from rendering growing prefixes: an assistant message's reply starts after the generation
    prompt that precedes it and runs as far as the text is the same whether the conversation stops
    there or goes on (content, end-of-turn token, a newline the template writes after it; not an
    end-of-conversation token some templates append only after the last turn).

    Raises:
        TemplateError: the template rewrites earlier turns as later ones follow, drops a reply, or
            refuses the conversation; the message says which and what to do.
    """
    if not getattr(tok, "chat_template", None):
        raise TemplateError("the tokenizer has no chat template, so a conversation cannot be rendered: set "
                            "tok.chat_template (a Jinja template) or use a tokenizer that has one")
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    if has_generation_marks(tok):
        try:
            out = tok.apply_chat_template(plain, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        except Exception as e:
            raise TemplateError(f"the chat template refused this conversation ({type(e).__name__}: {e})") from e
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        spans, start = [], None
        for i, bit in enumerate([*mask, 0]):  # the k-th run of ones is the k-th assistant reply
            if bit and start is None:
                start = i
            elif not bit and start is not None:
                spans.append((start, i))
                start = None
        return ids, spans
    full = _render_text(tok, plain)
    char_spans = []
    for k, m in enumerate(plain):
        if m["role"] != "assistant":
            continue
        prompt = _render_text(tok, plain[:k], add_generation_prompt=True) if k else ""
        upto = _render_text(tok, plain[: k + 1])
        if k + 1 < len(plain):
            end = _common_prefix(upto, full)  # the reply as the whole conversation renders it
        else:  # the last reply: up to where another turn would start (no end-of-conversation trailer)
            end = len(upto)
            try:
                probe = _common_prefix(upto, _render_text(tok, [*plain, {"role": "user", "content": "ok"}]))
                if m["content"].strip() in upto[len(prompt):probe]:
                    end = probe
            except TemplateError:
                pass
        reply = full[len(prompt):end] if full.startswith(prompt) and upto.startswith(prompt) else None
        if reply is None or (m["content"].strip() and m["content"].strip() not in reply):
            raise TemplateError(
                f"the chat template does not render this conversation the same way as it grows (assistant message "
                f"{k} reads differently once later turns follow, or the text before it changes): it rewrites earlier "
                "turns, e.g. by dropping the reasoning of past replies, so the loss mask cannot be found from "
                "prefixes. Fix: put {% generation %}...{% endgeneration %} around the assistant content in "
                "tok.chat_template, or use a template that renders each turn once")
        char_spans.append((len(prompt), end))
    try:
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as e:
        raise TemplateError("finding the loss mask of a template without {% generation %} needs a fast tokenizer "
                            "(offsets): load it with AutoTokenizer.from_pretrained(..., use_fast=True)") from e
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    spans = []
    for a, b in char_spans:  # whole tokens only: one that straddles a boundary belongs to the turn around it
        inside = [i for i, (s, e) in enumerate(offsets) if a <= s and e <= b and e > s]
        if inside:
            spans.append((inside[0], inside[-1] + 1))
    if len(spans) != len(char_spans):
        raise TemplateError("an assistant reply renders to no token at all: check the conversation's content")
    return ids, spans


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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


MESSAGE_CHARS = 16  # what a template adds around each message (role markers, end of turn), in characters


def conversation_chars(messages: list[dict]) -> int:
    """The length of a conversation in characters (its contents), measured before any tokenising."""
    return sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))


def conversation_size(messages: list[dict]) -> int:
    """What rendering a conversation costs, in characters: its contents and a little per message."""
    return conversation_chars(messages) + MESSAGE_CHARS * len(messages)


def cut_budget(tok, max_length: int) -> int:
    """Characters that surely make more than `max_length` tokens (see `max_token_chars`), with a margin."""
    return (max_length + 16) * max_token_chars(tok) + 256


def cut_messages(messages: list[dict], budget: int) -> list[dict]:
    """The conversation cut after `budget` characters (see `conversation_size`; the later messages left out)."""
    out = []
    for m in messages:
        if budget <= 0:
            break
        out.append({**m, "content": m["content"][:budget]})
        budget -= len(m["content"]) + MESSAGE_CHARS
    return out


def max_token_chars(tok) -> int:
    """The most characters one token of `tok` can stand for (its longest vocabulary entry; cached).

    A text of n characters makes at least n / max_token_chars(tok) tokens, so a text longer than
    max_length * max_token_chars(tok) surely overflows max_length: it need not be tokenised whole.
    """
    return _cached(tok, "_kit_max_token_chars", lambda: max((len(t) for t in tok.get_vocab()), default=1) or 1)


def _cached(tok, attr: str, make):
    """A value derived from the tokenizer's vocabulary, kept on it until tokens are added."""
    size = len(tok)
    held = getattr(tok, attr, None)
    if held is None or held[0] != size:
        held = (size, make())
        try:
            setattr(tok, attr, held)
        except AttributeError:  # pragma: no cover - a tokenizer that refuses new attributes
            pass
    return held[1]


def special_tokens(tok) -> list[str]:
    """The tokenizer's special (control) tokens as text, longest first: its BOS / EOS / pad, the chat
    template's markers (`<|end|>`, `<|im_start|>`, `<|eot_id|>`, ...) and every other special added token."""
    found = {t for t in getattr(tok, "all_special_tokens", []) if isinstance(t, str) and t}
    for added in getattr(tok, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False) and getattr(added, "content", ""):
            found.add(added.content)
    return sorted(found, key=lambda t: (-len(t), t))


def find_special_token(text: str, tok) -> str | None:
    """The first special token of `tok` written inside `text`, or None. Such text would be read as a
    control token (an end of turn, a new role) instead of as the characters themselves."""
    def make():
        tokens = special_tokens(tok)
        return re.compile("|".join(map(re.escape, tokens))) if tokens else None

    pattern = _cached(tok, "_kit_special_re", make)
    m = pattern.search(text) if pattern is not None else None
    return m.group() if m else None


def mask_html(rendered: Rendered, tok) -> str:
    """HTML of the rendered tokens, those that carry loss on green, the others grey."""
    import html

    spans = []
    for t, m in zip(rendered.input_ids, rendered.loss_mask):
        text = html.escape(tok.decode([t])).replace("\n", "↵<br>")
        style = "background:#c8f7c5" if m else "background:#eee;color:#777"
        spans.append(f"<span style='{style};border:1px solid #fff;font-family:monospace'>{text}</span>")
    return "<div style='line-height:1.8'>" + "".join(spans) + "</div>"
