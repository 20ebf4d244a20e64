"""The fine-tuning kit: the public names a notebook uses.

Example:
    >>> import kit
    >>> profile = kit.setup("smoke")          # doctest: +SKIP
    profile=smoke  device=cpu  seed=0  torch threads=2
"""

from __future__ import annotations

from transformers.utils import logging as _hf_logging

from .artifacts import base_model
from .config import PROFILES, ConfigError, Profile, TrainConfig, get_profile
from .corpus import build_corpus, load_world, split_countries
from .generate import complete, next_token_probs
from .metrics import fact_cloze, perplexity
from .models import count_params, load
from .tokenizer import train_tokenizer
from .train import History, ProgressBar, TokenRows, pick_device, train

__all__ = [
    "PROFILES", "ConfigError", "History", "Profile", "ProgressBar", "TokenRows", "TrainConfig",
    "base_model", "build_corpus", "complete", "count_params", "fact_cloze", "get_profile", "load",
    "load_world", "next_token_probs", "perplexity", "pick_device", "setup", "split_countries", "train",
    "train_tokenizer",
]


_hf_logging.disable_progress_bar()  # "Loading weights" bars would drown the notebooks' own output


def setup(profile: str | None = None, seed: int = 0) -> Profile:
    """The one setup cell of every notebook: pick the profile, seed everything, report the device.

    Safe to run again: it only sets seeds and reads settings.
    """
    import random

    import torch

    prof = get_profile(profile)
    random.seed(seed)
    torch.manual_seed(seed)
    device = pick_device(prof.pretrain.device)
    print(f"profile={prof.name}  device={device.type}  seed={seed}  torch threads={torch.get_num_threads()}")
    print(f"  {prof.description}")
    return prof
