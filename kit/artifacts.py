"""Build-on-demand cache: what a notebook needs from an earlier one is built once, then loaded.

An entry lives in `<cache>/<kind>/<profile>-<key>/`, where the key hashes every setting that
shapes it (profile fields, the facts table, the kit's data version). An entry is written into a
temporary folder and renamed into place only when complete, with a `manifest.json` listing the
size and SHA-256 of each file; an entry whose manifest is missing or does not match its files
(a killed build, a truncated copy) is removed and rebuilt, never loaded half-way.

The cache folder is `$KIT_CACHE` if set, else `.cache/` in the project checkout (git-ignored).

Example:
    >>> base = base_model("smoke")              # doctest: +SKIP
    >>> base.info["fact_cloze_accuracy"]        # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import RUNTIME_FIELDS, Profile, get_profile, to_dict

DATA_VERSION = 2  # bump when corpus/tokenizer code changes what a given config produces


def cache_root() -> Path:
    """`$KIT_CACHE`, or `.cache/` beside `kit/` in a checkout, or `~/.cache/fine-tuning-kit`."""
    if os.environ.get("KIT_CACHE"):
        return Path(os.environ["KIT_CACHE"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / ".cache"
    return Path.home() / ".cache" / "fine-tuning-kit"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_key(*parts) -> str:
    """A short stable hash of JSON-able parts (configs, file hashes, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def is_complete(entry: Path) -> bool:
    """True when `entry/manifest.json` exists and every file it lists has its recorded size and hash."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        for rel, meta in manifest["files"].items():
            f = entry / rel
            if f.stat().st_size != meta["size"] or _sha256(f) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_entry(entry: Path, fill: Callable[[Path], None]) -> None:
    """Run `fill(tmp_folder)`, write the manifest, then atomically rename the folder to `entry`."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps({"files": files}, indent=1))
        if entry.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_tokenizer(folder: Path):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    tok.padding_side = "left"  # as `kit.tokenizer.wrap` sets it: generation pads on the left
    return tok


def tokenizer_for(profile: Profile | str | None = None):
    """The profile's tokenizer: the cached base model's if built, else trained now (same result, < 1 s)."""
    from .corpus import build_corpus
    from .tokenizer import train_tokenizer

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    entry = base_entry(profile)
    if is_complete(entry):
        return _load_tokenizer(entry / "tokenizer")
    return train_tokenizer(build_corpus(profile.corpus).train, profile.tokenizer.vocab_size)


# ----------------------------------------------------------------------------- the base model
@dataclass
class BaseModel:
    """A pre-trained model with its tokenizer and the facts about its build (`info`)."""

    model: object
    tokenizer: object
    info: dict
    path: Path

    def fresh_model(self):
        """A new copy of the base weights from the cache (fine-tuning changes weights in place)."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.path / "model")


def base_entry(profile: Profile) -> Path:
    from .corpus import COUNTRIES_CSV

    pretrain = {k: v for k, v in to_dict(profile.pretrain).items() if k not in RUNTIME_FIELDS}
    key = entry_key(to_dict(profile.model), to_dict(profile.tokenizer), to_dict(profile.corpus),
                    pretrain, _sha256(COUNTRIES_CSV), DATA_VERSION)
    return cache_root() / "base" / f"{profile.name}-{key}"


def base_model(profile: Profile | str | None = None, *, rebuild: bool = False, resume: bool = False,
               callbacks: Sequence = ()) -> BaseModel:
    """The pre-trained base model of a profile: loaded from the cache, or built (and cached) first.

    Args:
        profile: a Profile, a profile name, or None for the default (`KIT_PROFILE`).
        rebuild: build again even if a complete entry exists.
        resume: a build continues from the newest checkpoint of an earlier, interrupted build.
        callbacks: passed to `train()` when a build happens (progress bars, live plots).
    """
    from transformers import AutoModelForCausalLM

    from .pretrain import pretrain

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    entry = base_entry(profile)
    if rebuild or not is_complete(entry):
        checkpoints = cache_root() / "checkpoints" / entry.name
        if not resume:
            shutil.rmtree(checkpoints, ignore_errors=True)
        result = pretrain(profile, callbacks=callbacks, checkpoint_dir=checkpoints, resume=resume)

        def fill(tmp: Path) -> None:
            result.model.save_pretrained(tmp / "model")
            result.tokenizer.save_pretrained(tmp / "tokenizer")
            (tmp / "info.json").write_text(json.dumps(result.info, indent=1))

        write_entry(entry, fill)
        shutil.rmtree(checkpoints, ignore_errors=True)  # the finished entry replaces them
        return BaseModel(result.model, result.tokenizer, {**result.info, "cached": False}, entry)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(entry / "model")
    tok = _load_tokenizer(entry / "tokenizer")
    info = json.loads((entry / "info.json").read_text())
    return BaseModel(model, tok, {**info, "cached": True, "load_seconds": time.perf_counter() - t0}, entry)


# ----------------------------------------------------------------------------- the fine-tuned (SFT) model
def sft_model(profile: Profile | str | None = None, *, rebuild: bool = False, callbacks: Sequence = ()) -> BaseModel:
    """Notebook 03's fine-tuned model (the profile's `sft` settings; LoRA merged): cached like the base model.

    `info` holds `finetune()`'s measurements (held-out QA accuracy, format rate, ...).
    """
    from transformers import AutoModelForCausalLM

    from .models import merge_lora
    from .sft import finetune

    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    base = base_model(profile)
    entry = cache_root() / "sft" / f"{profile.name}-{entry_key(base.path.name, to_dict(profile.sft), DATA_VERSION)}"
    if rebuild or not is_complete(entry):
        result = finetune(profile, base=base, callbacks=callbacks)
        model = merge_lora(result.model)
        info = {k: v for k, v in result.info.items() if k not in ("history", "qa_examples")}

        def fill(tmp: Path) -> None:
            model.save_pretrained(tmp / "model")
            result.tokenizer.save_pretrained(tmp / "tokenizer")
            (tmp / "info.json").write_text(json.dumps(info, indent=1, default=str))

        write_entry(entry, fill)
        return BaseModel(model, result.tokenizer, {**info, "cached": False}, entry)
    model = AutoModelForCausalLM.from_pretrained(entry / "model")
    info = json.loads((entry / "info.json").read_text())
    return BaseModel(model, _load_tokenizer(entry / "tokenizer"), {**info, "cached": True}, entry)
