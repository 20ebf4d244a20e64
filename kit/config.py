"""Configuration as data: model, tokenizer, corpus and training settings, grouped in profiles.

A profile is one `Profile` instance in `PROFILES`; nothing else in the kit branches on the
profile's name. `KIT_PROFILE=smoke|classroom|gpu` picks one; without it the kit takes `gpu`
when CUDA is present and `classroom` otherwise.

Example:
    >>> from kit.config import get_profile
    >>> get_profile("smoke").model.n_layers
    2
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration with one or more problems; the message lists every one of them."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a small Llama-style decoder (turned into a transformers `LlamaConfig`)."""

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 4
    intermediate_size: int = 256
    max_seq_len: int = 256
    tie_embeddings: bool = True


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE vocabulary size (special tokens included)."""

    vocab_size: int = 1024


@dataclass(frozen=True)
class CorpusConfig:
    """How much pre-training text `kit.corpus` writes about the world (all seeded)."""

    bios_per_country: int = 4       # encyclopedic paragraphs per country, each in a new wording
    qa_per_country: int = 2         # Q&A web pages per country of the Q&A half
    stories: int = 200              # everyday narrative paragraphs (general language)
    val_fraction: float = 0.05      # share of documents kept for validation
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One training run of `kit.train.train` (pre-training now; SFT and DPO later)."""

    max_steps: int = 100
    batch_size: int = 16            # rows per micro-batch
    grad_accum: int = 1             # micro-batches per optimizer step
    seq_len: int = 128              # tokens per row
    lr: float = 3e-3
    min_lr_ratio: float = 0.1       # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50            # steps between validation passes (0: only at the end)
    eval_batches: int = 4
    log_every: int = 10             # steps between loss read-outs (one host sync each)
    checkpoint_every: int = 0       # steps between checkpoints when train() gets a checkpoint_dir (0: at the end)
    seed: int = 0
    device: str = "auto"            # "auto" | "cpu" | "cuda"
    # how the run executes (none of these changes what a healthy run computes; see kit/train.py)
    nonfinite: str = "stop"         # NaN/inf loss or gradient: "stop" (keep the last good checkpoint) | "skip" the step
    compile: bool = False           # torch.compile the model (pays off on CUDA after a warm-up)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower steps
    tf32: bool = True               # CUDA: TF32 matmuls for the fp32 parts
    cpu_threads: int = 0            # CPU: 0 = torch's default (physical cores), shared among torchrun ranks
    distributed: str = "ddp"        # under torchrun: "ddp" (replicas) | "fsdp" (sharded; no checkpoints)


