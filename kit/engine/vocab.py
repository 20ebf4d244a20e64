"""What a conversation costs before it is tokenised, and what a tokenizer's vocabulary says: the
longest token (a text surely too long can be cut in characters first) and its special tokens (text
that would be read as a control token).

Example:
    >>> cut_messages([{"role": "user", "content": "abcdef"}], budget=3)
    [{'role': 'user', 'content': 'abc'}]
"""

from __future__ import annotations

import re

BOS = "<|bos|>"  # the kit's own tokenizer starts every document with it (`kit.engine.tokenizer`)


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
        text = m.get("content") or ""
        out.append({**m, "content": text[:budget]} if "content" in m else dict(m))
        budget -= len(text) + MESSAGE_CHARS
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


def _special_re(tok):
    tokens = special_tokens(tok)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


def find_special_token(text: str, tok) -> str | None:
    """The first special token of `tok` written inside `text`, or None. Such text would be read as a
    control token (an end of turn, a new role) instead of as the characters themselves."""
    pattern = _cached(tok, "_kit_special_re", lambda: _special_re(tok))
    m = pattern.search(text) if pattern is not None else None
    return m.group() if m else None


def document_start(tok) -> list[int]:
    """The token ids a plain document starts with for this tokenizer (cached on it).

    The kit's tokenizer: its `<|bos|>` (every pre-training document began with it). A hub tokenizer: what it
    puts in front of a text itself (Llama 3's `<|begin_of_text|>`, Llama 2's `<s>`), often nothing (SmolLM2,
    Qwen): a BOS token that its own model never saw at the start of a text would only confuse it.
    """
    cached = getattr(tok, "_kit_document_start", None)
    if cached is not None:
        return list(cached)
    if tok.bos_token == BOS:
        start = [tok.bos_token_id]
    else:
        plain = tok("a", add_special_tokens=False)["input_ids"]
        full = tok("a")["input_ids"]
        start = full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
    try:
        tok._kit_document_start = tuple(start)
    except AttributeError:  # pragma: no cover - a tokenizer that refuses new attributes
        pass
    return start
