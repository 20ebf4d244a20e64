"""Model presets (one per profile) as transformers Llama configs, and one `load()` for every source.

`load()` takes
  * a preset name ("smoke", "classroom", "gpu"): a new, randomly initialised model to pre-train;
  * a local folder written by `save_pretrained`: that model, weights included;
  * a hub id such as "HuggingFaceTB/SmolLM2-135M" (needs the internet the first time).

Example:
    >>> model = load("smoke", vocab_size=512)
    >>> 100_000 < count_params(model) < 500_000
    True
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from .config import PROFILES, ModelConfig, validate

PRESETS: dict[str, ModelConfig] = {name: p.model for name, p in PROFILES.items()}


def llama_config(m: ModelConfig, vocab_size: int, *, bos_id: int = 1, eos_id: int = 2, pad_id: int = 0) -> LlamaConfig:
    """Translate the kit's ModelConfig into a transformers LlamaConfig."""
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


def create(m: ModelConfig, vocab_size: int, *, seed: int = 0, tokenizer=None) -> LlamaForCausalLM:
    """A freshly initialised Llama with the given shape (seeded, so runs repeat)."""
    ids = {}
    if tokenizer is not None:
        ids = dict(bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(m, vocab_size, **ids))


def load(name_or_path: str, *, vocab_size: int | None = None, tokenizer=None, seed: int = 0) -> PreTrainedModel:
    """Load a model by preset name, local folder, or hub id.

    Args:
        name_or_path: a preset ("smoke", "classroom", "gpu"), a folder saved with
            `save_pretrained`, or a hub id containing a "/" (online only).
        vocab_size: presets only; defaults to `len(tokenizer)` when a tokenizer is given.
        tokenizer: presets only; its special token ids go into the model config.
        seed: presets only; seeds the random initialisation.

    Raises:
        ValueError: the name is neither a preset, nor a folder, nor a hub id.

    Example:
        >>> load("nope")
        Traceback (most recent call last):
        ...
        ValueError: Unknown model 'nope': it is not a preset (valid presets: smoke, classroom, gpu), ...
    """
    if name_or_path in PRESETS:
        if vocab_size is None:
            if tokenizer is None:
                raise ValueError(f"load({name_or_path!r}) builds a new model: pass vocab_size=... or tokenizer=...")
            vocab_size = len(tokenizer)
        return create(PRESETS[name_or_path], vocab_size, seed=seed, tokenizer=tokenizer)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"{path} is a folder but holds no config.json: save a model there with "
                             "model.save_pretrained(folder) first, or pass a preset name.")
        return AutoModelForCausalLM.from_pretrained(path)
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        try:
            return AutoModelForCausalLM.from_pretrained(name_or_path)
        except OSError as e:
            raise ValueError(
                f"Could not load hub model {name_or_path!r}: {e}. Hub models need the internet the first "
                "time (unset HF_HUB_OFFLINE); offline, use a preset or a saved folder."
            ) from e
    raise ValueError(
        f"Unknown model {name_or_path!r}: it is not a preset (valid presets: {', '.join(PRESETS)}), "
        "not an existing folder, and not a hub id of the form 'owner/name'."
    )


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied embeddings counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def add_lora(model: PreTrainedModel, r: int = 16, alpha: int = 32, dropout: float = 0.0,
             targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")):
    """Wrap `model` with LoRA adapters (peft): the base weights are frozen, small low-rank matrices train.

    Example:
        >>> lora = add_lora(load("smoke", vocab_size=512), r=4)
        >>> count_params(lora, trainable_only=True) < count_params(lora) // 10
        True
    """
    import warnings

    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                     task_type="CAUSAL_LM", bias="none")
    with warnings.catch_warnings():  # peft 0.21 calls a transformers API that transformers 5 marks deprecated
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, cfg)


def merge_lora(model) -> PreTrainedModel:
    """Fold LoRA adapters into the base weights and return a plain transformers model."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