RUNTIME_FIELDS = ("checkpoint_every", "nonfinite", "compile", "gradient_checkpointing", "tf32", "cpu_threads",
                  "distributed")  # left out of cache keys: they change how a run executes, not its result


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on chat examples (full or LoRA); also the fields of the control panel."""

    epochs: float = 3.0
    lr: float = 5e-4                 # full fine-tuning
    lora: bool = False
    lora_lr: float = 5e-3            # LoRA trains few weights: a larger step suits it
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    batch_size: int = 16
    seq_len: int = 128
    warmup_ratio: float = 0.05
    per_fact: int = 2                # phrasings per fact in the generated training examples
    replay: float = 0.5              # pre-training documents mixed in, per chat example (against forgetting)
    eval_every: int = 0              # validation-loss interval in steps (0: once per epoch)
    log_every: int = 5
    seed: int = 0

    def train_config(self, n_rows: int, device: str = "auto") -> TrainConfig:
        """The TrainConfig of this SFT run for a dataset of `n_rows` packed rows."""
        steps_per_epoch = max(1, n_rows // self.batch_size)
        steps = max(1, round(self.epochs * steps_per_epoch))
        return TrainConfig(
            max_steps=steps, batch_size=self.batch_size, seq_len=self.seq_len,
            lr=self.lora_lr if self.lora else self.lr, min_lr_ratio=0.1,
            warmup_steps=min(steps, max(1, round(self.warmup_ratio * steps))), weight_decay=0.0,
            eval_every=self.eval_every or steps_per_epoch, eval_batches=4, log_every=min(self.log_every, steps),
            seed=self.seed, device=device)


@dataclass(frozen=True)
class SafetyConfig:
    """Notebook 04: the safety data mix, preference tuning (DPO) and the guard classifier."""

    n_per_template: int = 6          # distinct prompts drawn per training template
    mix: float = 0.5                 # safety SFT: safety examples per chat example
    dpo_beta: float = 0.1            # how far DPO may move from the reference model
    dpo_lr: float = 1e-3             # DPO trains a LoRA adapter
    dpo_epochs: float = 1.0
    dpo_lora_r: int = 16
    dpo_sft_weight: float = 1.0      # SFT anchor on the chosen reply (0 = plain DPO)
    pairs_per_template: int = 3      # DPO: preference pairs drawn per training template
    guard_lr: float = 1e-3           # the guard: the base model with a 3-way head, fully fine-tuned
    guard_epochs: float = 4.0
    batch_size: int = 16
    max_new_tokens: int = 32         # replies to safety prompts (a refusal shows in the first words)
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    """Everything one setting of the course needs, from tokenizer to training budget."""

    name: str
    model: ModelConfig
    tokenizer: TokenizerConfig
    corpus: CorpusConfig
    pretrain: TrainConfig
    sft: SFTConfig = SFTConfig()
    description: str = ""
    safety: SafetyConfig = SafetyConfig()

    def with_pretrain(self, **changes) -> Profile:
        """A copy with some pre-training settings changed, e.g. `profile.with_pretrain(max_steps=100)`."""
        return dataclasses.replace(self, pretrain=dataclasses.replace(self.pretrain, **changes))

    def with_sft(self, **changes) -> Profile:
        """A copy with some fine-tuning settings changed, e.g. `profile.with_sft(lora=True, epochs=2)`."""
        return dataclasses.replace(self, sft=dataclasses.replace(self.sft, **changes))

    def with_safety(self, **changes) -> Profile:
        """A copy with some safety settings changed, e.g. `profile.with_safety(mix=0.5)`."""
        return dataclasses.replace(self, safety=dataclasses.replace(self.safety, **changes))


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI and tests: a tiny model, a few dozen steps, seconds on a CPU.",
        model=ModelConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=4,
                          intermediate_size=192, max_seq_len=256),
        tokenizer=TokenizerConfig(vocab_size=768),
        corpus=CorpusConfig(bios_per_country=2, qa_per_country=1, stories=60),
        pretrain=TrainConfig(max_steps=150, batch_size=8, seq_len=96, lr=5e-3, warmup_steps=10,
                             eval_every=50, eval_batches=2, log_every=10, checkpoint_every=50),
        sft=SFTConfig(epochs=2.0, per_fact=1, lr=3e-3, lora_lr=1e-2),
        safety=SafetyConfig(n_per_template=2, guard_epochs=2.0, dpo_epochs=0.5, max_new_tokens=16),
    ),
    "classroom": Profile(
        name="classroom",
        description="Default without CUDA: a few-million-parameter model, minutes on 2 CPU cores.",
        model=ModelConfig(hidden_size=256, n_layers=4, n_heads=4, n_kv_heads=4,
                          intermediate_size=768, max_seq_len=256),
        tokenizer=TokenizerConfig(vocab_size=2048),
        corpus=CorpusConfig(bios_per_country=12, qa_per_country=4, stories=300),
        pretrain=TrainConfig(max_steps=480, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=40,
                             eval_every=120, eval_batches=8, log_every=10, checkpoint_every=120),
    ),
    "gpu": Profile(
        name="gpu",
        description="Default with CUDA: a ~100M-parameter model, minutes on one GPU.",
        model=ModelConfig(hidden_size=768, n_layers=12, n_heads=12, n_kv_heads=12,
                          intermediate_size=2048, max_seq_len=512),
        tokenizer=TokenizerConfig(vocab_size=8192),
        corpus=CorpusConfig(bios_per_country=24, qa_per_country=6, stories=6000),
        pretrain=TrainConfig(max_steps=2000, batch_size=64, seq_len=256, lr=1e-3, warmup_steps=100,
                             eval_every=250, eval_batches=16, log_every=25, checkpoint_every=250),
        sft=SFTConfig(epochs=3.0, lr=2e-4, lora_lr=1e-3, batch_size=32, seq_len=256, log_every=10),
    ),
}


def default_profile_name() -> str:
    """`KIT_PROFILE` if set, else `gpu` with CUDA and `classroom` without."""
    name = os.environ.get("KIT_PROFILE", "").strip()
    if name:
        return name
    try:
        import torch

        return "gpu" if torch.cuda.is_available() else "classroom"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "classroom"


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile (or the default one), validated.

    Example:
        >>> get_profile("classroom").name
        'classroom'
    """
    name = name or default_profile_name()
    if name not in PROFILES:
        raise ConfigError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(PROFILES)}. "
            "Set KIT_PROFILE to one of them or pass profile=... explicitly."
        )
    profile = PROFILES[name]
    validate(profile)
    return profile


def _problems_model(m: ModelConfig) -> list[str]:
    out = []
    for f in ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "max_seq_len"):
        if getattr(m, f) <= 0:
            out.append(f"model.{f} must be positive, got {getattr(m, f)}")
    if m.n_heads > 0 and m.hidden_size % m.n_heads:
        out.append(f"model.hidden_size ({m.hidden_size}) must be divisible by model.n_heads ({m.n_heads})")
    if m.n_kv_heads > 0 and m.n_heads % m.n_kv_heads:
        out.append(f"model.n_heads ({m.n_heads}) must be divisible by model.n_kv_heads ({m.n_kv_heads})")
    return out


