"""The losses, and the one evaluation loop.

An objective is a function `objective(model, batch) -> (sum of unit losses, n units)`: `causal_lm_loss`
(next-token cross-entropy on every labelled token: pre-training and SFT alike), `KindLoss` (the same, keeping
the chat and replay tokens' losses apart), or DPO's pair loss (`kit.engine.dpo`). The output layer runs only
where a label is (`split_head`). `eval_mode` and `mean_loss` are what every evaluation loop uses.

Example:
    >>> import torch
    >>> from kit.engine.models import PRESETS, create
    >>> model = create(PRESETS["smoke"], vocab_size=50)
    >>> batch = {"input_ids": torch.randint(0, 50, (2, 8)), "labels": torch.randint(0, 50, (2, 8))}
    >>> loss, n = causal_lm_loss(model, batch)
    >>> int(n)
    16
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

IGNORE = -100  # label value that carries no loss


_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (decoder, head) or None, checked once


def _sharded(model) -> bool:
    """True for a model wrapped or sharded for several processes (FSDP): its parts must run through the wrapper."""
    name = type(model).__name__
    param = next(model.parameters(), None)
    return "FSDP" in name or "FullySharded" in name or type(param).__name__ == "DTensor"


def split_head(model):
    """(decoder, output layer) of a causal LM whose logits are `head(decoder(...).last_hidden_state)`, or None.

    Checked once per model on a short input (a model that scales or caps its logits, or a model wrapped for
    data-parallel training, gets None). With the split, the loss computes logits only where a label is: in
    SFT most tokens are prompt, and a vocabulary of 50,000 makes the output layer a large share of the work.
    """
    if model in _HEADS:
        return _HEADS[model]
    found = None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the wrapped model
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel) or _sharded(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") and not wrapped else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is not None and decoder is not base and head is not None:
        device = next(model.parameters()).device
        ids = torch.arange(1, 9, device=device)[None] % max(2, head.weight.shape[0])  # (1, 8)
        try:
            with eval_mode(model), autocast(device):  # eval mode: dropout would make the two passes differ
                whole = model(input_ids=ids).logits.float()
                parts = head(decoder(input_ids=ids).last_hidden_state).float()
            if parts.shape == whole.shape and torch.allclose(parts, whole, rtol=1e-3, atol=1e-3):
                found = (decoder, head)
        except (TypeError, AttributeError, RuntimeError):  # a model whose parts do not run on their own
            found = None
    _HEADS[model] = found
    return found


def labelled_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the labelled positions (K, V), float32; where those are: a (B, T) bool mask).

    The output layer runs only on the K positions that carry a label (`split_head`); otherwise the whole
    forward pass gives every position's logits and they are selected after.
    """
    keep = batch["labels"] != IGNORE  # (B, T)
    args = dict(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"))
    parts = split_head(model)
    if parts is None:
        return model(**args).logits[keep].float(), keep
    decoder, head = parts
    hidden = decoder(**args).last_hidden_state  # (B, T, C)
    return head(hidden[keep]).float(), keep  # (K, V)


def token_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token next-token cross-entropy (B*T,), 0 where IGNORE; the labels (B*T,)) of a batch, unweighted."""
    logits, keep = labelled_logits(model, batch)  # (K, V), (B, T)
    labels = batch["labels"].flatten()  # (B*T,), already aligned with the logits
    losses = torch.zeros(labels.shape, dtype=logits.dtype, device=logits.device)
    losses[keep.flatten()] = F.cross_entropy(logits, labels[keep.flatten()], reduction="none")
    return losses, labels


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over every label that is not IGNORE.

    Also the SFT objective: packed chat rows carry IGNORE outside the assistant replies, their own
    `position_ids`, and a (B, 1, T, T) block-diagonal `attention_mask`.
    """
    if "weights" in batch:  # per-token weights: the per-token losses are needed
        return weighted_sum(*token_losses(model, batch), batch)
    logits, keep = labelled_logits(model, batch)
    return F.cross_entropy(logits, batch["labels"][keep], reduction="sum"), keep.sum()


def weighted_sum(losses: torch.Tensor, labels: torch.Tensor, batch: dict[str, torch.Tensor]):
    """(the per-token losses (B*T,) summed, each times its `batch["weights"]` where the batch has weights (e.g.
    the first token of each reply counted more); the number of labelled tokens)."""
    if "weights" in batch:
        losses = losses * batch["weights"].flatten()
    return losses.sum(), (labels != IGNORE).sum()


class KindLoss:
    """The SFT objective (next-token loss on the labelled tokens) that also keeps the chat tokens' and the
    replay tokens' mean losses apart: `train()` adds them to every `on_step` event as `chat_loss` and
    `replay_loss`. Only the chat loss can be compared with the validation loss (chat tokens only)."""

    def __init__(self):
        self.sums = self.counts = None

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        losses, labels = token_losses(model, batch)  # (B*T,) each
        if torch.is_grad_enabled() and "kind" in batch:  # training steps only, not validation passes
            kind = batch["kind"].flatten()
            kinds = torch.stack([kind != 1, kind == 1]) & (labels != IGNORE)  # (2, B*T): chat (0, 2), replay (1)
            sums, counts = (kinds * losses.detach()).sum(1), kinds.sum(1)  # (2,): no host sync here
            self.sums = sums if self.sums is None else self.sums + sums
            self.counts = counts if self.counts is None else self.counts + counts
        return weighted_sum(losses, labels, batch)

    def log_metrics(self) -> dict[str, float | None]:
        """Mean chat and replay token losses since the last call (None where a kind had no token), then reset."""
        if self.sums is None:
            return {}
        sums, counts = self.sums.tolist(), self.counts.tolist()
        self.sums = self.counts = None
        return {name: s / n if n else None for name, s, n in zip(("chat_loss", "replay_loss"), sums, counts)}


# ----------------------------------------------------------------------------- evaluation
@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Evaluation mode without gradients for the block, then the model's mode as it was before.

    Example:
        >>> with eval_mode(model):               # doctest: +SKIP
        ...     logits = model(input_ids=ids).logits
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def batch_losses(model, rows, n_rows: int | None = None, batch_size: int = 16,
                 objective: Callable = None) -> tuple[list[float], list[int]]:
    """(summed loss, loss units) of each batch of the first `n_rows` rows (all: None), in order, in evaluation
    mode: the one evaluation loop. `rows`: `__len__`, `__getitem__`, `collate` (TokenRows, PackedChat, ...)."""
    objective = objective or causal_lm_loss
    device = next(model.parameters()).device
    n = len(rows) if n_rows is None else min(n_rows, len(rows))
    sums, counts = [], []
    with eval_mode(model):
        for i in range(0, n, batch_size):
            batch = {k: v.to(device) for k, v in rows.collate([rows[j] for j in range(i, min(n, i + batch_size))])
                     .items()}
            with autocast(device):
                loss, k = objective(model, batch)
            sums.append(loss.float())
            counts.append(torch.as_tensor(k))
    if not sums:
        return [], []
    return torch.stack(sums).tolist(), [int(c) for c in torch.stack(counts).tolist()]  # one host sync


def mean_loss(model, rows, n_rows: int | None = None, batch_size: int = 16, objective: Callable = None) -> float:
    """Mean loss per loss unit (token) over the first `n_rows` rows (all: None); 0.0 where no row has a label."""
    sums, counts = batch_losses(model, rows, n_rows, batch_size, objective)
    return sum(sums) / max(1, sum(counts))
