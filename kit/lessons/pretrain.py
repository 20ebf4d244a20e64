"""Pre-training from nothing: corpus -> tokenizer -> random Llama -> `train()` -> fact probe.

This is what `kit.lessons.artifacts.base_model()` runs when the cache has no base model yet, and what
`python -m kit pretrain` reports on.

Example:
    >>> from kit.lessons.profiles import get_profile
    >>> result = pretrain(get_profile("smoke"))     # doctest: +SKIP
    >>> sorted(result.info)[:3]                     # doctest: +SKIP
    ['corpus_tokens', 'fact_cloze_accuracy', 'history']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine.config import to_dict
from ..engine.models import count_params, create
from ..engine.tokenizer import encode_documents, train_tokenizer
from ..engine.train import History, TokenRows, train
from ..world.corpus import build_corpus, load_world
from ..world.probes import fact_cloze
from .profiles import Profile


@dataclass
class PretrainResult:
    model: object
    tokenizer: object
    history: History
    info: dict


def corpus_rows(profile: Profile):
    """The profile's tokenizer (trained on its corpus), and the corpus as train/validation TokenRows."""
    corpus = build_corpus(profile.corpus, load_world())
    tok = train_tokenizer(corpus.train, profile.tokenizer.vocab_size)
    seq = profile.pretrain.seq_len
    return tok, TokenRows(encode_documents(tok, corpus.train), seq), TokenRows(encode_documents(tok, corpus.val), seq)


def pretrain(profile: Profile, callbacks: Sequence = (), checkpoint_dir=None, resume: bool = False) -> PretrainResult:
    """Build the corpus, train the tokenizer, pre-train the profile's model, probe its facts.

    With `checkpoint_dir`, checkpoints are written every `profile.pretrain.checkpoint_every` steps;
    `resume=True` continues a killed run from the newest one.
    """
    t0 = time.perf_counter()
    tok, train_rows, val_rows = corpus_rows(profile)
    model = create(profile.model, len(tok), seed=profile.pretrain.seed, tokenizer=tok)
    hist = train(model, train_rows, profile.pretrain, val_data=val_rows, callbacks=callbacks,
                 checkpoint_dir=checkpoint_dir, resume=resume)
    cloze = fact_cloze(model, tok, load_world())
    info = {
        "profile": profile.name,
        "params": count_params(model),
        "vocab_size": len(tok),
        "corpus_tokens": len(train_rows.rows),
        "train_tokens": hist.tokens,
        "steps": hist.steps[-1] if hist.steps else 0,
        "train_seconds": round(hist.seconds, 2),
        "tokens_per_s": round(hist.tokens / max(hist.seconds, 1e-9), 1),
        "seconds": round(time.perf_counter() - t0, 2),
        "train_loss": hist.losses[-1] if hist.losses else None,
        "val_loss": hist.val_losses[-1] if hist.val_losses else None,
        "fact_cloze_accuracy": cloze["accuracy"],
        "fact_cloze_examples": cloze["examples"][:10],
        "history": hist.to_dict(),
        "config": {"model": to_dict(profile.model), "pretrain": to_dict(profile.pretrain),
                   "corpus": to_dict(profile.corpus), "tokenizer": to_dict(profile.tokenizer)},
    }
    return PretrainResult(model, tok, hist, info)
