"""Solutions to the exercises at the end of notebooks 01-05, one function per exercise.

Each function has the name and the signature of the notebook's stub; paste its body into the
notebook, or check it directly:

    >>> import kit.exercises
    >>> from solutions.exercises import lora_forward
    >>> bool(kit.exercises.check_lora_forward(lora_forward))     # doctest: +SKIP
    lora_forward: 4 of 4 cases passed
    ...
    True

`tests/test_exercises.py` checks every solution (it must pass), every notebook stub (it must
fail, showing its hint) and a common wrong answer per exercise (it must fail).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kit.engine.losses import causal_lm_loss
from kit.world.safety import looks_like_refusal

IGNORE = -100


# ----------------------------------------------------------------------------- notebook 01
def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting input_ids[:, t + 1] from logits[:, t]."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1))


def train_step(model, batch: dict, optimizer) -> float:
    """One optimizer step on the mean loss per loss token; returns that loss."""
    optimizer.zero_grad()
    loss_sum, n_tokens = causal_lm_loss(model, batch)
    loss = loss_sum / n_tokens
    loss.backward()
    optimizer.step()
    return loss.item()


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """The probabilities to sample the next token from, after temperature and top-k."""
    if temperature == 0:  # greedy: everything on the most likely token
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    scaled = logits / temperature  # on the logits, before the softmax
    if top_k:
        kth = scaled.topk(top_k, dim=-1).values[..., -1:]  # the k-th largest logit of each row
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return scaled.softmax(dim=-1)


# ----------------------------------------------------------------------------- notebook 02
def is_usable(example) -> bool:
    """True when the example has a non-empty list of well-formed messages, one of them from the assistant."""
    if not isinstance(example, dict) or not isinstance(example.get("messages"), list) or not example["messages"]:
        return False
    for m in example["messages"]:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            return False
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return False
    return any(m["role"] == "assistant" for m in example["messages"])


def loss_mask(ids: list[int], assistant_id: int, end_id: int) -> list[int]:
    """1 on each reply's tokens and its <|end|>; 0 on everything else (the marker and its newline included)."""
    mask = [0] * len(ids)
    inside = False
    for i, t in enumerate(ids):
        if t == assistant_id:
            start = i + 2  # skip the marker and the newline after it
            inside = True
            continue
        if inside and i >= start:
            mask[i] = 1
            if t == end_id:
                inside = False
    return mask


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the targets whose mask is 1."""
    V = logits.shape[-1]
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1), reduction="none")
    keep = loss_mask[:, 1:].reshape(-1).float()  # the mask of the TARGET token
    return (per_token * keep).sum() / keep.sum()


# ----------------------------------------------------------------------------- notebook 03
def lora_forward(x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float,
                 r: int) -> torch.Tensor:
    """W x + (alpha / r) B A x, for rows x (..., in)."""
    return x @ W.T + (alpha / r) * (x @ A.T) @ B.T


def accumulate_gradients(model, micro_batches: list[dict]) -> None:
    """Backward on each micro-batch so that the gradients are those of the mean over ALL loss tokens."""
    total_tokens = sum(int((mb["labels"] != IGNORE).sum()) for mb in micro_batches)
    for mb in micro_batches:
        loss_sum, _ = causal_lm_loss(model, mb)
        (loss_sum / total_tokens).backward()


# ----------------------------------------------------------------------------- notebook 04
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, chosen_tokens: torch.Tensor, beta: float,
             sft_weight: float) -> torch.Tensor:
    """Per-pair DPO loss plus the SFT anchor (the chosen reply's mean negative log-probability per token)."""
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin) - sft_weight * policy_chosen / chosen_tokens


def refusal_rates(replies: list[str], harmful: list[bool]) -> dict[str, float]:
    """Refusals among the harmful prompts, and among the safe ones (over-refusals)."""
    refused = [looks_like_refusal(r) for r in replies]
    on_harmful = [x for x, h in zip(refused, harmful) if h]
    on_safe = [x for x, h in zip(refused, harmful) if not h]
    return {"refusal_rate": sum(on_harmful) / len(on_harmful) if on_harmful else 0.0,
            "over_refusal_rate": sum(on_safe) / len(on_safe) if on_safe else 0.0}


# ----------------------------------------------------------------------------- notebook 05
def should_stop(step: int, max_steps: int, loss: float, first_loss: float, after: float = 0.3,
                ratio: float = 0.97) -> bool:
    """Stop a run whose loss is not finite, or that has not improved enough after `after` of its steps."""
    if not math.isfinite(loss):
        return True
    return step >= after * max_steps and not loss < ratio * first_loss


def paired_bootstrap(a: list[float], b: list[float], n_resamples: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(b - a), resampling the questions (the same ones for both runs)."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_resamples, len(d)))  # each row: one resample of the questions
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
