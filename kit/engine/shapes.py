"""The data shapes the kit reads (TRL's dataset types and the common community ones), and their
conversion to the kit's own forms: a chat example {"messages": [...]}, a preference pair
{"prompt": [...], "chosen": [...], "rejected": [...]}, or a plain text {"text": "..."}.

    shape                      one row                                              becomes
    messages                   {"messages": [{"role", "content"}, ...]}             itself
    prompt-completion          {"prompt": [...] | "...", "completion": [...] | "..."}  messages: prompt + completion
    preference                 {"prompt", "chosen", "rejected"}                     itself (text -> one message)
    implicit preference        {"chosen": [...], "rejected": [...]}                 prompt: their shared start
    text                       {"text": "..."}                                      itself (every token learned)
    ShareGPT                   {"conversations": [{"from": "human", "value"}, ...]}  messages (human -> user,
                                                                                    gpt -> assistant)
    Alpaca                     {"instruction", "input" (optional), "output"}       messages: user, assistant

A problem is reported with the field names of the row as written (`conversations[1].value`, not
`messages[1].content`).

Example:
    >>> convert({"instruction": "Name a colour.", "output": "Blue."})[0]["messages"][1]
    {'role': 'assistant', 'content': 'Blue.'}
    >>> detect({"conversations": [{"from": "human", "value": "Hi"}]})
    'ShareGPT'
"""

from __future__ import annotations

import re

from .chat import Problem, check_example, short

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system", "tool": "tool",
                  "function_response": "tool", "observation": "tool"}
TRAINS = {"messages": "chat", "prompt-completion": "chat", "ShareGPT": "chat", "Alpaca": "chat", "text": "text",
          "preference": "preference", "implicit preference": "preference"}


def detect(entry) -> str | None:
    """The shape of one row (a name of `TRAINS`), or None when it has none of the shapes' keys."""
    if not isinstance(entry, dict):
        return None
    keys = set(entry)
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "ShareGPT"
    if "instruction" in keys or "output" in keys:
        return "Alpaca"
    if keys & {"chosen", "rejected"}:
        return "preference" if "prompt" in keys else "implicit preference"
    if "completion" in keys:
        return "prompt-completion"
    if "prompt" in keys:  # a prompt alone: say what it lacks as a preference pair (the older, stricter reading)
        return "preference"
    if "text" in keys:
        return "text"
    return None


def _as_messages(value, role: str):
    """A string stands for one message of `role`; a list is kept as it is."""
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def convert(entry, line: int = 0) -> tuple[dict, list[Problem], str | None]:
    """The row in the kit's form, its problems (format checks included, named as the row writes them),
    and its shape. A row with an error converts to whatever could be read; do not train on it."""
    shape = detect(entry)
    problems: list[Problem] = []

    def err(field: str, msg: str, severity: str = "error") -> None:
        problems.append(Problem(line, field, severity, msg))

    rename = None
    out = entry
    if shape is None and isinstance(entry, dict):
        keys = ", ".join(sorted(map(str, entry))[:6])
        err("messages", f"missing 'messages', and no other shape the kit reads ({'keys: ' + keys if keys else 'no key'}"
                        "): write {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}, or prompt / completion, "
                        "prompt / chosen / rejected, text, ShareGPT's conversations, Alpaca's instruction / output")
        return entry, problems, None
    if shape == "prompt-completion":
        for key in ("prompt", "completion"):
            if key not in entry:
                err(key, f"missing {key!r}: a prompt-completion row is {{\"prompt\": [...], \"completion\": [...]}}")
        extra = sorted(set(entry) - {"prompt", "completion"}, key=str)
        for key in extra:
            err(str(key), f"unknown key {short(key, 40)} in a prompt-completion row (expected: prompt, completion)",
                "warning")
        prompt, completion = _as_messages(entry.get("prompt"), "user"), _as_messages(entry.get("completion"),
                                                                                     "assistant")
        if not problems or all(p.severity == "warning" for p in problems):
            if isinstance(prompt, list) and isinstance(completion, list):
                out = {"messages": prompt + completion}
                n = len(prompt)
                rename = (lambda f: re.sub(r"^messages\[(\d+)\]", lambda m: f"prompt[{m[1]}]" if int(m[1]) < n
                                           else f"completion[{int(m[1]) - n}]", f))
            else:
                bad = "prompt" if not isinstance(prompt, list) else "completion"
                err(bad, f"{bad!r} must be a list of messages or a string (got {short(entry.get(bad), 40)})")
    elif shape == "ShareGPT":
        out, rename = _from_sharegpt(entry, err)
    elif shape == "Alpaca":
        out, rename = _from_alpaca(entry, err)
    elif shape in ("preference", "implicit preference") and isinstance(entry, dict):
        out = dict(entry)
        if shape == "implicit preference":
            out, rename = _split_implicit(entry, err)
        else:
            for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
                if key in out:
                    out[key] = _as_messages(out[key], role)
    elif shape == "text":
        for key in sorted(set(entry) - {"text"}, key=str):
            err(str(key), f"unknown key {short(key, 40)} in a text row (expected only 'text')", "warning")
        if not isinstance(entry["text"], str) or not entry["text"].strip():
            err("text", f"text must be a non-empty string (got {short(entry['text'], 40)})")
        return {"text": entry["text"]}, problems, shape
    if not any(p.severity == "error" for p in problems):
        for p in check_example(out, line):
            problems.append(Problem(p.line, rename(p.field) if rename else p.field, p.severity,
                                    _rename_words(p.message, shape)))
    return out, problems, shape


