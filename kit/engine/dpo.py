"""Direct preference optimisation (DPO) as one more objective of the kit's loop.

A preference pair is a prompt with two replies: `chosen` (wanted) and `rejected`. DPO raises the
log-probability of the chosen reply relative to the rejected one, measured against a frozen
reference model so that the policy does not drift far from it:

    reward(y)  = beta * (log pi(y | x) - log ref(y | x))          (the "implicit reward")
    loss       = -log sigmoid(reward(chosen) - reward(rejected))   (per pair)
               + alpha * (-log pi(chosen | x) / tokens of chosen)  (an SFT anchor, `dpo_sft_weight`)

The anchor matters for a small model: DPO alone can widen the margin by pushing BOTH replies
down, until the policy writes garbage that is merely "less rejected" (measured here: with
alpha = 0, refusals fell from 0.94 to 0 and replies degenerated). Keeping the chosen reply
likely prevents that.

The policy is the model with a LoRA adapter; the reference is the SAME model with the adapter
switched off, so no second copy of the weights is held. Reference log-probs are computed once,
before training, and stored with the pairs. Each log step reports the reward margin and the
reward accuracy (share of pairs whose chosen reply has the higher reward) in the `on_step` event.

Example:
    >>> import torch
    >>> loss, rc, rr = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]),
    ...                         torch.tensor([-1.5]), torch.tensor([-1.5]), beta=0.1)
    >>> round(float(loss), 4)       # -log sigmoid(0.1 * ((-1 + 1.5) - (-2 + 1.5)))
    0.6444
"""

from __future__ import annotations

import copy
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from .chat import render
from .config import DPOConfig, TrainConfig, problems_dpo, raise_problems
from .losses import IGNORE, eval_mode, labelled_logits
from .models import add_lora
from .packing import labels_for
from .shapes import to_kit_form
from .train import History, train


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and the implicit rewards of the chosen and the rejected replies, all (B,)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward, rejected_reward


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed log-probability of the labelled tokens (the reply) of every sequence: (N,)."""
    logits, keep = labelled_logits(model, batch)  # (K, V) at the reply tokens only, (N, T)
    token_logps = logits.log_softmax(-1).gather(-1, batch["labels"][keep][:, None]).squeeze(-1)  # (K,)
    rows = keep.nonzero()[:, 0]  # (K,): the sequence of each labelled token
    return torch.zeros(keep.shape[0], dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows,
                                                                                                   token_logps)


class PairRows:
    """Preference pairs rendered with the chat template: reply tokens are labels, the prompt is not.

    `compute_reference(model)` stores the reference log-probs of every pair (LoRA adapter disabled).
    """

    def __init__(self, pairs: list[dict], tok, max_len: int):
        self.pad_id, self.items = tok.pad_token_id, []
        for p in pairs:
            sides = []
            for key in ("chosen", "rejected"):
                r = render(p["prompt"] + p[key], tok, max_length=max_len)
                sides.append((r.input_ids, labels_for(r)))
            self.items.append(sides)
        self.ref = torch.zeros(len(self.items), 2)  # (n pairs, chosen/rejected)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {"sides": self.items[i], "ref": self.ref[i]}

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """(2B, T) rows: the B chosen replies first, then the B rejected ones; right-padded."""
        seqs = [it["sides"][0] for it in items] + [it["sides"][1] for it in items]
        T = max(len(ids) for ids, _ in seqs)
        return {"input_ids": torch.tensor([ids + [self.pad_id] * (T - len(ids)) for ids, _ in seqs]),
                "labels": torch.tensor([lab + [IGNORE] * (T - len(lab)) for _, lab in seqs]),
                "attention_mask": torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids, _ in seqs]),
                "ref": torch.stack([it["ref"] for it in items])}  # (B, 2)

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        """Loss units of a batch for the loop's normalisation: pairs, not tokens."""
        return batch["ref"].shape[0]

    def compute_reference(self, model, batch_size: int = 32) -> None:
        """Reference log-probs of every pair: the model with its LoRA adapter disabled (if it has one)."""
        device = next(model.parameters()).device
        off = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
        with eval_mode(model), off:
            for i in range(0, len(self), batch_size):
                idx = list(range(i, min(len(self), i + batch_size)))
                batch = {k: v.to(device) for k, v in self.collate([self[j] for j in idx]).items()}
                logps = sequence_logps(model, batch).float().cpu()  # (2b,)
                self.ref[idx] = torch.stack([logps[: len(idx)], logps[len(idx):]], dim=1)


