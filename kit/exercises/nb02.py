"""Notebook 02's exercises: a validation rule, the loss mask of a rendered chat, and the SFT loss.

The references are the kit's own: `kit.engine.chat.check_example` (is there any error?),
`kit.engine.chat.render` (token ids and loss mask under the kit's chat template) and
`causal_lm_loss` on the labels `kit.engine.packing.labels_for` makes from a rendered conversation.

Example:
    >>> from kit.exercises import check_loss_mask
    >>> def loss_mask(ids, assistant_id, end_id):
    ...     raise NotImplementedError("1 from the reply's first token to <|end|>")
    >>> bool(check_loss_mask(loss_mask))                # doctest: +ELLIPSIS
    loss_mask: not implemented yet (1 from the reply's first token to <|end|>)
    ...
    False
"""

from __future__ import annotations

import copy
import functools

import torch

from ..engine.chat import check_example, render
from ..engine.losses import IGNORE, causal_lm_loss
from .checking import Case, CheckResult, close, run_check, same
from .nb01 import FixedLogits

# ----------------------------------------------------------------------------- 1: a validation rule
USABLE_HINT = ("return False unless: 'messages' is a non-empty list; every message is a dict whose 'role' is "
               "system, user or assistant and whose 'content' is a string with some non-space text; "
               "and at least one message is from the assistant")


def _msgs(*pairs) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


