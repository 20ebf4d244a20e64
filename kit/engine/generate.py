"""Sampling helpers: batched completion, next-token probabilities, and chat replies.

Example:
    >>> from kit.lessons.artifacts import base_model
    >>> base = base_model("smoke")                              # doctest: +SKIP
    >>> complete(base.model, base.tokenizer, ["The capital of France is"])  # doctest: +SKIP
    [' Paris.']
"""

from __future__ import annotations

import torch

from .sanitize import mark_cut as shown
from .tokenizer import document_start, stop_token_ids


def _generate(model, tok, texts: list[str], batch_size: int, **settings) -> list[list[int]]:
    """The new token ids generated after each text, in the order given: batches of similar length (less padding),
    left-padded, each reusing its keys and values step to step (the KV cache); stops at an end token."""
    from .losses import autocast, eval_mode

    device = next(model.parameters()).device
    stops = stop_token_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    out: list[list[int]] = [[] for _ in texts]
    with eval_mode(model), autocast(device):  # CUDA: bf16, as in training; CPU: float32
        for b in range(0, len(order), batch_size):
            rows = [ids[i] for i in order[b: b + batch_size]]
            T = max(map(len, rows))
            x = torch.tensor([[pad] * (T - len(r)) + r for r in rows], device=device)  # (B, T), left-padded
            mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows], device=device)
            gen = model.generate(input_ids=x, attention_mask=mask, eos_token_id=stops, pad_token_id=pad, **settings)
            for i, row in zip(order[b: b + batch_size], gen[:, T:].tolist()):  # (B, new tokens)
                out[i] = row
    return out


def complete(model, tok, prompts: list[str], *, max_new_tokens: int = 12, temperature: float = 0.0,
             top_k: int = 0, seed: int | None = None, batch_size: int = 64, mark_cut: bool = False) -> list[str]:
    """Continue each prompt; greedy when `temperature == 0`, else sampled (optionally top-k).

    Generation stops at the end-of-document or end-of-turn token, which is not returned. `mark_cut`: a
    continuation that stopped at `max_new_tokens` instead loses its last, perhaps half-written, word and ends in
    "…" (for showing; measurements take the plain text).
    """
    if seed is not None:
        torch.manual_seed(seed)
    sampling = temperature > 0
    start = "".join(tok.convert_ids_to_tokens(document_start(tok)))
    rows = _generate(model, tok, [start + p for p in prompts], batch_size,
                     max_new_tokens=max_new_tokens, do_sample=sampling,
                     temperature=temperature if sampling else None,
                     top_k=(top_k or None) if sampling else None, top_p=None)
    texts = tok.batch_decode(rows, skip_special_tokens=True)
    if not mark_cut:
        return texts
    stops = set(stop_token_ids(tok))
    return [shown(t, ended=bool(stops & set(r))) for t, r in zip(texts, rows)]


@torch.no_grad()
def next_token_probs(model, tok, prompt: str, k: int = 10) -> list[tuple[str, float]]:
    """The `k` most likely next tokens after `prompt`, with their probabilities."""
    device = next(model.parameters()).device
    ids = torch.tensor([document_start(tok) + tok(prompt, add_special_tokens=False)["input_ids"]], device=device)
    logits = model(input_ids=ids).logits[0, -1].float()  # (V,)
    probs = torch.softmax(logits, dim=-1)
    top = torch.topk(probs, k)
    return [(tok.decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]


def chat_replies(model, tok, conversations: list[list[dict]], *, max_new_tokens: int = 48,
                 batch_size: int = 64, mark_cut: bool = False) -> list[tuple[str, bool]]:
    """Greedy assistant replies to each conversation: (text, ended) where `ended` means the model
    closed its turn with an end token within `max_new_tokens`; `mark_cut`: a text that did not end is shown
    cut after its last whole word, with "…" (`sanitize.mark_cut`)."""
    stops = stop_token_ids(tok)
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    out: list[tuple[str, bool]] = []
    for ids in _generate(model, tok, texts, batch_size, max_new_tokens=max_new_tokens, do_sample=False):
        ended = any(t in stops for t in ids)
        if ended:
            ids = ids[: min(ids.index(t) for t in stops if t in ids)]
        text = tok.decode(ids, skip_special_tokens=True).strip()
        out.append((shown(text, ended) if mark_cut else text, ended))
    return out


def answers(model, tok, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy replies to single-turn user prompts (the texts only)."""
    return [a for a, _ in chat_replies(model, tok, [[{"role": "user", "content": p}] for p in prompts],
                                       max_new_tokens=max_new_tokens)]


def chat(model, tok, prompt: str, system: str | None = None, max_new_tokens: int = 48) -> str:
    """One reply to one user prompt, for reading: a reply cut by `max_new_tokens` ends in "…"."""
    conv = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return chat_replies(model, tok, [conv], max_new_tokens=max_new_tokens, mark_cut=True)[0][0]
