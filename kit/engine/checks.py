"""The chat format's checks: one example (or preference pair) against OpenAI's fine-tuning format,
as a list of Problems with their line and field.

The format:
    {"messages": [{"role": "system" | "user" | "assistant" | "tool", "content": "...", "weight": 0 | 1}, ...]}
`weight` is optional (assistant messages only): 0 keeps a reply in the context but out of the loss.
An assistant message may call tools (`tool_calls`, its content then optional); a `tool` message
answers one (`tool_call_id`). Preference pairs (for DPO) use {"prompt": [messages], "chosen":
[messages], "rejected": [messages]}; a language-modelling row is {"text": "..."}.

Example:
    >>> conv = {"messages": [{"role": "user", "content": "Capital of Peru?"},
    ...                      {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    >>> check_example(conv)
    []
    >>> check_example({"messages": [{"role": "robot", "content": "hi"}]})[0].message
    "unknown role 'robot' (expected one of: system, user, assistant, tool)"
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

ROLES = ("system", "user", "assistant", "tool")
ENTRY_KEYS = {"messages"}
TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")  # what a chat template is given
MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id"}
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
            if key not in m and not (key == "content" and m.get("tool_calls")):
                err(f"{f}.{key}", f"message is missing {key!r}" + (": add \"role\": \"user\" (or \"assistant\", "
                                                                   "\"system\")" if key == "role" else
                                                                   ": add the message's text as \"content\""))
        for key in sorted(set(m) - MESSAGE_KEYS, key=str):
            err(f"{f}.{_key(key)}", f"unknown key {short(key, 40)} in a message "
                                    f"(allowed: {', '.join(sorted(MESSAGE_KEYS))}): remove or rename it")
        role, content = m.get("role"), m.get("content")
        if "role" in m and not (isinstance(role, str) and role in ROLES):
            err(f"{f}.role", f"unknown role {short(role, 40)} (expected one of: {', '.join(ROLES)})")
        calls = m.get("tool_calls")
        if "tool_calls" in m and (role != "assistant" or not isinstance(calls, list) or not calls
                                  or not all(isinstance(c, dict) for c in calls)):
            err(f"{f}.tool_calls", "tool_calls must be a non-empty list of objects ({\"type\": \"function\", "
                                   "\"function\": {\"name\": ..., \"arguments\": {...}}}), in an assistant message")
        if calls and role == "assistant" and not content:  # a reply that only calls a tool has no text
            pass
        elif "content" in m:
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
    if "messages" not in entry and "text" in entry:  # a plain text (language modelling): every token is learned
        for key in sorted(set(entry) - {"text"}, key=str):
            err(_key(key), f"unknown key {short(key, 40)} in a text row (expected only 'text')", "warning")
        if not isinstance(entry["text"], str) or not entry["text"].strip():
            err("text", f"text must be a non-empty string (got {short(entry['text'], 40)})")
        return out
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
