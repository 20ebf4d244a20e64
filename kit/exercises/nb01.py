"""Notebook 01's exercises: the next-token loss, one optimizer step, and the sampling distribution.

Each check compares the learner's function with the kit's own code on small, seeded inputs:
`kit.engine.losses.causal_lm_loss` for the loss and the step, transformers' temperature and top-k
warpers (what `model.generate` applies) for sampling.

Example:
    >>> from kit.exercises import check_next_token_loss
    >>> def next_token_loss(logits, input_ids):
    ...     raise NotImplementedError("shift by one, then F.cross_entropy")
    >>> bool(check_next_token_loss(next_token_loss))      # doctest: +ELLIPSIS
    next_token_loss: not implemented yet (shift by one, then F.cross_entropy)
      hint: position t predicts token t+1: ...
    False
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..engine.losses import IGNORE, causal_lm_loss
from .checking import Case, CheckResult, close, first_error, run_check


class FixedLogits(torch.nn.Module):
    """A stand-in "model" that returns given logits (B, T, V): the kit's loss runs on it unchanged."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return SimpleNamespace(logits=self.logits[:, : input_ids.shape[1]])


class TinyLM(torch.nn.Module):
    """The smallest trainable "language model": an embedding, a tanh and an output layer."""

    def __init__(self, vocab: int = 13, dim: int = 8, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded weights, without touching the notebook's random state
            torch.manual_seed(seed)
            self.emb = torch.nn.Embedding(vocab, dim)
            self.head = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return SimpleNamespace(logits=self.head(torch.tanh(self.emb(input_ids))))  # (B, T, V)


def random_tokens(seed: int, B: int, T: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded logits (B, T, V) and token ids (B, T)."""
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(B, T, V, generator=g), torch.randint(0, V, (B, T), generator=g)


def kit_next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """What the kit computes: `causal_lm_loss` on labels shifted by one, divided by its token count."""
    batch = {"input_ids": input_ids[:, :-1], "labels": input_ids[:, 1:]}
    total, n = causal_lm_loss(FixedLogits(logits[:, :-1]), batch)
    return total / n


# ----------------------------------------------------------------------------- 1: the loss
NEXT_TOKEN_HINT = ("position t predicts token t+1: compare logits[:, :-1] with input_ids[:, 1:], e.g. "
                   "F.cross_entropy(logits[:, :-1].reshape(-1, V), input_ids[:, 1:].reshape(-1)) (the mean)")


def check_next_token_loss(fn) -> CheckResult:
    """`fn(logits (B, T, V), input_ids (B, T)) -> scalar`: mean cross-entropy of each next token."""
    def case(seed, B, T, V):
        def run(f):
            logits, ids = random_tokens(seed, B, T, V)
            return close(f(logits.clone(), ids.clone()), kit_next_token_loss(logits, ids), what="loss")
        return Case(f"{B} row(s) of {T} tokens, vocabulary {V}", run)

    return run_check("next_token_loss", fn, [case(0, 1, 6, 11), case(1, 3, 5, 7), case(2, 2, 2, 5),
                                             case(3, 4, 9, 50)], NEXT_TOKEN_HINT)


# ----------------------------------------------------------------------------- 2: one optimizer step
TRAIN_STEP_HINT = ("clear the old gradients (optimizer.zero_grad()), loss_sum, n = causal_lm_loss(model, batch), "
                   "(loss_sum / n).backward(), optimizer.step(); return the loss as a float")


def _batch(seed: int, B: int = 3, T: int = 6, V: int = 13, ignore: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, :ignore] = IGNORE  # e.g. a prompt that carries no loss
    return {"input_ids": ids[:, :-1], "labels": labels}


def reference_step(model, batch, optimizer) -> float:
    optimizer.zero_grad()
    total, n = causal_lm_loss(model, batch)
    loss = total / n
    loss.backward()
    optimizer.step()
    return loss.item()


def _compare_steps(fn, batches: list[dict], lr: float = 0.5) -> str | None:
    theirs, ours = TinyLM(seed=7), TinyLM(seed=7)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=lr)  # plain SGD: the step shows the gradient's scale
    opt_ours = torch.optim.SGD(ours.parameters(), lr=lr)
    for k, batch in enumerate(batches, 1):
        before = [p.detach().clone() for p in theirs.parameters()]
        got = fn(theirs, {key: v.clone() for key, v in batch.items()}, opt_theirs)
        want = reference_step(ours, batch, opt_ours)
        if all(torch.equal(p, q) for p, q in zip(theirs.parameters(), before)):
            return f"step {k}: the weights did not change (was optimizer.step() called, after backward()?)"
        wrong = first_error(close(got, want, what=f"step {k}: the returned loss"),
                            *(close(p, q, atol=1e-6, what=f"step {k}: weights {name} after the step")
                              for (name, p), q in zip(theirs.named_parameters(), ours.parameters())))
        if wrong:
            return wrong
    return None


def check_train_step(fn) -> CheckResult:
    """`fn(model, batch, optimizer) -> float`: one step on the mean next-token loss; returns that loss."""
    cases = [Case("one step on a batch of 3 rows", lambda f: _compare_steps(f, [_batch(0)])),
             Case("three steps in a row (old gradients must not pile up)",
                  lambda f: _compare_steps(f, [_batch(1), _batch(2), _batch(3)])),
             Case("labels with IGNORE (-100) on a prompt: the mean is over the loss tokens only",
                  lambda f: _compare_steps(f, [_batch(4, ignore=3), _batch(5, ignore=2)]))]
    return run_check("train_step", fn, cases, TRAIN_STEP_HINT)


# ----------------------------------------------------------------------------- 3: sampling
SAMPLING_HINT = ("temperature 0: all probability on the argmax; otherwise divide the LOGITS by the temperature, "
                 "set all but the top_k logits to -inf (top_k=0 keeps all), then softmax over the last dimension")


def kit_sampling_probs(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """The distribution `kit.complete` samples from: transformers' temperature then top-k warpers, softmax."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper

    scores = logits.reshape(-1, logits.shape[-1]).clone()
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    return scores.softmax(-1).reshape(logits.shape)


def check_sampling_probs(fn) -> CheckResult:
    """`fn(logits (..., V), temperature, top_k) -> probabilities (..., V)` to sample the next token from."""
    def case(name, seed, shape, temperature, top_k):
        def run(f):
            logits = 3 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
            got = f(logits.clone(), temperature, top_k)
            return close(got, kit_sampling_probs(logits, temperature, top_k), atol=1e-6, what="probabilities")
        return Case(name, run)

    cases = [case("temperature 1, no top-k: the softmax", 0, (8,), 1.0, 0),
             case("temperature 0.5 sharpens", 1, (8,), 0.5, 0),
             case("temperature 2 flattens", 2, (8,), 2.0, 0),
             case("top_k=3 keeps the 3 most likely tokens", 3, (8,), 1.0, 3),
             case("temperature 0.7 and top_k=2 on a batch of 2 rows", 4, (2, 6), 0.7, 2),
             case("temperature 0 is greedy: all on the most likely token", 5, (8,), 0.0, 0)]
    return run_check("sampling_probs", fn, cases, SAMPLING_HINT)
