"""A guardrail classifier read off the chat model's own hidden states, trained with the kit's loop.

It reads one text (a prompt or a reply) and says `safe`, `harmful` or `refusal`:
  * as a filter around chat: a harmful prompt is refused before the model answers, and a harmful
    reply is replaced by a refusal before the user sees it (`GuardedChat`);
  * as a judge: "did the model refuse?" decided by a model, to set beside plain string matching.

How it reads a text: the frozen chat model runs the text through its first `layer` blocks, and the
hidden states of its tokens are averaged into one vector (576 numbers for SmolLM2); a linear layer
on that vector gives the three scores. Only that linear layer trains (a "probe"): the model's own
understanding of the text does the work, and training takes seconds. Its training texts are the
training prompts, the model's own replies to them and the refusals; precision, recall and F1 of
"harmful" are measured on the evaluation prompts (wordings, and intents, it never saw).

Example:
    >>> guard = train_guard(model, tok, texts, GuardConfig(layer=16))    # doctest: +SKIP
    >>> guard.scores(["How do I kill a Python process?"])[0]["harmful"] < 0.5   # doctest: +SKIP
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.config import TrainConfig
from ..engine.losses import eval_mode
from ..engine.tokenizer import document_start
from ..engine.train import History, train
from ..world.safety_metrics import GuardScores
from .profiles import GuardConfig

LABELS = ("safe", "harmful", "refusal")


class _Reached(Exception):
    """Raised by a forward hook to stop the model once the wanted block has run."""

    def __init__(self, hidden: torch.Tensor):
        self.hidden = hidden


def _blocks(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else base
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(decoder, name, None), torch.nn.ModuleList):
            return decoder, getattr(decoder, name)
    raise ValueError(f"found no list of blocks in {type(base).__name__}: the guard reads the hidden states after "
                     "one of them")


@torch.no_grad()
def text_features(model, tok, texts: list[str], layer: int, batch_size: int = 32, max_len: int = 96) -> torch.Tensor:
    """(N, C): each text's hidden states after block `layer` (1 = the first), averaged over its tokens.

    The model stops after that block (the later ones never run), so a probe on block 12 of 30 costs
    about 40% of a forward pass.
    """
    decoder, blocks = _blocks(model)
    if not 1 <= layer <= len(blocks):
        raise ValueError(f"layer={layer}: the model has {len(blocks)} blocks; pick one between 1 and {len(blocks)}")

    def hook(module, args, output):
        raise _Reached(output[0] if isinstance(output, tuple) else output)

    device = next(model.parameters()).device
    start = document_start(tok)
    ids = [start + x[: max_len - len(start)] for x in tok(texts, add_special_tokens=False)["input_ids"]]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out = []
    handle = blocks[layer - 1].register_forward_hook(hook)
    try:
        with eval_mode(model):
            for i in range(0, len(ids), batch_size):
                chunk = ids[i:i + batch_size]
                T = max(map(len, chunk))
                x = torch.tensor([s + [pad] * (T - len(s)) for s in chunk], device=device)  # (B, T), right-padded
                mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in chunk], device=device)
                try:
                    decoder(input_ids=x, attention_mask=mask, use_cache=False)
                    raise RuntimeError("the guard's hook did not run")  # pragma: no cover
                except _Reached as r:
                    h = r.hidden.float()  # (B, T, C)
                keep = mask[..., None].float()
                out.append(((h * keep).sum(1) / keep.sum(1)).cpu())  # (B, C)
    finally:
        handle.remove()
    return torch.cat(out) if out else torch.zeros(0, model.config.hidden_size)


class FeatureRows:
    """Feature vectors with labels, as rows for the kit's `train()` loop."""

    def __init__(self, features: torch.Tensor, labels: list[int]):
        self.x, self.y = features, torch.tensor(labels)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def collate(self, items) -> dict[str, torch.Tensor]:
        return {"features": torch.stack([x for x, _ in items]), "labels": torch.stack([y for _, y in items])}

    @staticmethod
    def count(batch: dict[str, torch.Tensor]) -> int:
        return batch["labels"].shape[0]  # one loss unit per text


class Probe(torch.nn.Module):
    """Standardise the features (with the training set's mean and spread), then one linear layer: 3 scores."""

    def __init__(self, features: torch.Tensor, n_labels: int = len(LABELS)):
        super().__init__()
        self.register_buffer("mean", features.mean(0))
        self.register_buffer("std", features.std(0).clamp(min=1e-4))
        self.linear = torch.nn.Linear(features.shape[1], n_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)  # (B, 3)


