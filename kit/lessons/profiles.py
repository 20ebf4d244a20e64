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
class RealConfig:
    """The real chat model of notebooks 01, 03, 04 and 06, and notebook 03's and 06's fine-tuning of it."""

    model: str = "smollm2"           # a packaged model (`kit.engine.packaged`), a folder or a hub id
    layers: int | None = None        # packaged models: keep the first blocks only (2: the fast stand-in of CI)
    sft: SFTConfig = SFTConfig(lora=True, lora_lr=5e-4, epochs=1.0, replay=0.0, seq_len=256, batch_size=4,
                               log_every=2)
    replay: int = 48                 # notebook 03: the model's own answers to this many everyday requests are
                                     # mixed into its new task's data, against forgetting (0: none)
    knowledge_items: int | None = None  # questions of the general-knowledge probe (None: all 105)


@dataclass(frozen=True)
class GuardConfig:
    """The guard of notebook 04: a linear probe on the chat model's hidden states (`kit.lessons.guard`)."""

    layer: int = 16                  # it reads the hidden states after this block
    per_template: int = 3            # training prompts per template (prompts only: no reply to generate)
    epochs: float = 30.0             # the probe is one small matrix: many cheap epochs
    lr: float = 3e-3
    threshold: float = 0.6           # a text is flagged harmful when that probability is above this
    screen_replies: bool = False     # also screen the chat's replies (an output filter), not only the prompts


@dataclass(frozen=True)
class SafetyConfig:
    """Notebook 04 on the real chat model: the safety data, LoRA safety SFT, DPO and the guard."""

    n_per_template: int = 1          # training prompts per harmful template (each answered by the model first)
    safe_per_template: int = 1       # ... per safe look-alike template (there are more safe templates than harmful)
    eval_per_template: int = 1       # prompts per template in the evaluation sets
    max_prompts: int = 0             # cap on every prompt set, a balanced sample (0: no cap; the smoke profile's)
    own_tokens: int = 24             # the model's own replies (its help, and its compliance): new tokens, then cut
                                     # at the last sentence end
    everyday: int = 24               # everyday requests (datasets/everyday_requests.txt) whose own answers join the
                                     # SFT data as help: the model keeps answering ordinary questions
    sft: SFTConfig = SFTConfig(lora=True, lora_lr=1e-3, epochs=2.0, replay=0.0, seq_len=256, batch_size=4,
                               lora_layers=8, first_token_weight=5.0, log_every=2)
    dpo: DPOConfig = DPOConfig(beta=0.1, lr=1e-3, epochs=1.0, lora_r=16, lora_layers=8, sft_weight=1.0, batch_size=8)
    dpo_pairs: int = 64              # DPO learns from this many pairs, half harmful and half safe (0: all of them)
    guard: GuardConfig = GuardConfig()
    max_new_tokens: int = 16         # replies to the evaluation prompts (a refusal shows in the first words)
    seed: int = 0


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
    real: RealConfig = RealConfig()
    feedback: DPOConfig = DPOConfig()  # notebook 05's feedback round (DPO on rated pairs, the kit's own model)

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
        """A validated copy with some safety settings changed, e.g. `profile.with_safety(dpo={"beta": 0.5})`
        (a nested setting takes a dict of its own changes)."""
        return self._copy(safety=_replace(self.safety, "safety", changes))

    def with_real(self, **changes) -> Profile:
        """A validated copy with other real-model settings, e.g. `profile.with_real(sft={"epochs": 1})`."""
        return self._copy(real=_replace(self.real, "real", changes))

    def with_model(self, **changes) -> Profile:
        """A validated copy with another model shape, e.g. `profile.with_model(n_layers=2)`."""
        return self._copy(model=_replace(self.model, "model", changes))

    def with_tokenizer(self, **changes) -> Profile:
        """A validated copy with another tokenizer size, e.g. `profile.with_tokenizer(vocab_size=512)`."""
        return self._copy(tokenizer=_replace(self.tokenizer, "tokenizer", changes))

    def reseeded(self, seed: int) -> Profile:
        """A copy whose every seed is shifted by `seed`: the base model's initialisation and data order, the
        fine-tunings' data order and phrasings, the safety stages' and the feedback round's. It stands in for
        another machine (another CPU sums floats in another order and gets another base model); seed 0 is the
        profile itself. The corpus stays the same text."""
        if not seed:
            return self
        plus = lambda c: dataclasses.replace(c, seed=c.seed + seed)  # noqa: E731
        return self._copy(pretrain=plus(self.pretrain), sft=plus(self.sft), feedback=plus(self.feedback),
                          safety=plus(self.safety), real=dataclasses.replace(self.real, sft=plus(self.real.sft)))

    def with_corpus(self, **changes) -> Profile:
        """A validated copy with another pre-training corpus, e.g. `profile.with_corpus(qa_per_country=0)`."""
        return self._copy(corpus=_replace(self.corpus, "corpus", changes))


