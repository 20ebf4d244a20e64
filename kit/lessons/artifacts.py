"""Build-on-demand artefacts of the course: what a notebook needs from an earlier one is built once, then loaded.

An entry lives in `<cache>/<kind>/<profile>-<key>/`, where the key hashes every setting that
shapes it (profile fields, the facts table, the kit's data version); it is written whole or not at
all (`kit.engine.cache`), so a killed build is rebuilt, never loaded half-way.

Example:
    >>> base = base_model("smoke")              # doctest: +SKIP
    >>> base.info["fact_cloze_accuracy"]        # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..engine.cache import (
    cache_root,
    entry_key,
    is_complete,
    is_writable,
    read_only_message,
    remove_stale_temps,
    sha256,
    write_entry,
)
from ..engine.config import RUNTIME_FIELDS, to_dict
from .profiles import Profile, get_profile

DATA_VERSION = 2  # bump when corpus/tokenizer code changes what a given config produces
RECIPE_VERSION = 2  # bump when the SFT recipe's data or measurements change (keys the fine-tuned model only)


def _load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.padding_side = "left"  # as `kit.engine.tokenizer.wrap` sets it: generation pads on the left
    return tok


def tokenizer_for(profile: Profile | str | None = None):
    """The profile's tokenizer: the cached base model's if built, else trained now (same result, < 1 s)."""
    from ..engine.tokenizer import train_tokenizer
    from ..world.corpus import build_corpus

    profile = get_profile(profile)
    entry = base_entry(profile)
    if is_complete(entry):
        return _load_tokenizer(entry / "tokenizer")
    return train_tokenizer(build_corpus(profile.corpus).train, profile.tokenizer.vocab_size)


# ----------------------------------------------------------------------------- the base model
@dataclass
class CachedModel:
    """A model of the cache (the pre-trained base model, or notebook 03's fine-tuned one) with its tokenizer and
    the facts about its build (`info`)."""

    model: object
    tokenizer: object
    info: dict
    path: Path

    def fresh_model(self):
        """A new copy of the base weights from the cache (fine-tuning changes weights in place)."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.path / "model")


def base_entry(profile: Profile) -> Path:
    from ..world.corpus import COUNTRIES_CSV

    pretrain = {k: v for k, v in to_dict(profile.pretrain).items() if k not in RUNTIME_FIELDS}
    key = entry_key(to_dict(profile.model), to_dict(profile.tokenizer), to_dict(profile.corpus),
                    pretrain, sha256(COUNTRIES_CSV), DATA_VERSION)
    return cache_root() / "base" / f"{profile.name}-{key}"


def sft_entry(profile: Profile) -> Path:
    """Where `sft_model(profile)` is cached (its key: the base model's entry, the SFT settings, the versions)."""
    key = entry_key(base_entry(profile).name, to_dict(profile.sft), DATA_VERSION, RECIPE_VERSION)
    return cache_root() / "sft" / f"{profile.name}-{key}"


def base_model(profile: Profile | str | None = None, *, rebuild: bool = False, resume: bool | None = None,
               fresh: bool = False, callbacks: Sequence = ()) -> CachedModel:
    """The pre-trained base model of a profile: loaded from the cache, or built (and cached) first.

    An interrupted build leaves its checkpoints; they are never deleted unless `fresh=True`.

    Args:
        profile: a Profile, a profile name, or None for the default (`KIT_PROFILE`).
        rebuild: build again even if a complete entry exists.
        resume: True: a build continues from the newest checkpoint of an earlier, interrupted build (and says
            "nothing to resume, starting fresh" when there is none). None (default): the same when such a
            checkpoint exists (the result is identical to an uninterrupted build). False: refuse to build
            while such checkpoints exist, unless `fresh=True`.
        fresh: delete the checkpoints of an interrupted build and start from step 0.
        callbacks: passed to `train()` when a build happens (progress bars, live plots).

    Raises:
        CheckpointError: `resume=False` and an interrupted build left checkpoints (the message says how to
            continue it or start over).
    """
    from ..engine.checkpoint import CheckpointError, latest
    from .pretrain import pretrain

    profile = get_profile(profile)
    entry = base_entry(profile)
    checkpoints = cache_root() / "checkpoints" / entry.name

    def build() -> tuple:
        if fresh:
            shutil.rmtree(checkpoints, ignore_errors=True)
        last = latest(checkpoints)
        if resume is False and last is not None:
            raise CheckpointError(
                f"an interrupted build left checkpoints in {checkpoints} (the newest is step {int(last.name[5:])}): "
                "continue it with --resume (resume=True), or delete them and start over with --fresh (fresh=True)")
        go_on = bool(resume) or (resume is None and last is not None)
        result = pretrain(profile, callbacks=callbacks, checkpoint_dir=checkpoints, resume=go_on)
        return result.model, result.tokenizer, result.info

    return _build_or_load(entry, rebuild, f"python -m kit pretrain --profile {profile.name}", build,
                          built=lambda: shutil.rmtree(checkpoints, ignore_errors=True))  # the entry replaces them


def _build_or_load(entry: Path, rebuild: bool, command: str, build: Callable[[], tuple],
                   built: Callable[[], None] | None = None) -> CachedModel:
    """The cache entry's model, loaded; or, when it is missing (or `rebuild`), `build() -> (model, tokenizer,
    info)` run and written whole into the entry, then `built()`. `command`: what builds it where the cache is
    read-only."""
    remove_stale_temps(entry)  # what a killed build was writing
    if not rebuild and is_complete(entry):
        return _load_entry(entry)
    if not is_writable(cache_root()):
        raise PermissionError(read_only_message(entry, command))
    model, tok, info = build()

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "tokenizer")
        (tmp / "info.json").write_text(json.dumps(info, indent=1, default=str))

    write_entry(entry, fill)
    if built is not None:
        built()
    return CachedModel(model, tok, {**info, "cached": False}, entry)


def _load_entry(entry: Path) -> CachedModel:
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(entry / "model")
    tok = _load_tokenizer(entry / "tokenizer")
    info = json.loads((entry / "info.json").read_text())
    return CachedModel(model, tok, {**info, "cached": True, "load_seconds": time.perf_counter() - t0}, entry)


# ----------------------------------------------------------------------------- the fine-tuned (SFT) model
def sft_model(profile: Profile | str | None = None, *, rebuild: bool = False, callbacks: Sequence = ()) -> CachedModel:
    """Notebook 03's fine-tuned model (the profile's `sft` settings; LoRA merged): cached like the base model.

    `info` holds `finetune_recipe()`'s measurements (held-out QA accuracy, format rate, ...).
    """
    from ..engine.models import merge_lora
    from .recipe import finetune_recipe

    profile = get_profile(profile)

    def build() -> tuple:
        result = finetune_recipe(profile, base=base_model(profile), callbacks=callbacks)
        info = {k: v for k, v in result.info.items() if k not in ("history", "qa_examples")}
        return merge_lora(result.model), result.tokenizer, info

    return _build_or_load(sft_entry(profile), rebuild, f"make class-ready PROFILE={profile.name}", build)
