"""Generic evaluation of a chat model on held-out conversations: loss on the replies, and replies compared.

For every evaluation conversation the last assistant message is the reference and everything
before it the prompt. Two kinds of figures:
  * `eval_loss` / `eval_perplexity`: mean next-token loss on the assistant tokens only (the same
    tokens that carry loss in training), over the whole split;
  * `exact_match`, `token_f1`, `rouge_l`: the model's greedy reply against the reference
    (local `evaluate` metrics in `kit.engine.metrics`).

Example:
    >>> out = evaluate_chat(model, tok, eval_examples, seq_len=256)     # doctest: +SKIP
    >>> sorted(k for k in out if not isinstance(out[k], list))          # doctest: +SKIP
    ['eval_loss', 'eval_perplexity', 'exact_match', 'rouge_l', 'token_f1']
"""

from __future__ import annotations

import math

from .chat import TEMPLATE_KEYS
from .losses import mean_loss
from .packing import PackedChat


def split_prompt(example: dict) -> tuple[list[dict], str] | None:
    """(messages before the last assistant reply, that reply's text); None when there is no reply."""
    messages = example.get("messages") or []  # a text row has no reply to generate
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        return None
    return [{k: m[k] for k in TEMPLATE_KEYS if k in m} for m in messages[:last]], messages[last].get("content") or ""


def evaluate_chat(model, tok, examples: list[dict] | None, seq_len: int = 256, *, generate: bool = True,
                  max_new_tokens: int | None = None, batch_size: int = 16) -> dict:
    """Loss on the assistant tokens of `examples`, and (with `generate`) greedy replies scored against them.

    Returns {} for no examples. Lists `prompts`, `references`, `replies` and `exact_rows` (1 where a reply
    matches its reference) come with the generated figures.
    """
    if not examples:
        return {}
    rows = PackedChat.from_examples(examples, tok, seq_len)
    loss = mean_loss(model, rows, batch_size=batch_size) if len(rows) else float("nan")
    out: dict = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}
    if not generate:
        return out
    from .generate import chat_replies
    from .metrics import ExactMatch, RougeL, TokenF1, normalize_answer

    pairs = [p for p in map(split_prompt, examples) if p is not None]
    if not pairs:
        return out
    prompts, refs = [p for p, _ in pairs], [r for _, r in pairs]
    if max_new_tokens is None:  # room for the longest reference, and a little more
        longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs)
        max_new_tokens = min(256, longest + 16)
    replies = [text for text, _ in chat_replies(model, tok, prompts, max_new_tokens=max_new_tokens)]
    out.update(ExactMatch().compute(predictions=replies, references=refs))
    out["exact_rows"] = [int(normalize_answer(r) == normalize_answer(ref)) for r, ref in zip(replies, refs)]
    out.update(TokenF1().compute(predictions=replies, references=refs))
    out.update(RougeL().compute(predictions=replies, references=refs))
    out.update(prompts=[p[-1]["content"] for p in prompts], references=refs, replies=replies)
    return out
