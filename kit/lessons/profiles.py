"""The course's profiles: one `Profile` holds every setting of one size of the course.

A profile is data (a frozen dataclass in `PROFILES`); nothing else in the kit branches on its name.
`KIT_PROFILE=smoke|classroom|gpu` picks one; without it the kit takes `gpu` when CUDA is present and
`classroom` otherwise. `profile.with_sft(epochs=1)` (and the other `with_*`) give a validated copy.

Example:
    >>> get_profile("smoke").model.n_layers
    2
    >>> get_profile("smoke").with_sft(epochs=-1)
    Traceback (most recent call last):
    ...
    kit.engine.config.ConfigError: 1 problem in the configuration:
      - sft.epochs must be a positive number, got -1
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..engine.config import (
    ConfigError,
    DPOConfig,
    ModelConfig,
    SFTConfig,
    TokenizerConfig,
    TrainConfig,
    problems_dpo,
    problems_model,
    problems_sft,
    problems_train,
    raise_problems,
)
from ..engine.models import PRESETS
from ..world.corpus import CorpusConfig


@dataclass(frozen=True)
class CourseSFTConfig(SFTConfig):
    """The engine's SFT settings plus how the course generates its chat data."""

    per_fact: int = 2                # phrasings per fact in the generated training examples


@dataclass(frozen=True)
class SafetyConfig:
    """Notebook 04: the safety data mix, preference tuning (DPO) and the guard classifier."""

    n_per_template: int = 12         # distinct prompts drawn per training template
    mix: float | None = None         # safety SFT: safety examples per chat example; None: each prompt of the pool once
    sft_lr: float = 3e-4             # safety SFT: notebook 03's model, fully fine-tuned further
    sft_epochs: float = 3.0
    first_token_weight: float = 15.0  # loss weight of each chat reply's first token: where it helps or refuses
    replay_docs: int = 1200          # pre-training documents mixed into safety SFT (against forgetting)
    dpo_beta: float = 0.1            # how far DPO may move from the reference model
    dpo_lr: float = 1e-3             # DPO trains a LoRA adapter
    dpo_epochs: float = 1.0
    dpo_lora_r: int = 16
    dpo_sft_weight: float = 1.0      # SFT anchor on the chosen reply (0 = plain DPO)
    pairs_per_template: int = 2      # DPO: preference pairs drawn per training template
    guard_per_template: int = 6      # the guard: distinct prompts (and replies) per training template
    guard_lr: float = 1e-3           # the guard: the base model with a 3-way head, fully fine-tuned
    guard_epochs: float = 3.0
    batch_size: int = 16
    max_new_tokens: int = 32         # replies to safety prompts (a refusal shows in the first words)
    seed: int = 0

    def dpo_config(self) -> DPOConfig:
        """The engine's DPOConfig of this safety stage."""
        return DPOConfig(beta=self.dpo_beta, lr=self.dpo_lr, epochs=self.dpo_epochs, lora_r=self.dpo_lora_r,
                         sft_weight=self.dpo_sft_weight, batch_size=self.batch_size, seed=self.seed)


@dataclass(frozen=True)
class Profile:
    """Everything one setting of the course needs, from tokenizer to training budget."""

    name: str
    model: ModelConfig
    tokenizer: TokenizerConfig
    corpus: CorpusConfig
    pretrain: TrainConfig
    sft: CourseSFTConfig = CourseSFTConfig()
    description: str = ""
    safety: SafetyConfig = SafetyConfig()

    def _copy(self, **parts) -> Profile:
        prof = dataclasses.replace(self, **parts)
        validate_profile(prof)
        return prof

    def with_pretrain(self, **changes) -> Profile:
        """A validated copy with some pre-training settings changed, e.g. `profile.with_pretrain(max_steps=100)`."""
        return self._copy(pretrain=_replace(self.pretrain, "pretrain", changes))

    def with_sft(self, **changes) -> Profile:
        """A validated copy with some fine-tuning settings changed, e.g. `profile.with_sft(lora=True, epochs=2)`."""
        return self._copy(sft=_replace(self.sft, "sft", changes))

    def with_safety(self, **changes) -> Profile:
        """A validated copy with some safety settings changed, e.g. `profile.with_safety(mix=0.5)`."""
        return self._copy(safety=_replace(self.safety, "safety", changes))

    def with_model(self, **changes) -> Profile:
        """A validated copy with another model shape, e.g. `profile.with_model(n_layers=2)`."""
        return self._copy(model=_replace(self.model, "model", changes))

    def with_tokenizer(self, **changes) -> Profile:
        """A validated copy with another tokenizer size, e.g. `profile.with_tokenizer(vocab_size=512)`."""
        return self._copy(tokenizer=_replace(self.tokenizer, "tokenizer", changes))

    def with_corpus(self, **changes) -> Profile:
        """A validated copy with another pre-training corpus, e.g. `profile.with_corpus(qa_per_country=0)`."""
        return self._copy(corpus=_replace(self.corpus, "corpus", changes))