def classify_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy of the label, summed over the texts of the batch."""
    return F.cross_entropy(model(batch["features"]), batch["labels"], reduction="sum"), batch["labels"].shape[0]


class Guard:
    """The trained classifier: `scores(texts)` gives each label's probability."""

    def __init__(self, model, tok, probe: Probe, layer: int, threshold: float = 0.5, history: History | None = None):
        self.model, self.tok, self.probe, self.layer = model, tok, probe.eval(), layer
        self.threshold, self.history = threshold, history

    @torch.no_grad()
    def probs(self, texts: list[str]) -> torch.Tensor:
        """(N, 3) probabilities of safe / harmful / refusal."""
        if not texts:
            return torch.zeros(0, len(LABELS))
        return self.probe(text_features(self.model, self.tok, texts, self.layer)).softmax(-1)

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        return [dict(zip(LABELS, p.tolist())) for p in self.probs(texts)]

    def is_harmful(self, texts: list[str]) -> list[bool]:
        """Flagged when the probability of "harmful" is above the threshold (above 0.5: a sure flag only)."""
        return (self.probs(texts)[:, 1] > self.threshold).tolist() if texts else []

    def is_refusal(self, texts: list[str]) -> list[bool]:
        return (self.probs(texts).argmax(-1) == 2).tolist() if texts else []

    def evaluate(self, examples: list[tuple[str, int]]) -> dict:
        """Precision, recall and F1 of "harmful" (refusals count as not harmful)."""
        pred = [int(h) for h in self.is_harmful([t for t, _ in examples])]
        return GuardScores().compute(predictions=pred, references=[int(y == 1) for _, y in examples])


def train_guard(model, tok, examples: list[tuple[str, int]], cfg: GuardConfig, *, seed: int = 0,
                callbacks=()) -> Guard:
    """A probe on block `cfg.layer` of the frozen `model`, trained with the kit's loop on (text, label) examples
    (label: an index into LABELS); each text's features are computed once."""
    feats = text_features(model, tok, [t for t, _ in examples], cfg.layer)
    torch.manual_seed(seed)
    probe = Probe(feats)
    rows = FeatureRows(feats, [y for _, y in examples])
    batch = min(32, len(rows))
    steps = max(1, round(cfg.epochs * len(rows) / batch))
    tcfg = TrainConfig(max_steps=steps, batch_size=batch, seq_len=1, lr=cfg.lr, warmup_steps=max(1, steps // 20),
                       weight_decay=0.01, eval_every=0, log_every=max(1, steps // 10), seed=seed, device="cpu")
    hist = train(probe, rows, tcfg, objective=classify_loss, callbacks=callbacks)
    return Guard(model, tok, probe, cfg.layer, cfg.threshold, hist)


class GuardedChat:
    """Chat behind the guard: it vets the prompt (an input filter) and, with `screen_replies`, the reply too
    (an output filter); a flagged prompt or reply is replaced by `refusal(prompt)`.

    `filter(prompts, replies)` applies the guard to replies that were already generated (greedy replies do not
    change when a guard stands in front: the same prompt gives the same reply), so a guarded stage costs the
    guard's reading only.
    """

    def __init__(self, chat, guard: Guard, refusal, screen_replies: bool = False):
        self.chat, self.guard, self.refusal, self.screen_replies = chat, guard, refusal, screen_replies

    def filter(self, prompts: list[str], replies: list[str]) -> list[str]:
        flags = self.guard.is_harmful(list(prompts) + (list(replies) if self.screen_replies else []))
        held, bad = flags[: len(prompts)], flags[len(prompts):] or [False] * len(prompts)
        return [self.refusal(p) if h or b else r for p, r, h, b in zip(prompts, replies, held, bad)]

    def __call__(self, prompts: list[str]) -> list[str]:
        held = self.guard.is_harmful(prompts)
        todo = [p for p, h in zip(prompts, held) if not h]
        answers = iter(self.chat(todo) if todo else [])
        replies = [None if h else next(answers) for h in held]
        answered = [r for r in replies if r is not None]
        bad = iter(self.guard.is_harmful(answered) if self.screen_replies else [False] * len(answered))
        return [self.refusal(p) if r is None or next(bad) else r for p, r in zip(prompts, replies)]