USABLE_CASES = [
    ("a question and its answer", _msgs(("user", "Capital of Peru?"), ("assistant", "Lima."))),
    ("a system message first", _msgs(("system", "Be brief."), ("user", "Capital of Chile?"),
                                     ("assistant", "Santiago."))),
    ("an unknown role 'robot'", _msgs(("user", "Hi"), ("robot", "Beep."))),
    ("an empty answer ''", _msgs(("user", "Capital of Peru?"), ("assistant", ""))),
    ("an answer of spaces only", _msgs(("user", "Capital of Peru?"), ("assistant", "   "))),
    ("no assistant message at all", _msgs(("system", "Be brief."), ("user", "Capital of Peru?"))),
    ("content that is a number, not text", _msgs(("user", "2 + 2?"), ("assistant", 4))),
    ("no 'messages' key", {"conversation": [{"role": "user", "content": "Hi"}]}),
    ("'messages' is an empty list", {"messages": []}),
    ("a message without 'content'", {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant"}]}),
    ("two user messages in a row (a warning: still usable)",
     _msgs(("user", "Hi."), ("user", "Capital of Peru?"), ("assistant", "Lima."))),
]


def kit_is_usable(example) -> bool:
    """The kit's verdict: `check_example` finds no error (warnings alone do not make an example unusable)."""
    return not any(p.severity == "error" for p in check_example(example))


def check_is_usable(fn) -> CheckResult:
    """`fn(example: dict) -> bool`: True when the chat example has no error that makes it unusable."""
    def case(name, example):
        return Case(name, lambda f: same(f(copy.deepcopy(example)), kit_is_usable(example), what="usable"))

    return run_check("is_usable", fn, [case(n, ex) for n, ex in USABLE_CASES], USABLE_HINT)


# ----------------------------------------------------------------------------- 2: the loss mask
LOSS_MASK_HINT = ("the template writes '<|assistant|>', a newline, the reply, '<|end|>', a newline: after each "
                  "assistant_id skip the newline, then mark 1 up to and including the next end_id; 0 elsewhere")

CONVERSATIONS = [
    ("one question, one answer", [("user", "What is the capital of Peru?"),
                                  ("assistant", "The capital of Peru is Lima.")]),
    ("a system message, then a question", [("system", "You answer in one sentence."),
                                           ("user", "Which language is spoken in Brazil?"),
                                           ("assistant", "The main language of Brazil is Portuguese.")]),
    ("two turns: both replies carry loss, the user turn between them does not",
     [("user", "What is the capital of Chile?"), ("assistant", "Santiago."),
      ("user", "And the currency of Chile?"), ("assistant", "The currency of Chile is the Chilean peso.")]),
]


@functools.lru_cache(maxsize=1)
def small_tokenizer():
    """A tokenizer with the kit's chat template, trained in a moment on the conversations above."""
    from ..engine.tokenizer import train_tokenizer

    texts = [c for _, conv in CONVERSATIONS for _, c in conv] * 20
    return train_tokenizer(texts, vocab_size=300)


def rendered(conv) -> tuple[list[int], list[int]]:
    r = render(_msgs(*conv), small_tokenizer())
    return r.input_ids, r.loss_mask


def check_loss_mask(fn) -> CheckResult:
    """`fn(ids: list[int], assistant_id: int, end_id: int) -> list[int]` (1 = this token carries loss)."""
    tok = small_tokenizer()
    a_id, end_id = tok.convert_tokens_to_ids("<|assistant|>"), tok.convert_tokens_to_ids("<|end|>")

    def case(name, conv):
        def run(f):
            ids, mask = rendered(conv)
            got = f(list(ids), a_id, end_id)
            got = got.tolist() if isinstance(got, torch.Tensor) else list(got)
            wrong = same(got, mask, what="mask")
            if wrong and len(got) == len(mask):
                extra = [tok.decode([t]) for t, g, m in zip(ids, got, mask) if g and not m]
                missing = [tok.decode([t]) for t, g, m in zip(ids, got, mask) if m and not g]
                wrong += f"\n       marked but should not be: {extra}; not marked but should be: {missing}"
            return wrong
        return Case(name, run)

    return run_check("loss_mask", fn, [case(n, c) for n, c in CONVERSATIONS], LOSS_MASK_HINT)


# ----------------------------------------------------------------------------- 3: the SFT loss
SFT_LOSS_HINT = ("as in notebook 01, position t predicts token t+1, but only targets whose mask is 1 count: "
                 "take the per-token losses (reduction='none'), keep those where loss_mask[:, 1:] == 1, "
                 "and average over those tokens only (not over every position)")


def kit_sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """The kit's SFT loss: `causal_lm_loss` with the labels `labels_for` builds (IGNORE off the mask)."""
    labels = torch.where(loss_mask[:, 1:] == 1, input_ids[:, 1:], torch.full_like(input_ids[:, 1:], IGNORE))
    total, n = causal_lm_loss(FixedLogits(logits[:, :-1]), {"input_ids": input_ids[:, :-1], "labels": labels})
    return total / n


def _padded(convs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of rendered conversations, right-padded with the pad id and mask 0: (B, T) ids and mask."""
    rows = [rendered(c) for c in convs]
    T, pad = max(len(ids) for ids, _ in rows), small_tokenizer().pad_token_id
    return (torch.tensor([ids + [pad] * (T - len(ids)) for ids, _ in rows]),
            torch.tensor([m + [0] * (T - len(m)) for _, m in rows]))


def check_sft_loss(fn) -> CheckResult:
    """`fn(logits (B, T, V), input_ids (B, T), loss_mask (B, T)) -> scalar`: mean loss on the reply tokens."""
    V = len(small_tokenizer())

    def case(name, convs, seed):
        def run(f):
            ids, mask = _padded(convs)
            logits = 2 * torch.randn(*ids.shape, V, generator=torch.Generator().manual_seed(seed))
            got = f(logits.clone(), ids.clone(), mask.clone())
            return close(got, kit_sft_loss(logits, ids, mask), what="loss")
        return Case(name, run)

    convs = [c for _, c in CONVERSATIONS]
    cases = [case("one conversation", convs[:1], 0), case("a multi-turn conversation", convs[2:], 1),
             case("three conversations, padded to one length (padding carries no loss)", convs, 2)]
    return run_check("sft_loss", fn, cases, SFT_LOSS_HINT)
