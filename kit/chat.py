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


def _check_messages(messages, field: str, err) -> list:
    """Per-message checks shared by chat and preference examples; returns the roles seen."""
    if not isinstance(messages, list) or not messages:
        err(field, f"'{field}' must be a non-empty list")
        return []
    roles = []
    for i, m in enumerate(messages):
        f = f"{field}[{i}]"
        if not isinstance(m, dict):
            err(f, f"message is not an object (got {type(m).__name__})")
            continue
        for key in ("role", "content"):
            if key not in m:
                err(f"{f}.{key}", f"message is missing {key!r}")
        for key in sorted(set(m) - MESSAGE_KEYS):
            err(f"{f}.{key}", f"unknown key {key!r} in a message (allowed: {', '.join(sorted(MESSAGE_KEYS))})")
        role, content = m.get("role"), m.get("content")
        if "role" in m and role not in ROLES:
            err(f"{f}.role", f"unknown role {role!r} (expected one of: {', '.join(ROLES)})")
        if "content" in m:
            if not isinstance(content, str):
                err(f"{f}.content", f"content must be a string (got {type(content).__name__})")
            elif not content.strip():
                err(f"{f}.content", "content is empty")
        if "weight" in m and m["weight"] not in (0, 1):
            err(f"{f}.weight", f"weight must be 0 or 1 (got {m['weight']!r})")
        if "weight" in m and role != "assistant":
            err(f"{f}.weight", "weight only applies to assistant messages", "warning")
        roles.append(role)
    return roles


def check_example(entry, line: int = 0) -> list[Problem]:
    """The format problems of one chat example (OpenAI's data checks plus role order), as Problems.

    A preference example (keys `prompt`, `chosen`, `rejected`) is checked by `check_preference`.
    """
    def err(field: str, msg: str, severity: str = "error") -> None:
        out.append(Problem(line, field, severity, msg))

    out: list[Problem] = []
    if not isinstance(entry, dict):
        err("", f"entry is not a JSON object (got {type(entry).__name__})")
        return out
    if "messages" not in entry and {"prompt", "chosen", "rejected"} & set(entry):
        return check_preference(entry, line)
    for key in sorted(set(entry) - ENTRY_KEYS):
        err(key, f"unknown key {key!r} in the entry (expected only 'messages')", "warning")
    if "messages" not in entry:
        err("messages", "missing 'messages'")
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
    for key in sorted(set(entry) - PREFERENCE_KEYS):
        err(key, f"unknown key {key!r} in a preference entry (expected: prompt, chosen, rejected)", "warning")
    for key in ("prompt", "chosen", "rejected"):
        if key not in entry:
            err(key, f"missing {key!r}")
    if out and any(p.severity == "error" for p in out):
        return out
    prompt_roles = _check_messages(entry["prompt"], "prompt", err)
    if prompt_roles and prompt_roles[-1] != "user":
        err("prompt", "the prompt must end with a user message")
    for key in ("chosen", "rejected"):
        roles = _check_messages(entry[key], key, err)
        if roles and set(roles) != {"assistant"}:
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

    @property
    def n_loss_tokens(self) -> int:
        return sum(self.loss_mask)


def render(conversation: dict | list, tok, max_length: int | None = None) -> Rendered:
    """Token ids and loss mask of a conversation under the tokenizer's chat template.

    The mask is the template's `{% generation %}` span of each assistant reply (its text and
    its end-of-turn token); replies with `weight: 0` are left out of it.

    Example:
        >>> r = render({"messages": [{"role": "user", "content": "Hi"},
        ...                          {"role": "assistant", "content": "Hello."}]}, tok)  # doctest: +SKIP
        >>> tok.decode([i for i, m in zip(r.input_ids, r.loss_mask) if m])                 # doctest: +SKIP
        'Hello.<|end|>'
    """
    messages = conversation["messages"] if isinstance(conversation, dict) else conversation
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    out = tok.apply_chat_template(plain, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
    run, template_mask = -1, list(mask)
    for i, bit in enumerate(template_mask):  # the k-th run of ones is the k-th assistant reply
        if bit and (i == 0 or not template_mask[i - 1]):
            run += 1
        if bit and run < len(weights) and weights[run] == 0:
            mask[i] = 0
    n_assistant = sum(mask)
    truncated = 0
    if max_length is not None and len(ids) > max_length:
        truncated = len(ids) - max_length
        ids, mask = ids[:max_length], mask[:max_length]
    return Rendered(ids, mask, n_assistant, truncated, n_assistant - sum(mask))


def mask_html(rendered: Rendered, tok) -> str:
    """HTML of the rendered tokens, those that carry loss on green, the others grey."""
    import html

    spans = []
    for t, m in zip(rendered.input_ids, rendered.loss_mask):
        text = html.escape(tok.decode([t])).replace("\n", "↵<br>")
        style = "background:#c8f7c5" if m else "background:#eee;color:#777"
        spans.append(f"<span style='{style};border:1px solid #fff;font-family:monospace'>{text}</span>")
    return "<div style='line-height:1.8'>" + "".join(spans) + "</div>"
