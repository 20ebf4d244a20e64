"""The engine's configuration as data: model shape, tokenizer size, a training run, SFT and DPO.

Each is a frozen dataclass; `validate()` lists every problem of one at once. The course groups
them into profiles (`kit.lessons.profiles`); a learner's own run uses them directly.

Example:
    >>> SFTConfig(epochs=2, lora=True).train_config(n_rows=64).max_steps
    8
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import KitError


class ConfigError(KitError, ValueError):
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
class TrainConfig:
    """One training run of `kit.engine.train.train` (pre-training, SFT and DPO)."""

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
    # how the run executes (none of these changes what a healthy run computes; see kit/engine/train.py)
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

    epochs: float = 3.0              # passes over the training data
    lr: float = 5e-4                 # learning rate of full fine-tuning
    lora: bool = False               # train LoRA adapters instead of every weight
    lora_lr: float = 5e-3            # learning rate of the adapters: LoRA trains few weights, a larger step suits it
    lora_r: int = 16                 # LoRA rank (adapter width)
    lora_alpha: int = 32             # LoRA scale: the adapter's update is multiplied by alpha / r
    lora_dropout: float = 0.0        # dropout on the adapters' input
    lora_targets: tuple[str, ...] = ()  # () = every linear layer of the blocks (`kit.engine.models.lora_targets`)
    lora_layers: int = 0             # 0 = adapters in every block; k = in the last k blocks only (the backward pass
                                     # then stops at the first adapted block: faster, and the earlier blocks untouched)
    batch_size: int = 16             # rows per optimizer step
    seq_len: int = 128               # tokens per training row (longer examples are cut)
    warmup_ratio: float = 0.05       # share of the steps over which the learning rate rises from 0
    replay: float = 0.5              # plain-text documents mixed in, per chat example (against forgetting)
    first_token_weight: float = 1.0  # loss weight of each reply's first token (where it decides to help or refuse)
    eval_every: int = 0              # validation-loss interval in steps (0: once per epoch)
    log_every: int = 5               # steps between two logged training losses
    seed: int = 0                    # data order, adapters' initialisation, replay sample
    max_steps: int = 0               # optimizer steps; 0: `epochs` passes over the data (set it to compare
                                     # runs on different data at equal steps)

    def train_config(self, n_rows: int, device: str = "auto") -> TrainConfig:
        """The TrainConfig of this SFT run for a dataset of `n_rows` packed rows."""
        steps_per_epoch = max(1, n_rows // self.batch_size)
        steps = self.max_steps or max(1, round(self.epochs * steps_per_epoch))
        return TrainConfig(
            max_steps=steps, batch_size=self.batch_size, seq_len=self.seq_len,
            lr=self.lora_lr if self.lora else self.lr, min_lr_ratio=0.1,
            warmup_steps=min(steps, max(1, round(self.warmup_ratio * steps))), weight_decay=0.0,
            eval_every=self.eval_every or steps_per_epoch, eval_batches=4, log_every=min(self.log_every, steps),
            seed=self.seed, device=device)


@dataclass(frozen=True)
class DPOConfig:
    """Preference tuning (`kit.engine.dpo.dpo`): a LoRA adapter trained on chosen/rejected pairs."""

    beta: float = 0.1                # how far DPO may move from the reference model
    lr: float = 1e-3                 # learning rate of the adapters
    epochs: float = 1.0              # passes over the pairs
    lora_r: int = 16                 # LoRA rank (adapter width)
    lora_layers: int = 0             # 0 = adapters in every block; k = in the last k blocks only
    sft_weight: float = 1.0          # SFT anchor on the chosen reply (0 = plain DPO)
    batch_size: int = 16             # pairs per optimizer step
    seed: int = 0                    # pair order, adapters' initialisation


def problems_model(m: ModelConfig, prefix: str = "model") -> list[str]:
    out = []
    for f in ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "max_seq_len"):
        if not _positive(getattr(m, f)):
            out.append(_not_positive(prefix, f, getattr(m, f)))
    out += _whole_problems(m, ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size",
                               "max_seq_len"), prefix)
    if _positive(m.n_heads) and _positive(m.hidden_size) and m.hidden_size % m.n_heads:
        out.append(f"{prefix}.hidden_size ({m.hidden_size}) must be divisible by {prefix}.n_heads ({m.n_heads})")
    if _positive(m.n_kv_heads) and _positive(m.n_heads) and m.n_heads % m.n_kv_heads:
        out.append(f"{prefix}.n_heads ({m.n_heads}) must be divisible by {prefix}.n_kv_heads ({m.n_kv_heads})")
    return out


def _whole_problems(obj, fields: tuple[str, ...], prefix: str) -> list[str]:
    """Fields that count things (steps, rows, ranks) must be whole numbers: 8.5 rows is refused, not rounded."""
    return [f"{prefix}.{f} must be a whole number, got {getattr(obj, f)!r}" for f in fields
            if isinstance(getattr(obj, f), float) and math.isfinite(getattr(obj, f))]


def _count_problems(obj, fields: tuple[str, ...], prefix: str, zero: str) -> list[str]:
    """Fields that are a count >= 0 (an int, not a bool)."""
    def ok(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    return [f"{prefix}.{f} must be an integer >= 0 ({zero}), got {getattr(obj, f)!r}" for f in fields
            if not ok(getattr(obj, f))]


def _not_positive(prefix: str, f: str, v) -> str:
    finite = "finite " if isinstance(v, float) and not math.isfinite(v) else ""
    return f"{prefix}.{f} must be a {finite}positive number, got {v!r}"


def _positive(v) -> bool:
    """A finite number above zero (True/False and NaN are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _in(v, lo: float, hi: float, hi_open: bool = False) -> bool:
    ok_type = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return ok_type and lo <= v and (v < hi if hi_open else v <= hi)


def problems_train(t: TrainConfig, prefix: str = "train") -> list[str]:
    out = []
    for f in ("max_steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_batches", "lr"):
        if not _positive(getattr(t, f)):
            out.append(_not_positive(prefix, f, getattr(t, f)))
    out += _whole_problems(t, ("max_steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_batches",
                               "warmup_steps", "checkpoint_every", "eval_every", "cpu_threads"), prefix)
    if not _in(t.min_lr_ratio, 0, 1):
        out.append(f"{prefix}.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio!r}")
    if _positive(t.max_steps) and not _in(t.warmup_steps, 0, t.max_steps):
        out.append(f"{prefix}.warmup_steps must be in [0, max_steps={t.max_steps}], got {t.warmup_steps!r}")
    for f, what in (("checkpoint_every", "0 = only at the end"), ("eval_every", "0 = only at the end"),
                    ("cpu_threads", "0 = torch's default"), ("weight_decay", "0 = none"), ("grad_clip", "0 = none")):
        if not _in(getattr(t, f), 0, math.inf, hi_open=True):
            out.append(f"{prefix}.{f} must be >= 0 ({what}), got {getattr(t, f)!r}")
    for f, allowed in (("device", ("auto", "cpu", "cuda")), ("nonfinite", ("stop", "skip")),
                       ("distributed", ("ddp", "fsdp"))):
        if getattr(t, f) not in allowed:
            out.append(f"{prefix}.{f} must be one of {', '.join(map(repr, allowed))}, got {getattr(t, f)!r}")
    return out


def problems_sft(s: SFTConfig, max_seq_len: int | None = None, prefix: str = "sft") -> list[str]:
    out = []
    for f in ("epochs", "lr", "lora_lr", "lora_r", "lora_alpha", "batch_size", "seq_len", "log_every",
              "first_token_weight"):
        if not _positive(getattr(s, f)):
            out.append(_not_positive(prefix, f, getattr(s, f)))
    out += _whole_problems(s, ("lora_r", "lora_alpha", "batch_size", "seq_len", "log_every", "eval_every"), prefix)
    out += _count_problems(s, ("lora_layers",), prefix, "0 = every block")
    for f in ("replay", "warmup_ratio", "eval_every"):
        if not _in(getattr(s, f), 0, math.inf, hi_open=True):
            out.append(f"{prefix}.{f} must be >= 0, got {getattr(s, f)!r}")
    if not (isinstance(s.max_steps, int) and not isinstance(s.max_steps, bool) and s.max_steps >= 0):
        out.append(f"{prefix}.max_steps must be an integer >= 0 (0 = from epochs), got {s.max_steps!r}")
    if max_seq_len is not None and _positive(s.seq_len) and s.seq_len > max_seq_len:
        out.append(f"{prefix}.seq_len ({s.seq_len}) exceeds model.max_seq_len ({max_seq_len})")
    if not _in(s.lora_dropout, 0, 1, hi_open=True):
        out.append(f"{prefix}.lora_dropout must be in [0, 1), got {s.lora_dropout!r}")
    if not isinstance(s.lora, bool):
        out.append(f"{prefix}.lora must be True or False, got {s.lora!r}")
    return out


def problems_dpo(d: DPOConfig, prefix: str = "dpo") -> list[str]:
    out = [_not_positive(prefix, f, getattr(d, f))
           for f in ("beta", "lr", "epochs", "lora_r", "batch_size") if not _positive(getattr(d, f))]
    out += _whole_problems(d, ("lora_r", "batch_size"), prefix)
    out += _count_problems(d, ("lora_layers",), prefix, "0 = every block")
    if not _in(d.sft_weight, 0, math.inf, hi_open=True):
        out.append(f"{prefix}.sft_weight must be >= 0 (0 = plain DPO), got {d.sft_weight!r}")
    return out


def raise_problems(problems: list[str]) -> None:
    """Raise one `ConfigError` listing every problem (nothing when the list is empty)."""
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the configuration:\n{lines}")


def validate(obj) -> None:
    """Raise one `ConfigError` that lists every problem found, or return None.

    Takes a ModelConfig, TrainConfig, SFTConfig or DPOConfig (a course Profile has its own
    `kit.lessons.profiles.validate_profile`).

    Example:
        >>> validate(TrainConfig(lr=-1, batch_size=0))
        Traceback (most recent call last):
        ...
        kit.engine.config.ConfigError: 2 problems in the configuration:
          - train.batch_size must be a positive number, got 0
          - train.lr must be a positive number, got -1
    """
    checks = {ModelConfig: problems_model, TrainConfig: problems_train, SFTConfig: problems_sft,
              DPOConfig: problems_dpo}
    for kind, fn in checks.items():
        if isinstance(obj, kind):
            return raise_problems(fn(obj))
    raise TypeError(f"validate() takes a ModelConfig, TrainConfig, SFTConfig or DPOConfig, got {type(obj).__name__}")


def to_dict(obj) -> dict:
    """Plain-JSON form of any config dataclass (used for cache keys and run records)."""
    return dataclasses.asdict(obj)