def _problems_train(t: TrainConfig, prefix: str = "train") -> list[str]:
    out = []
    for f in ("max_steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_batches"):
        if getattr(t, f) <= 0:
            out.append(f"{prefix}.{f} must be positive, got {getattr(t, f)}")
    if not t.lr > 0:
        out.append(f"{prefix}.lr must be positive, got {t.lr}")
    if not 0 <= t.min_lr_ratio <= 1:
        out.append(f"{prefix}.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if t.warmup_steps < 0 or t.warmup_steps > t.max_steps:
        out.append(f"{prefix}.warmup_steps must be in [0, max_steps={t.max_steps}], got {t.warmup_steps}")
    if t.checkpoint_every < 0:
        out.append(f"{prefix}.checkpoint_every must be >= 0 (0 = only at the end), got {t.checkpoint_every}")
    if t.eval_every < 0:
        out.append(f"{prefix}.eval_every must be >= 0 (0 = only at the end), got {t.eval_every}")
    if t.device not in ("auto", "cpu", "cuda"):
        out.append(f"{prefix}.device must be 'auto', 'cpu' or 'cuda', got {t.device!r}")
    if t.nonfinite not in ("stop", "skip"):
        out.append(f"{prefix}.nonfinite must be 'stop' or 'skip', got {t.nonfinite!r}")
    if t.distributed not in ("ddp", "fsdp"):
        out.append(f"{prefix}.distributed must be 'ddp' or 'fsdp', got {t.distributed!r}")
    if t.cpu_threads < 0:
        out.append(f"{prefix}.cpu_threads must be >= 0 (0 = torch's default), got {t.cpu_threads}")
    return out


def _problems_sft(s: SFTConfig, m: ModelConfig) -> list[str]:
    out = []
    for f in ("epochs", "lr", "lora_lr", "lora_r", "lora_alpha", "batch_size", "seq_len", "per_fact", "log_every"):
        if not getattr(s, f) > 0:
            out.append(f"sft.{f} must be positive, got {getattr(s, f)}")
    if s.replay < 0:
        out.append(f"sft.replay must be >= 0, got {s.replay}")
    if s.seq_len > m.max_seq_len:
        out.append(f"sft.seq_len ({s.seq_len}) exceeds model.max_seq_len ({m.max_seq_len})")
    if not 0 <= s.lora_dropout < 1:
        out.append(f"sft.lora_dropout must be in [0, 1), got {s.lora_dropout}")
    return out


def validate(obj: Profile | ModelConfig | TrainConfig) -> None:
    """Raise one `ConfigError` that lists every problem found, or return None.

    Example:
        >>> validate(TrainConfig(lr=-1, batch_size=0))
        Traceback (most recent call last):
        ...
        kit.config.ConfigError: 2 problems in the configuration:
          - train.batch_size must be positive, got 0
          - train.lr must be positive, got -1
    """
    problems: list[str] = []
    if isinstance(obj, Profile):
        problems += _problems_model(obj.model)
        problems += _problems_train(obj.pretrain, "pretrain")
        if obj.tokenizer.vocab_size < 300:
            problems.append("tokenizer.vocab_size must be >= 300 (256 bytes + specials), "
                            f"got {obj.tokenizer.vocab_size}")
        if obj.pretrain.seq_len > obj.model.max_seq_len:
            problems.append(f"pretrain.seq_len ({obj.pretrain.seq_len}) exceeds "
                            f"model.max_seq_len ({obj.model.max_seq_len})")
        problems += _problems_sft(obj.sft, obj.model)
        for f in ("n_per_template", "pairs_per_template", "dpo_beta", "dpo_lr", "dpo_epochs", "dpo_lora_r", "guard_lr",
                  "guard_epochs",
                  "batch_size", "max_new_tokens"):
            if not getattr(obj.safety, f) > 0:
                problems.append(f"safety.{f} must be positive, got {getattr(obj.safety, f)}")
        if obj.safety.dpo_sft_weight < 0:
            problems.append(f"safety.dpo_sft_weight must be >= 0, got {obj.safety.dpo_sft_weight}")
        if obj.safety.mix < 0:
            problems.append(f"safety.mix must be >= 0, got {obj.safety.mix}")
        if not 0 < obj.corpus.val_fraction < 0.5:
            problems.append(f"corpus.val_fraction must be in (0, 0.5), got {obj.corpus.val_fraction}")
    elif isinstance(obj, ModelConfig):
        problems += _problems_model(obj)
    elif isinstance(obj, TrainConfig):
        problems += _problems_train(obj)
    else:
        raise TypeError(f"validate() takes a Profile, ModelConfig or TrainConfig, got {type(obj).__name__}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the configuration:\n{lines}")


def to_dict(obj) -> dict:
    """Plain-JSON form of any config dataclass (used for cache keys and run records)."""
    return dataclasses.asdict(obj)