def _replace(obj, name: str, changes: dict):
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"unknown {name} setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                          f"(valid: {', '.join(sorted(fields))})")
    return dataclasses.replace(obj, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI and tests: a tiny model, a few dozen steps, seconds on a CPU.",
        model=PRESETS["smoke"],
        tokenizer=TokenizerConfig(vocab_size=768),
        corpus=CorpusConfig(bios_per_country=2, qa_per_country=1, stories=60),
        pretrain=TrainConfig(max_steps=150, batch_size=8, seq_len=96, lr=5e-3, warmup_steps=10,
                             eval_every=50, eval_batches=2, log_every=10, checkpoint_every=50),
        sft=CourseSFTConfig(epochs=2.0, per_fact=1, lr=3e-3, lora_lr=1e-2),
        safety=SafetyConfig(n_per_template=2, guard_per_template=2, guard_epochs=2.0, dpo_epochs=0.5,
                            max_new_tokens=16, sft_lr=3e-3, sft_epochs=2.0, replay_docs=40),
    ),
    "classroom": Profile(
        name="classroom",
        description="Default without CUDA: a few-million-parameter model, minutes on 2 CPU cores.",
        model=PRESETS["classroom"],
        tokenizer=TokenizerConfig(vocab_size=2048),
        corpus=CorpusConfig(bios_per_country=12, qa_per_country=4, stories=300),
        pretrain=TrainConfig(max_steps=480, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=40,
                             eval_every=120, eval_batches=8, log_every=10, checkpoint_every=120),
        sft=CourseSFTConfig(epochs=2.0),  # notebook 03's epoch curve: a third epoch added nothing on dev
    ),
    "gpu": Profile(
        name="gpu",
        description="Default with CUDA: a ~100M-parameter model, minutes on one GPU.",
        model=PRESETS["gpu"],
        tokenizer=TokenizerConfig(vocab_size=8192),
        corpus=CorpusConfig(bios_per_country=24, qa_per_country=6, stories=6000),
        pretrain=TrainConfig(max_steps=2000, batch_size=64, seq_len=256, lr=1e-3, warmup_steps=100,
                             eval_every=250, eval_batches=16, log_every=25, checkpoint_every=250),
        sft=CourseSFTConfig(epochs=3.0, lr=2e-4, lora_lr=1e-3, batch_size=32, seq_len=256, log_every=10),
    ),
}


def default_profile_name() -> str:
    """`KIT_PROFILE` if set, else `gpu` with CUDA and `classroom` without."""
    name = os.environ.get("KIT_PROFILE", "").strip()
    if name:
        return name
    import torch

    return "gpu" if torch.cuda.is_available() else "classroom"


def get_profile(name: str | Profile | None = None) -> Profile:
    """Return the named profile (or the default one), validated; a Profile is validated and returned.

    Example:
        >>> get_profile("classroom").name
        'classroom'
    """
    if isinstance(name, Profile):
        validate_profile(name)
        return name
    name = name or default_profile_name()
    if name not in PROFILES:
        raise ConfigError(
            f"Unknown profile {name!r}. Valid profiles: {', '.join(PROFILES)}. "
            "Set KIT_PROFILE to one of them or pass profile=... explicitly."
        )
    profile = PROFILES[name]
    validate_profile(profile)
    return profile


def validate_profile(p: Profile) -> None:
    """Raise one `ConfigError` listing every problem of a profile (model, corpus, every stage)."""
    problems = problems_model(p.model) + problems_train(p.pretrain, "pretrain")
    if not (isinstance(p.tokenizer.vocab_size, int) and p.tokenizer.vocab_size >= 300):
        problems.append(f"tokenizer.vocab_size must be an integer >= 300 (256 bytes + specials), "
                        f"got {p.tokenizer.vocab_size!r}")
    if isinstance(p.pretrain.seq_len, int) and isinstance(p.model.max_seq_len, int) \
            and p.pretrain.seq_len > p.model.max_seq_len:
        problems.append(f"pretrain.seq_len ({p.pretrain.seq_len}) exceeds model.max_seq_len ({p.model.max_seq_len})")
    max_len = p.model.max_seq_len if isinstance(p.model.max_seq_len, int) else None
    problems += problems_sft(p.sft, max_len)
    if not (isinstance(p.sft.per_fact, int) and p.sft.per_fact > 0):
        problems.append(f"sft.per_fact must be a positive integer, got {p.sft.per_fact!r}")
    s = p.safety
    for f in ("n_per_template", "guard_per_template", "pairs_per_template", "guard_lr", "guard_epochs",
              "max_new_tokens", "sft_lr", "sft_epochs", "first_token_weight"):
        v = getattr(s, f)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != float("inf")):
            problems.append(f"safety.{f} must be a positive number, got {v!r}")
    if not (isinstance(s.replay_docs, int) and not isinstance(s.replay_docs, bool) and s.replay_docs >= 0):
        problems.append(f"safety.replay_docs must be an integer >= 0, got {s.replay_docs!r}")
    mix_is_number = isinstance(s.mix, (int, float)) and not isinstance(s.mix, bool)
    if not (s.mix is None or mix_is_number and 0 <= s.mix < float("inf")):
        problems.append(f"safety.mix must be a number >= 0, or None (each safety prompt once), got {s.mix!r}")
    problems += [q.replace("dpo.", "safety.dpo_", 1).replace("safety.dpo_batch_size", "safety.batch_size")
                 for q in problems_dpo(s.dpo_config())]
    c = p.corpus
    for f in ("bios_per_country", "qa_per_country", "stories"):
        if not (isinstance(getattr(c, f), int) and getattr(c, f) >= 0):
            problems.append(f"corpus.{f} must be an integer >= 0, got {getattr(c, f)!r}")
    if not (isinstance(c.val_fraction, float) and 0 < c.val_fraction < 0.5):
        problems.append(f"corpus.val_fraction must be in (0, 0.5), got {c.val_fraction!r}")
    raise_problems(problems)
