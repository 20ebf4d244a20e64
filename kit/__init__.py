"""The fine-tuning kit: the public names a notebook uses, and `setup()`.

The kit has four layers, each importing only from the ones below it (`import-linter` checks it):

    kit.widgets   notebook views over the objects below (control panel, curation, red-team, rating)
    kit.lessons   the course's recipes: profiles, pre-training the base, the SFT recipe, safety, iteration
    kit.world     the course's own world: countries corpus, QA and cloze probes, safety data
    kit.engine    generic, knows no country: load, chat render + mask, data, train(), SFT, DPO, runs

The names below are loaded on first use, so `import kit` stays fast.

Example:
    >>> import kit
    >>> profile = kit.setup("smoke")          # doctest: +SKIP
    profile=smoke  device=cpu  seed=0  torch threads=2
"""

from __future__ import annotations

import importlib

_WHERE = {
    # engine: any model, any data
    "ConfigError": "engine.config", "TrainConfig": "engine.config", "SFTConfig": "engine.config",
    "DPOConfig": "engine.config", "ModelConfig": "engine.config",
    "load": "engine.models", "count_params": "engine.models", "add_lora": "engine.models",
    "merge_lora": "engine.models", "train_tokenizer": "engine.tokenizer",
    "render": "engine.chat", "load_jsonl": "engine.data", "load_csv": "engine.data",
    "History": "engine.train", "ProgressBar": "engine.callbacks", "TokenRows": "engine.train",
    "pick_device": "engine.train", "train": "engine.train", "finetune": "engine.sft",
    "evaluate_chat": "engine.evaluation", "complete": "engine.generate", "next_token_probs": "engine.generate",
    "chat": "engine.generate", "perplexity": "engine.metrics",
    # the course's world and recipes
    "build_corpus": "world.corpus", "load_world": "world.corpus", "split_countries": "world.corpus",
    "fact_cloze": "world.probes", "PROFILES": "lessons.profiles", "Profile": "lessons.profiles",
    "get_profile": "lessons.profiles", "base_model": "lessons.artifacts", "sft_model": "lessons.artifacts",
    "tokenizer_for": "lessons.artifacts",
}
__all__ = sorted([*_WHERE, "setup"])


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    if name in ("engine", "world", "lessons", "widgets", "exercises"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kit' has no attribute {name!r}")


def setup(profile: str | None = None, seed: int | None = None):
    """The one setup cell of every notebook: pick the profile, seed everything, report the device.

    Safe to run again: it only sets seeds and reads settings. `seed`: default `KIT_SEED` (0 when unset).
    """
    import random

    import torch

    from .lessons.profiles import get_profile, seed_offset

    _quiet_transformers()
    prof = get_profile(profile)
    seed = seed_offset() if seed is None else seed
    random.seed(seed)
    torch.manual_seed(seed)
    from .engine.train import pick_device

    device = pick_device(prof.pretrain.device)
    print(f"profile={prof.name}  device={device.type}  seed={seed}  torch threads={torch.get_num_threads()}")
    print(f"  {prof.description}")
    return prof


def _quiet_transformers() -> None:
    """No "Loading weights" bars: they would drown the notebooks' own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