class DPOObjective:
    """`objective(model, batch) -> (summed pair losses, n pairs)` for `train()`, with reward statistics."""

    def __init__(self, beta: float, sft_weight: float = 0.0):
        self.beta, self.sft_weight = beta, sft_weight
        self.stats = torch.zeros(4)  # sums of: margin, correct, chosen reward, rejected reward
        self.n = 0

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logps = sequence_logps(model, batch)  # (2B,)
        B = batch["ref"].shape[0]
        losses, rc, rr = dpo_loss(logps[:B], logps[B:], batch["ref"][:, 0], batch["ref"][:, 1], self.beta)
        if self.sft_weight:
            n_chosen = (batch["labels"][:B] != IGNORE).sum(-1).clamp(min=1)  # (B,)
            losses = losses - self.sft_weight * logps[:B] / n_chosen
        if torch.is_grad_enabled():  # training steps only, not validation passes
            margin = (rc - rr).detach()
            self.stats += torch.stack([margin.sum(), (margin > 0).float().sum(), rc.detach().sum(),
                                       rr.detach().sum()]).cpu()
            self.n += B
        return losses.sum(), B

    def log_metrics(self) -> dict[str, float]:
        """Means since the last call (train() adds them to every `on_step` event), then reset."""
        m = (self.stats / max(1, self.n)).tolist()
        self.stats.zero_()
        self.n = 0
        return {"reward_margin": m[0], "reward_accuracy": m[1], "chosen_reward": m[2], "rejected_reward": m[3]}


def dpo(model, tok, pairs: list[dict], cfg: DPOConfig | None = None, *, max_len: int = 128, device: str = "auto",
        callbacks=(), stop=None) -> tuple[object, History]:
    """Preference-tune `model` on `pairs` (with or without a `prompt`: `kit.engine.shapes`) with a LoRA adapter;
    the adapter-free model is the reference.

    `model` itself is not changed: the adapter goes on a copy. Returns that peft model (merge it with
    `kit.engine.models.merge_lora` for a plain one) and the History,
    whose `metrics` list holds the reward margin and accuracy of every log step.
    """
    if not pairs:
        raise ValueError("dpo() got no preference pairs: collect some first (a rating round, or safety data)")
    cfg = cfg or DPOConfig()
    raise_problems(problems_dpo(cfg))
    pairs = to_kit_form(pairs, "preference pairs")  # implicit-prompt pairs, text replies: the kit's form
    torch.manual_seed(cfg.seed)
    model = add_lora(copy.deepcopy(model), cfg.lora_r, 2 * cfg.lora_r, layers=cfg.lora_layers)  # a copy: the given
    # model stays as it is
    rows = PairRows(pairs, tok, max_len)
    rows.compute_reference(model)
    batch_size = min(cfg.batch_size, len(rows))  # a small feedback round may have fewer pairs than a batch
    steps = max(1, round(cfg.epochs * len(rows) / batch_size))
    tcfg = TrainConfig(max_steps=steps, batch_size=batch_size, seq_len=max_len, lr=cfg.lr,
                       warmup_steps=max(1, steps // 10), weight_decay=0.0, eval_every=0, log_every=max(1, steps // 10),
                       seed=cfg.seed, device=device)
    objective = DPOObjective(cfg.beta, cfg.sft_weight)
    hist = train(model, rows, tcfg, objective=objective, callbacks=callbacks, stop=stop)
    return model, hist