def _rename_words(message: str, shape: str | None) -> str:
    if shape == "ShareGPT":
        return message.replace("'messages'", "'conversations'").replace("unknown role", "unknown 'from'")
    return message


def _from_sharegpt(entry: dict, err):
    turns = entry["conversations"]
    for key in sorted(set(entry) - {"conversations", "system"}, key=str):
        err(str(key), f"unknown key {short(key, 40)} in a ShareGPT row (expected: conversations, system)", "warning")
    if not isinstance(turns, list) or not turns:
        err("conversations", "'conversations' must be a non-empty list of {\"from\": ..., \"value\": ...}")
        return {"messages": []}, None
    messages = []
    if isinstance(entry.get("system"), str) and entry["system"].strip():
        messages.append({"role": "system", "content": entry["system"]})
    shift = len(messages)
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            err(f"conversations[{i}]", "a ShareGPT turn is {\"from\": \"human\" | \"gpt\" | \"system\", \"value\": "
                                       f"\"...\"}} (got {short(t, 40)})")
            continue
        who = t["from"]
        role = SHAREGPT_ROLES.get(who.lower()) if isinstance(who, str) else None
        if role is None:
            err(f"conversations[{i}].from", f"unknown speaker {short(who, 40)} (expected one of: "
                                            f"{', '.join(sorted(SHAREGPT_ROLES))})")
            continue
        messages.append({"role": role, "content": t["value"]})

    def rename(field: str) -> str:
        field = re.sub(r"^messages\[(\d+)\]", lambda m: f"conversations[{int(m[1]) - shift}]", field)
        return field.replace(".content", ".value").replace(".role", ".from")
    return {"messages": messages}, rename


def _from_alpaca(entry: dict, err):
    for key in ("instruction", "output"):
        if key not in entry:
            err(key, f"missing {key!r}: an Alpaca row is {{\"instruction\": ..., \"input\": ... (optional), "
                     "\"output\": ...}")
    for key in sorted(set(entry) - {"instruction", "input", "output", "system"}, key=str):
        err(str(key), f"unknown key {short(key, 40)} in an Alpaca row (expected: instruction, input, output, "
                      "system)", "warning")
    for key in ("instruction", "input", "output", "system"):
        if key in entry and not isinstance(entry[key], str):
            err(key, f"{key!r} must be a string (got {type(entry[key]).__name__})")
    instruction, extra = entry.get("instruction"), entry.get("input")
    user = instruction if not (isinstance(extra, str) and extra.strip()) else f"{instruction}\n\n{extra}"
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": entry.get("output")}]
    if isinstance(entry.get("system"), str) and entry["system"].strip():
        messages.insert(0, {"role": "system", "content": entry["system"]})
    first = len(messages) - 2

    def rename(field: str) -> str:
        return re.sub(r"^messages\[(\d+)\]\.content", lambda m: ["system", "instruction", "output"][
            int(m[1]) + (1 - first)], field)
    return {"messages": messages}, rename


def _split_implicit(entry: dict, err):
    """{"chosen": whole conversation, "rejected": whole conversation} -> prompt (their shared start) and the
    two different endings."""
    for key in ("chosen", "rejected"):
        if key not in entry:
            err(key, f"missing {key!r}: a preference pair has a chosen and a rejected conversation")
        elif not isinstance(entry[key], list) or not entry[key]:
            err(key, f"{key!r} must be a non-empty list of messages (an implicit-prompt pair holds the whole "
                     f"conversation; got {short(entry[key], 40)})")
    for key in sorted(set(entry) - {"chosen", "rejected"}, key=str):
        err(str(key), f"unknown key {short(key, 40)} in a preference entry (expected: prompt, chosen, rejected)",
            "warning")
    if not (isinstance(entry.get("chosen"), list) and isinstance(entry.get("rejected"), list)):
        return dict(entry), None
    chosen, rejected = entry["chosen"], entry["rejected"]
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and not (isinstance(chosen[n - 1], dict) and chosen[n - 1].get("role") == "user"):
        n -= 1  # the prompt ends with the last user message they share
    if n == 0:
        err("chosen", "chosen and rejected share no user message at their start: an implicit-prompt pair is two "
                      "whole conversations that differ only in the last assistant reply")
        return dict(entry), None

    def rename(field: str) -> str:  # prompt[i] is chosen[i]; chosen[j] / rejected[j] are chosen[n + j] / ...
        return re.sub(r"^(prompt|chosen|rejected)\[(\d+)\]", lambda m: f"chosen[{m[2]}]" if m[1] == "prompt"
                      else f"{m[1]}[{int(m[2]) + n}]", field)
    return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}, rename


def to_kit_form(rows: list[dict], what: str = "examples") -> list[dict]:
    """Rows of any shape `detect` knows, in the kit's form (rows already in it are kept as they are).

    Raises:
        ValueError: a row cannot be read; every problem is listed with its row number (from 1).
    """
    out, errors = [], []
    for i, row in enumerate(rows, start=1):
        if isinstance(row, dict) and ("messages" in row or "text" in row and len(row) == 1
                                      or {"prompt", "chosen", "rejected"} <= set(row)):
            out.append(row)
            continue
        converted, problems, _ = convert(row, row.get("_line", i) if isinstance(row, dict) else i)
        errors += [p for p in problems if p.severity == "error"]
        out.append(converted)
    if errors:
        listed = "\n".join(f"  row {p.line}: {p.field or '-'}: {p.message}" for p in errors[:10])
        raise ValueError(f"{len(errors)} problem(s) in the {what}:\n{listed}" +
                         (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""))
    return out
