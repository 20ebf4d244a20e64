"""Notebook 03's exercises: the LoRA forward pass, and gradient accumulation normalised by tokens.

The LoRA check builds peft's own `lora.Linear` layer (what `kit.add_lora` puts in the model) and
compares its output with the learner's formula on the same weights. The accumulation check
compares the learner's gradients with one backward pass over the whole batch, as `kit.train` does.

Example:
    >>> from kit.exercises import check_lora_forward
    >>> def lora_forward(x, W, A, B, alpha, r):
    ...     return x @ W.T + (alpha / r) * (x @ A.T) @ B.T
    >>> bool(check_lora_forward(lora_forward))          # doctest: +ELLIPSIS
    lora_forward: 4 of 4 cases passed
    ...
    True
"""

from __future__ import annotations

import torch

from ..engine.losses import IGNORE, causal_lm_loss
from .checking import Case, CheckResult, close, first_error, run_check
from .nb01 import TinyLM

# ----------------------------------------------------------------------------- 1: the LoRA forward
LORA_HINT = ("the frozen layer's output x @ W.T plus the low-rank update scaled by alpha / r: "
             "x @ W.T + (alpha / r) * (x @ A.T) @ B.T  (A is (r, in), B is (out, r))")


def peft_lora_layer(n_in: int, n_out: int, r: int, alpha: float, seed: int):
    """peft's LoRA Linear around a seeded nn.Linear, with B not zero (as after some training)."""
    from peft import LoraConfig, inject_adapter_in_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        holder = torch.nn.Module()
        holder.proj = torch.nn.Linear(n_in, n_out, bias=False)
        cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], lora_dropout=0.0, init_lora_weights=False)
        return inject_adapter_in_model(cfg, holder).proj


def check_lora_forward(fn) -> CheckResult:
    """`fn(x (..., in), W (out, in), A (r, in), B (out, r), alpha, r) -> (..., out)`, as peft's layer computes."""
    def case(name, shape, n_out, r, alpha, seed):
        def run(f):
            layer = peft_lora_layer(shape[-1], n_out, r, alpha, seed)
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                want = layer(x)
                W, A, B = (layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight)
                got = f(x.clone(), W.clone(), A.clone(), B.clone(), alpha, r)
            return close(got, want, atol=1e-5, what="output")
        return Case(name, run)

    cases = [case("r=4, alpha=8 (scale 2), a batch of 3 vectors of 6", (3, 6), 5, 4, 8, 0),
             case("r=8, alpha=4 (scale 0.5: alpha alone would be 8 times too big)", (2, 10), 4, 8, 4, 1),
             case("r=1, alpha=1, one vector", (1, 7), 3, 1, 1, 2),
             case("r=2, alpha=16, rows of tokens (batch, time, features)", (2, 3, 6), 6, 2, 16, 3)]
    return run_check("lora_forward", fn, cases, LORA_HINT)


# ----------------------------------------------------------------------------- 2: gradient accumulation
ACCUMULATION_HINT = ("first count the loss tokens of ALL micro-batches (labels != -100); then for each micro-batch "
                     "loss_sum, _ = causal_lm_loss(model, mb) and (loss_sum / total_tokens).backward() - not the "
                     "mean of each micro-batch divided by their number")


def _micro(seed: int, B: int, T: int, n_loss: int, V: int = 13) -> dict[str, torch.Tensor]:
    """A micro-batch whose rows carry `n_loss` loss tokens each (the rest IGNORE, like a prompt)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, : T - n_loss] = IGNORE
    return {"input_ids": ids[:, :-1], "labels": labels}


def reference_gradients(micro_batches: list[dict]) -> list[torch.Tensor]:
    """The gradient of (sum of every token loss) / (all loss tokens): one backward over everything."""
    model = TinyLM(seed=3)
    total = sum(causal_lm_loss(model, mb)[0] for mb in micro_batches)
    n = sum(int((mb["labels"] != IGNORE).sum()) for mb in micro_batches)
    (total / n).backward()
    return [p.grad for p in model.parameters()]


def check_accumulate_gradients(fn) -> CheckResult:
    """`fn(model, micro_batches: list[dict]) -> None`: backward on each so the gradients are the token mean."""
    def case(name, micro_batches):
        def run(f):
            model = TinyLM(seed=3)
            f(model, [{k: v.clone() for k, v in mb.items()} for mb in micro_batches])
            if any(p.grad is None for p in model.parameters()):
                return "some parameters have no gradient: call .backward() on each micro-batch's loss"
            want = reference_gradients(micro_batches)
            return first_error(*(close(p.grad, w, atol=1e-6, what=f"gradient of {name_}")
                                 for (name_, p), w in zip(model.named_parameters(), want)))
        return Case(name, run)

    cases = [case("one micro-batch", [_micro(0, 2, 8, 8)]),
             case("two micro-batches of equal size", [_micro(1, 2, 8, 8), _micro(2, 2, 8, 8)]),
             case("two micro-batches with 1 and 7 loss tokens a row (a short and a long reply)",
                  [_micro(3, 2, 8, 1), _micro(4, 2, 8, 7)]),
             case("four micro-batches of different sizes", [_micro(5, 1, 8, 2), _micro(6, 3, 8, 8),
                                                          _micro(7, 2, 8, 4), _micro(8, 1, 8, 6)])]
    return run_check("accumulate_gradients", fn, cases, ACCUMULATION_HINT)
