"""Notebook 04's exercises: the DPO loss with its SFT anchor, and the refusal and over-refusal rates.

The DPO check runs the kit's own objective (`kit.engine.dpo.DPOObjective`, built on `dpo_loss`)
pair by pair on the same log-probabilities the learner gets. The rates check uses the kit's
refusal matcher and metrics (`kit.world.safety.looks_like_refusal`, `RefusalRate`, `OverRefusalRate`).

Example:
    >>> from kit.exercises import check_refusal_rates
    >>> def refusal_rates(replies, harmful):
    ...     return {"refusal_rate": 0.0, "over_refusal_rate": 0.0}
    >>> bool(check_refusal_rates(refusal_rates))        # doctest: +ELLIPSIS
    refusal_rates: ...
    False
"""

from __future__ import annotations

import torch

from ..engine.losses import IGNORE
from .checking import Case, CheckResult, close, first_error, run_check
from .nb01 import FixedLogits

# ----------------------------------------------------------------------------- 1: DPO with an SFT anchor
DPO_HINT = ("per pair: margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)); "
            "loss = -F.logsigmoid(margin) - sft_weight * policy_chosen / chosen_tokens (the anchor is the chosen "
            "reply's mean log-probability per token); return the (B,) tensor of losses")


def pair_batch(seed: int, lengths: list[tuple[int, int]], T: int = 10, V: int = 11) -> tuple[dict, torch.Tensor]:
    """A DPO batch as `PairRows.collate` makes it (chosen rows first, then rejected) and its logits (2B, T, V).

    `lengths[i]` = (reply tokens of the chosen, of the rejected reply) of pair i; the rest of a row is prompt.
    """
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    ids = torch.randint(0, V, (2 * B, T), generator=g)
    labels = torch.full((2 * B, T), IGNORE)
    for i, (n_chosen, n_rejected) in enumerate(lengths):
        for row, n in ((i, n_chosen), (B + i, n_rejected)):
            labels[row, T - 1 - n: T - 1] = ids[row, T - n:]  # the reply, shifted: position t predicts t+1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
             "ref": -torch.rand(B, 2, generator=g) * 8 - 4}  # reference log-probs of chosen and rejected (B, 2)
    return batch, 2 * torch.randn(2 * B, T, V, generator=g)


@torch.no_grad()
def kit_pair_losses(batch: dict, logits: torch.Tensor, beta: float, sft_weight: float) -> torch.Tensor:
    """Each pair's loss as the kit's `DPOObjective(beta, sft_weight)` computes it (one pair at a time)."""
    from ..engine.dpo import DPOObjective

    B = batch["ref"].shape[0]
    out = []
    for i in range(B):
        rows = [i, B + i]
        one = {k: v[rows] if k != "ref" else v[i: i + 1] for k, v in batch.items()}
        loss, _ = DPOObjective(beta, sft_weight)(FixedLogits(logits[rows]), one)
        out.append(loss)
    return torch.stack(out)


def check_dpo_loss(fn) -> CheckResult:
    """`fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_tokens, beta, sft_weight) -> (B,)`."""
    def case(name, seed, lengths, beta, sft_weight):
        def run(f):
            from ..engine.dpo import sequence_logps

            batch, logits = pair_batch(seed, lengths)
            B = len(lengths)
            with torch.no_grad():
                logps = sequence_logps(FixedLogits(logits), batch)  # (2B,) summed reply log-probs
            chosen_tokens = (batch["labels"][:B] != IGNORE).sum(-1)
            got = f(logps[:B].clone(), logps[B:].clone(), batch["ref"][:, 0].clone(), batch["ref"][:, 1].clone(),
                    chosen_tokens.clone(), beta, sft_weight)
            want = kit_pair_losses(batch, logits, beta, sft_weight)
            if isinstance(got, torch.Tensor) and got.numel() == 1 and B > 1:
                return (f"expected one loss per pair, shape ({B},), got a single number {got.item():.6g} "
                        "(return the losses, not their mean or sum)")
            return first_error(close(got, want, atol=1e-5, what="per-pair losses"))
        return Case(name, run)

    cases = [case("beta 0.1, no anchor (sft_weight 0): plain DPO, 3 pairs", 0, [(3, 3), (4, 2), (2, 5)], 0.1, 0.0),
             case("beta 0.5, no anchor", 1, [(3, 3), (5, 1)], 0.5, 0.0),
             case("beta 0.1, anchor 0.5, chosen replies of 2 and 6 tokens (the anchor is per token)",
                  2, [(2, 4), (6, 3)], 0.1, 0.5),
             case("beta 0.2, anchor 1.0, one pair", 3, [(4, 4)], 0.2, 1.0)]
    return run_check("dpo_loss", fn, cases, DPO_HINT)


# ----------------------------------------------------------------------------- 2: refusal and over-refusal
RATES_HINT = ("refused = [looks_like_refusal(r) for r in replies]; refusal_rate = share refused among the HARMFUL "
              "prompts only, over_refusal_rate = share refused among the SAFE prompts only (0.0 when there are none)")

REPLIES = {
    "harmful, refused": ("I can't help with that.", True),
    "harmful, answered": ("Here is a rough idea of how people do it.", True),
    "harmful, refused in capitals with a curly apostrophe": ("I CAN’T HELP WITH THAT.", True),
    "harmful, refused politely": ("I'm sorry, but I won't explain that.", True),
    "safe, answered": ("You can stop a Python process with kill.", False),
    "safe, refused anyway": ("I cannot help with killing anything.", False),
    "safe, answered with 'can'": ("You can take a good photo of Lima at sunset.", False),
    "safe, answered briefly": ("The capital of Peru is Lima.", False),
}


def kit_rates(replies: list[str], harmful: list[bool]) -> dict[str, float]:
    """The kit's figures: the refusal matcher, then RefusalRate on harmful and OverRefusalRate on safe prompts."""
    from ..world.safety import looks_like_refusal
    from ..world.safety_metrics import OverRefusalRate, RefusalRate

    refused = [int(looks_like_refusal(r)) for r in replies]
    return {"refusal_rate": RefusalRate().compute(refused=[x for x, h in zip(refused, harmful) if h])["refusal_rate"],
            "over_refusal_rate": OverRefusalRate().compute(
                refused=[x for x, h in zip(refused, harmful) if not h])["over_refusal_rate"]}


def check_refusal_rates(fn) -> CheckResult:
    """`fn(replies: list[str], harmful: list[bool]) -> {"refusal_rate": float, "over_refusal_rate": float}`."""
    def case(name, keys):
        def run(f):
            replies, harmful = [REPLIES[k][0] for k in keys], [REPLIES[k][1] for k in keys]
            got = f(list(replies), list(harmful))
            if not isinstance(got, dict) or not {"refusal_rate", "over_refusal_rate"} <= set(got):
                return f"expected a dict with 'refusal_rate' and 'over_refusal_rate', got {got!r}"
            want = kit_rates(replies, harmful)
            return first_error(*(close(got[k], want[k], atol=1e-9, what=k) for k in want))
        return Case(name, run)

    everything = list(REPLIES)
    cases = [case("4 harmful and 4 safe prompts", everything),
             case("3 harmful, 1 safe: each rate has its own denominator",
                  ["harmful, refused", "harmful, answered", "harmful, refused politely", "safe, refused anyway"]),
             case("harmful prompts only: the over-refusal rate is 0.0", ["harmful, refused", "harmful, answered"]),
             case("a refusal in capitals with a curly apostrophe still counts",
                  ["harmful, refused in capitals with a curly apostrophe", "safe, answered"])]
    return run_check("refusal_rates", fn, cases, RATES_HINT)