def _replace(obj, name: str, changes: dict):
    """A copy of a settings dataclass with `changes`; a nested settings object takes a dict of its own changes."""
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(f"unknown {name} setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                          f"(valid: {', '.join(sorted(fields))})")
    nested = {k: _replace(getattr(obj, k), f"{name}.{k}", v) for k, v in changes.items()
              if isinstance(v, dict) and dataclasses.is_dataclass(getattr(obj, k))}
    return dataclasses.replace(obj, **{**changes, **nested})


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
        feedback=DPOConfig(epochs=0.5),
        real=RealConfig(layers=2, knowledge_items=24, replay=8,
                        sft=SFTConfig(lora=True, lora_lr=3e-3, epochs=1.0, replay=0.0, seq_len=256, batch_size=8,
                                      log_every=2)),
        safety=SafetyConfig(max_prompts=24, max_new_tokens=12, own_tokens=16, everyday=8,
                            guard=GuardConfig(layer=2, per_template=1),
                            sft=SFTConfig(lora=True, lora_lr=3e-3, epochs=1.0, replay=0.0, seq_len=256, batch_size=8,
                                          log_every=2),
                            dpo=DPOConfig(lr=3e-3, epochs=0.5, batch_size=8)),
    ),
    "classroom": Profile(
        name="classroom",
        description="Default without CUDA: a few-million-parameter model, minutes on 2 CPU cores.",
        model=PRESETS["classroom"],
        tokenizer=TokenizerConfig(vocab_size=2048),
        corpus=CorpusConfig(bios_per_country=12, qa_per_country=4, stories=300),
        pretrain=TrainConfig(max_steps=480, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=40,
                             eval_every=120, eval_batches=8, log_every=10, checkpoint_every=120),
        # notebook 03's epoch curve: a third epoch added nothing on dev. Full fine-tuning at 1e-3, not the engine's
        # 5e-4: at 5e-4 a run can stop inside the dip after the first epoch (answers about training countries),
        # as on KIT_SEED=3 (dev QA strict 0.068 against 0.659 at 1e-3); bench/seeds-classroom.json, 2026-12-06
        sft=CourseSFTConfig(epochs=2.0, lr=1e-3),
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
        safety=SafetyConfig(n_per_template=2, eval_per_template=2, own_tokens=48, max_new_tokens=32),
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
    profile = PROFILES[name].reseeded(seed_offset())
    validate_profile(profile)
    return profile


def seed_offset() -> int:
    """`KIT_SEED` (default 0): every named profile comes `reseeded` by it (`bench/seeds.py` runs the course over
    several, for the spread a class on other machines will see)."""
    text = os.environ.get("KIT_SEED", "").strip() or "0"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"KIT_SEED must be a whole number, got {text!r}: unset it, or set e.g. KIT_SEED=1") from None


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
    for f in ("everyday", "dpo_pairs"):
        v = getattr(s, f)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            problems.append(f"safety.{f} must be an integer >= 0, got {v!r}")
    for f, v in [*((f, getattr(s, f)) for f in ("n_per_template", "safe_per_template", "eval_per_template",
                                                "own_tokens", "max_new_tokens")),
                 *((f"guard.{f}", getattr(s.guard, f)) for f in ("layer", "per_template", "epochs", "lr"))]:
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != float("inf")):
            problems.append(f"safety.{f} must be a positive number, got {v!r}")
    if not (isinstance(s.guard.threshold, (int, float)) and 0 < s.guard.threshold < 1):
        problems.append(f"safety.guard.threshold must be a number between 0 and 1, got {s.guard.threshold!r}")
    if not (isinstance(s.max_prompts, int) and not isinstance(s.max_prompts, bool) and s.max_prompts >= 0):
        problems.append(f"safety.max_prompts must be an integer >= 0 (0: no cap), got {s.max_prompts!r}")
    problems += problems_sft(s.sft, prefix="safety.sft") + problems_dpo(s.dpo, prefix="safety.dpo")
    problems += problems_sft(p.real.sft, prefix="real.sft") + problems_dpo(p.feedback, prefix="feedback")
    if not (isinstance(p.real.replay, int) and not isinstance(p.real.replay, bool) and p.real.replay >= 0):
        problems.append(f"real.replay must be an integer >= 0, got {p.real.replay!r}")
    if p.real.layers is not None and not (isinstance(p.real.layers, int) and p.real.layers >= 1):
        problems.append(f"real.layers must be None (every block) or an integer >= 1, got {p.real.layers!r}")
    c = p.corpus
    for f in ("bios_per_country", "qa_per_country", "stories"):
        if not (isinstance(getattr(c, f), int) and getattr(c, f) >= 0):
            problems.append(f"corpus.{f} must be an integer >= 0, got {getattr(c, f)!r}")
    if not (isinstance(c.val_fraction, float) and 0 < c.val_fraction < 0.5):
        problems.append(f"corpus.val_fraction must be in (0, 0.5), got {c.val_fraction!r}")
    raise_problems(problems)
