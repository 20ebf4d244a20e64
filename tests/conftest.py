"""Shared fixtures: a small tokenizer trained on the smoke corpus, the world table, a tiny profile."""

import dataclasses
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from kit.engine.config import ModelConfig, TokenizerConfig, TrainConfig  # noqa: E402
from kit.engine.tokenizer import train_tokenizer  # noqa: E402
from kit.lessons.profiles import get_profile  # noqa: E402
from kit.world.corpus import CorpusConfig, build_corpus, load_world  # noqa: E402


@pytest.fixture(scope="session")
def world():
    return load_world()


@pytest.fixture(scope="session")
def tok():
    corpus = build_corpus(get_profile("smoke").corpus)
    return train_tokenizer(corpus.train, vocab_size=512)


@pytest.fixture
def tiny_profile():
    """Smaller and shorter than `smoke`: builds in a couple of seconds."""
    return dataclasses.replace(
        get_profile("smoke"),
        name="tiny",
        model=ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64),
        tokenizer=TokenizerConfig(vocab_size=400),
        corpus=CorpusConfig(bios_per_country=1, qa_per_country=1, stories=20),
        pretrain=TrainConfig(max_steps=6, batch_size=4, seq_len=32, warmup_steps=1, eval_every=3,
                             eval_batches=1, log_every=2),
        sft=dataclasses.replace(get_profile("smoke").sft, seq_len=64),
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private artefact cache for the test (KIT_CACHE)."""
    monkeypatch.setenv("KIT_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """The real chat model's fast stand-in: SmolLM2's tokenizer, chat template, embeddings and first 2 of its 30
    blocks, converted once per test session into a cache of its own (never the full model: that is minutes)."""
    from kit.engine.models import load

    old = os.environ.get("KIT_CACHE")
    os.environ["KIT_CACHE"] = str(tmp_path_factory.mktemp("standin-cache"))
    try:
        return load("smollm2", layers=2)
    finally:
        if old is None:
            os.environ.pop("KIT_CACHE", None)
        else:
            os.environ["KIT_CACHE"] = old
