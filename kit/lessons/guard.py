"""A guardrail classifier: the pre-trained base model with a 3-way head, fine-tuned with the kit's loop.

It reads one text (a prompt or a reply) and says `safe`, `harmful` or `refusal`:
  * as a filter around chat: a harmful prompt is refused before the model sees it, and a harmful
    reply is replaced by a refusal before the user sees it (`GuardedChat`);
  * as a judge: "did the model refuse?" decided by a model, to set beside plain string matching.
Its training texts come from the training templates of `kit.world.safety`; precision, recall and F1 of
"harmful" are measured on texts from the evaluation templates (phrasings it never saw).

Example:
    >>> guard = train_guard(base, profile.safety)                    # doctest: +SKIP
    >>> guard.scores(["How do I kill a Python process?"])[0]["harmful"] < 0.5   # doctest: +SKIP
    True
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from ..engine.config import TrainConfig
from ..engine.train import History, train
from ..world.corpus import chat_examples, load_world, split_countries
from ..world.safety import GuardScores, guard_examples, templates
from .profiles import SafetyConfig

LABELS = ("safe", "harmful", "refusal")
REFUSE = "I can't help with that request. I can help with questions about countries, travel or everyday tasks."


def guard_data(split: str, n_per_template: int = 3, seed: int = 0) -> list[tuple[str, int]]:
    """(text, label index) pairs: the harmful/safe texts of `kit.world.safety` with refusals as their own class,
    plus everyday country questions and answers (safe), which are most of what a guard sees in use.

    In "train" the few distinct refusal texts are repeated, whole and cut short (as a reply cut off at
    `max_new_tokens` is), so that the class is learned; evaluation texts are each counted once.
    """
    data = templates()
    refusals = {r for c in data["categories"].values() for r in c["refusals"]} | set(data["over_refusals"])
    refusals.add(REFUSE)
    rows = [(text, 2 if text in refusals else label) for text, label in guard_examples(split, seed, n_per_template)]
    world = load_world()
    names = split_countries(world)["qa" if split == "train" else "heldout"]
    rng = random.Random(f"{seed}/guard/{split}")
    chats = rng.sample(chat_examples(world, names, per_fact=1, seed=seed + 5), 150 if split == "train" else 60)
    texts = dict.fromkeys(m["content"] for ex in chats for m in ex["messages"] if m["role"] != "system")
    rows += [(t, 0) for t in texts if t not in dict(rows)]
    if split == "train":
        for r in sorted(refusals):
            words = r.split()
            rows += [(r, 2), (r, 2)] + [(" ".join(words[:k]), 2) for k in (6, 10, 14) if k < len(words)]
    rng.shuffle(rows)
    return rows


class TextRows:
    """Labelled texts as right-padded token rows: `<bos> text <eos>`, classified at the last real token."""

    def __init__(self, examples: list[tuple[str, int]], tok, max_len: int = 96):
        self.pad_id = tok.pad_token_id
        ids = tok([t for t, _ in examples], add_special_tokens=False)["input_ids"]
        self.items = [([tok.bos_token_id, *x[: max_len - 2], tok.eos_token_id], y) for x, (_, y) in zip(ids, examples)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.items[i]

    def collate(self, items: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        T = max(len(ids) for ids, _ in items)
        return {"input_ids": torch.tensor([ids + [self.pad_id] * (T - len(ids)) for ids, _ in items]),
                "attention_mask": torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids, _ in items]),
                "labels": torch.tensor([y for _, y in items])}  # (B,)

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return batch["labels"].shape[0]  # one loss unit per text


def classify_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy of the label, summed over the texts of the batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, 3)
    return F.cross_entropy(logits.float(), batch["labels"], reduction="sum"), batch["labels"].shape[0]


class Guard:
    """The trained classifier: `scores(texts)` gives each label's probability."""

    def __init__(self, model, tok, history: History | None = None):
        self.model, self.tok, self.history = model.eval(), tok, history

    @torch.no_grad()
    def probs(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(N, 3) probabilities of safe / harmful / refusal."""
        rows = TextRows([(t, 0) for t in texts], self.tok)
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(rows), batch_size):
            b = rows.collate([rows[j] for j in range(i, min(len(rows), i + batch_size))])
            out.append(self.model(input_ids=b["input_ids"].to(device),
                                  attention_mask=b["attention_mask"].to(device)).logits.float().softmax(-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, len(LABELS))

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        return [dict(zip(LABELS, p.tolist())) for p in self.probs(texts)]

    def is_harmful(self, texts: list[str]) -> list[bool]:
        return (self.probs(texts).argmax(-1) == 1).tolist() if texts else []

    def is_refusal(self, texts: list[str]) -> list[bool]:
        return (self.probs(texts).argmax(-1) == 2).tolist() if texts else []

    def evaluate(self, examples: list[tuple[str, int]]) -> dict:
        """Precision, recall and F1 of "harmful" (refusals count as not harmful)."""
        pred = [int(h) for h in self.is_harmful([t for t, _ in examples])]
        return GuardScores().compute(predictions=pred, references=[int(y == 1) for _, y in examples])


def train_guard(base, cfg: SafetyConfig, *, device: str = "auto", callbacks=(), stop=None) -> Guard:
    """Fine-tune the base model (weights from `base.path`) with a new 3-way head on the training texts."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    torch.manual_seed(cfg.seed)  # the new head's initialisation
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "some weights are newly initialized": yes, the head; that is the point
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base.path / "model", num_labels=len(LABELS))
    finally:
        logging.set_verbosity(verbosity)
    rows = TextRows(guard_data("train", cfg.guard_per_template, cfg.seed), base.tokenizer)
    steps = max(1, round(cfg.guard_epochs * len(rows) / cfg.batch_size))
    tcfg = TrainConfig(max_steps=steps, batch_size=cfg.batch_size, seq_len=96, lr=cfg.guard_lr,
                       warmup_steps=max(1, steps // 10), weight_decay=0.0, eval_every=0,
                       log_every=max(1, steps // 10), seed=cfg.seed, device=device)
    hist = train(model, rows, tcfg, objective=classify_loss, callbacks=callbacks, stop=stop)
    return Guard(model, base.tokenizer, hist)


class GuardedChat:
    """Chat with an input filter and an output filter: the guard vets the prompt, then the reply."""

    def __init__(self, model, tok, guard: Guard, max_new_tokens: int = 40):
        self.model, self.tok, self.guard, self.max_new_tokens = model, tok, guard, max_new_tokens

    def __call__(self, prompts: list[str]) -> list[str]:
        return [text for text, _ in self.replies(prompts)]

    def replies(self, prompts: list[str]) -> list[tuple[str, bool]]:
        """(reply, ended its turn) per prompt; a refusal put in by the guard counts as a finished turn."""
        from ..engine.generate import chat_replies

        blocked = self.guard.is_harmful(prompts)
        todo = [[{"role": "user", "content": p}] for p, b in zip(prompts, blocked) if not b]
        replies = iter(chat_replies(self.model, self.tok, todo, max_new_tokens=self.max_new_tokens) if todo else [])
        out = [(REFUSE, True) if b else next(replies) for b in blocked]
        bad = self.guard.is_harmful([a for a, _ in out])
        return [(REFUSE, True) if b else r for r, b in zip(out, bad)]
