"""The training loop: one function, `train()`, used for pre-training, fine-tuning and DPO.

What the loop does, step by step:
  1. draw `grad_accum` micro-batches from the data (reshuffled, seeded, every epoch);
  2. count the loss units of all of them (tokens; pairs for DPO: `data.count(batch)`), so every
     unit weighs the same whatever the split into micro-batches (1 x 8 and 8 x 1 give one update);
  3. forward + backward each micro-batch with loss = (sum of unit losses) / (all units of the step);
  4. clip the gradient norm, step AdamW and the warmup + cosine learning-rate schedule;
  5. every `log_every` steps read the loss (one host sync), every `eval_every` steps measure the
     validation loss, every `checkpoint_every` steps save, and tell the callbacks.
Around it, small guards: a NaN/inf loss or gradient stops the run (or skips the step), keeping the
last good checkpoint; an out-of-memory error halves the micro-batch and doubles the accumulation.
Under torchrun the same function runs data-parallel (see `kit/engine/distributed.py`).
An objective is a function `objective(model, batch) -> (sum of unit losses, n units)`.

Example:
    >>> import torch
    >>> from kit.engine.config import TrainConfig
    >>> from kit.engine.models import PRESETS, create
    >>> rows = TokenRows(torch.randint(0, 50, (4000,)), seq_len=16)
    >>> model = create(PRESETS["smoke"], vocab_size=50)
    >>> hist = train(model, rows, TrainConfig(max_steps=3, batch_size=4, seq_len=16, warmup_steps=1))
    >>> len(hist.losses) >= 1
    True
"""

from __future__ import annotations

import math
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint, distributed
from .config import TrainConfig, validate
from .errors import KitError

IGNORE = -100  # label value that carries no loss


# ----------------------------------------------------------------------------- data
class TokenRows:
    """A token stream cut into rows of `seq_len + 1` tokens; row i gives inputs and next-token labels."""

    def __init__(self, tokens: torch.Tensor | Sequence[int], seq_len: int):
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        n = (len(tokens) - 1) // seq_len
        if n < 1:
            raise ValueError(f"{len(tokens)} tokens are too few for one row of seq_len={seq_len}")
        self.seq_len = seq_len
        self.rows = tokens[: n * seq_len + 1]

    def __len__(self) -> int:
        return (len(self.rows) - 1) // self.seq_len

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.rows[i * self.seq_len: (i + 1) * self.seq_len + 1]  # (T+1,)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = torch.stack(items)  # (B, T+1)
        return {"input_ids": x[:, :-1], "labels": x[:, 1:]}  # labels are already shifted


def batches(data, batch_size: int, seed: int, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless micro-batches; each epoch is a new seeded permutation; the last partial batch is dropped.

    `skip` micro-batches are jumped over without being built (a resumed run continues mid-epoch).
    """
    if len(data) < batch_size:
        raise ValueError(f"the dataset has {len(data)} rows, fewer than batch_size={batch_size}: "
                         "lower batch_size or add data")
    per_epoch = len(data) // batch_size
    epoch, offset = divmod(skip, per_epoch)
    while True:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for b in range(offset, per_epoch):
            yield data.collate([data[j] for j in order[b * batch_size: (b + 1) * batch_size]])
        epoch, offset = epoch + 1, 0


# ----------------------------------------------------------------------------- objectives
_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (decoder, head) or None, checked once


def _sharded(model) -> bool:
    """True for a model wrapped or sharded for several processes (FSDP): its parts must run through the wrapper."""
    name = type(model).__name__
    param = next(model.parameters(), None)
    return "FSDP" in name or "FullySharded" in name or type(param).__name__ == "DTensor"


def split_head(model):
    """(decoder, output layer) of a causal LM whose logits are `head(decoder(...).last_hidden_state)`, or None.

    Checked once per model on a short input (a model that scales or caps its logits, or a model wrapped for
    data-parallel training, gets None). With the split, the loss computes logits only where a label is: in
    SFT most tokens are prompt, and a vocabulary of 50,000 makes the output layer a large share of the work.
    """
    if model in _HEADS:
        return _HEADS[model]
    found = None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: the wrapped model
    wrapped = isinstance(model, torch.nn.parallel.DistributedDataParallel) or _sharded(model)
    decoder = base.get_decoder() if hasattr(base, "get_decoder") and not wrapped else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is not None and decoder is not base and head is not None:
        device = next(model.parameters()).device
        ids = torch.arange(1, 9, device=device)[None] % max(2, head.weight.shape[0])  # (1, 8)
        try:
            with eval_mode(model), _autocast(device):  # eval mode: dropout would make the two passes differ
                whole = model(input_ids=ids).logits.float()
                parts = head(decoder(input_ids=ids).last_hidden_state).float()
            if parts.shape == whole.shape and torch.allclose(parts, whole, rtol=1e-3, atol=1e-3):
                found = (decoder, head)
        except (TypeError, AttributeError, RuntimeError):  # a model whose parts do not run on their own
            found = None
    _HEADS[model] = found
    return found


def labelled_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the labelled positions (K, V), float32; where those are: a (B, T) bool mask).

    The output layer runs only on the K positions that carry a label (`split_head`); otherwise the whole
    forward pass gives every position's logits and they are selected after.
    """
    keep = batch["labels"] != IGNORE  # (B, T)
    args = dict(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"))
    parts = split_head(model)
    if parts is None:
        return model(**args).logits[keep].float(), keep
    decoder, head = parts
    hidden = decoder(**args).last_hidden_state  # (B, T, C)
    return head(hidden[keep]).float(), keep  # (K, V)


def token_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token next-token cross-entropy (B*T,), 0 where IGNORE; the labels (B*T,)) of a batch, unweighted."""
    logits, keep = labelled_logits(model, batch)  # (K, V), (B, T)
    labels = batch["labels"].flatten()  # (B*T,), already aligned with the logits
    losses = torch.zeros(labels.shape, dtype=logits.dtype, device=logits.device)
    losses[keep.flatten()] = F.cross_entropy(logits, labels[keep.flatten()], reduction="none")
    return losses, labels


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over every label that is not IGNORE.

    Also the SFT objective: packed chat rows carry IGNORE outside the assistant replies, their own
    `position_ids`, and a (B, 1, T, T) block-diagonal `attention_mask`.
    """
    if "weights" in batch:  # per-token loss weights (e.g. the first token of each reply counted more)
        per_token, labels = token_losses(model, batch)
        return (per_token * batch["weights"].flatten()).sum(), (labels != IGNORE).sum()
    logits, keep = labelled_logits(model, batch)
    return F.cross_entropy(logits, batch["labels"][keep], reduction="sum"), keep.sum()


# ----------------------------------------------------------------------------- the loop
@dataclass
class History:
    """What a run did, as plain lists (JSON-ready)."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    stopped: bool = False
    skipped: int = 0                                  # non-finite steps skipped (nonfinite="skip")
    notes: list[str] = field(default_factory=list)   # what the guards did (out-of-memory back-off, skips)
    metrics: list[dict] = field(default_factory=list)  # the objective's own figures per log step (e.g. DPO rewards)

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA GPU: use device='auto' or 'cpu'")
    return torch.device(name)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to `min_lr_ratio` at `max_steps`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms or biases); fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Evaluation mode without gradients for the block, then the model's mode as it was before.

    Example:
        >>> with eval_mode(model):               # doctest: +SKIP
        ...     logits = model(input_ids=ids).logits
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def evaluate_loss(model, data, cfg: TrainConfig, objective: Callable = causal_lm_loss) -> float:
    """Mean loss per token over the first `eval_batches` batches of `data` (fixed order)."""
    device = next(model.parameters()).device
    total, n = torch.zeros((), device=device), torch.zeros((), device=device)
    bs = min(cfg.batch_size, len(data))
    with eval_mode(model):
        for i in range(0, min(len(data), bs * cfg.eval_batches) - bs + 1, bs):
            batch = {k: v.to(device) for k, v in data.collate([data[j] for j in range(i, i + bs)]).items()}
            with _autocast(device):
                loss, k = objective(model, batch)
            total, n = total + loss.float(), n + k
    return (total / n.clamp(min=1)).item()


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _emit(callbacks, name: str, payload) -> None:
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(payload)


class NonFiniteError(KitError, FloatingPointError):
    """The loss or the gradient became NaN or infinite; the message names the step and the last good checkpoint."""


def _nonfinite_message(step: int, checkpoint_dir) -> str:
    last = checkpoint.latest(checkpoint_dir) if checkpoint_dir is not None else None
    kept = (f"the last good checkpoint is {last} (resume=True continues from it)" if last is not None
            else "no checkpoint was written (pass checkpoint_dir= to keep one)")
    return (f"the loss or the gradient is not finite (NaN or inf) at step {step}: the run stopped and "
            f"{kept}. Usual causes: a learning rate too high, a broken batch, or an overflow; lower "
            "TrainConfig.lr, check the data, or set TrainConfig(nonfinite='skip') to skip such steps")


def train(model, data, cfg: TrainConfig, *, objective: Callable = causal_lm_loss, val_data=None,
          callbacks: Sequence = (), stop: threading.Event | None = None,
          pause: threading.Event | None = None, checkpoint_dir: str | Path | None = None,
          resume: bool = False) -> History:
    """Train `model` on `data` for `cfg.max_steps` optimizer steps; return the History.

    Args:
        model: a causal LM (transformers or peft), moved to the chosen device here.
        data: rows with `__len__`, `__getitem__` and `collate(items) -> batch dict`.
        cfg: the TrainConfig (validated here; every problem is listed at once).
        objective: `objective(model, batch) -> (loss summed over tokens, n loss tokens)`.
        val_data: optional rows for the validation loss every `cfg.eval_every` steps and at the end.
        callbacks: objects with any of `on_step(dict)`, `on_eval(dict)`, `on_checkpoint(dict)`,
            `on_message(dict)`, `on_end(History)`; under torchrun only rank 0 calls them.
        stop: a threading.Event; when set, the run ends before the next step (cooperative stop).
        pause: a threading.Event; while set, the run waits before the next step (stop still works).
        checkpoint_dir: where to write checkpoints (every `cfg.checkpoint_every` steps, and when the
            run ends or is stopped); `on_checkpoint({"step", "path"})` tells the callbacks.
        resume: continue from the newest complete checkpoint in `checkpoint_dir`, mid-epoch included;
            the result is bit-identical (on CPU) to a run that was never interrupted.

    Raises:
        NonFiniteError: a NaN/inf loss or gradient with `cfg.nonfinite == "stop"` (checked before the
            optimizer step on CPU; on CUDA at every log step and before every checkpoint, so no
            checkpoint with broken weights is ever written).
    """
    validate(cfg)
    ranks, device = distributed.setup(pick_device(cfg.device), cfg.batch_size)
    if ranks.world > 1 and cfg.distributed == "fsdp" and checkpoint_dir is not None:
        raise ValueError("checkpoints are not written under FSDP (sharded weights): drop checkpoint_dir "
                         "or use TrainConfig(distributed='ddp')")
    distributed.device_settings(device, cfg.cpu_threads, cfg.tf32)
    model.to(device).train()
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5 name
    if cfg.compile:
        model.compile()  # in place: parameter names (and checkpoints) stay the same
    net = distributed.wrap(model, ranks, device, cfg.distributed)  # `model` itself with one process
    callbacks = callbacks if ranks.main else ()
    opt = make_optimizer(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    hist, t0 = History(), time.perf_counter()
    running_loss, running_n = torch.zeros((), device=device), torch.zeros((), device=device)
    broken = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite step not yet reported (CUDA)
    start, split = 0, 1  # split: parts each micro-batch is cut into after an out-of-memory error
    last = checkpoint.latest(checkpoint_dir) if resume and checkpoint_dir is not None else None
    if last is not None:
        meta = checkpoint.load(last, model, opt, sched)
        start, hist = meta["step"], History(**meta["history"])
        if ranks.main:  # the saved running sums are global: one rank holds them
            running_loss.fill_(meta["running"][0])
            running_n.fill_(meta["running"][1])
        t0 -= hist.seconds
        _emit(callbacks, "on_message", {"step": start, "text": f"resuming from step {start} ({last})", "info": True})
    elif resume:
        where = f"no complete checkpoint in {checkpoint_dir}" if checkpoint_dir is not None else "no checkpoint_dir"
        _emit(callbacks, "on_message", {"step": 0, "text": f"nothing to resume, starting fresh ({where})",
                                        "info": True})
    stream = batches(data, cfg.batch_size, cfg.seed, skip=start * cfg.grad_accum)
    count = getattr(data, "count", None) or (lambda b: int((b["labels"] != IGNORE).sum()))  # loss units
    check_each_step = device.type == "cpu" or cfg.nonfinite == "skip"  # on CUDA a check is a host sync

    def save_now(step: int) -> None:
        if checkpoint_dir is None:
            return
        if broken.item():
            raise NonFiniteError(_nonfinite_message(step, checkpoint_dir))
        hist.seconds = time.perf_counter() - t0
        running = torch.stack([running_loss, running_n])
        distributed.all_sum(running)
        if ranks.main:
            path = checkpoint.save(checkpoint.step_folder(checkpoint_dir, step), model, opt, sched,
                                   {"step": step, "history": hist.to_dict(), "running": running.tolist()})
            checkpoint.prune(checkpoint_dir, keep=2)
            _emit(callbacks, "on_checkpoint", {"step": step, "path": str(path)})
        distributed.barrier()

    def validate_now(step: int) -> None:
        if val_data is not None:
            hist.val_steps.append(step)
            hist.val_losses.append(evaluate_loss(model, val_data, cfg, objective))
            _emit(callbacks, "on_eval", {"step": step, "val_loss": hist.val_losses[-1]})

    def note(step: int, text: str) -> None:
        hist.notes.append(f"step {step}: {text}")
        warnings.warn(text, stacklevel=3)
        _emit(callbacks, "on_message", {"step": step, "text": text})

    def forward_backward(micro: list[dict], n_loss_tokens: int) -> torch.Tensor:
        """Forward + backward every (part of a) micro-batch; return the summed loss of the step."""
        step_loss = torch.zeros((), device=device)
        parts = [{k: v.to(device, non_blocking=True) for k, v in p.items()}
                 for b in micro for p in _split(distributed.shard(b, ranks), split)]
        for i, b in enumerate(parts):
            sync = i == len(parts) - 1 or ranks.world == 1 or cfg.distributed == "fsdp"
            with nullcontext() if sync else net.no_sync():  # DDP: all-reduce once a step
                with _autocast(device):
                    loss_sum, _ = objective(net, b)
                # DDP averages gradients over ranks: x world, so the update is the one-process update
                (loss_sum * ranks.world / max(1, n_loss_tokens)).backward()
            step_loss += loss_sum.detach().float()
        return step_loss

    step = start
    for step in range(start + 1, cfg.max_steps + 1):
        if pause is not None and pause.is_set():
            waited = time.perf_counter()
            while pause.is_set() and not (stop is not None and stop.is_set()):
                time.sleep(0.05)
            t0 += time.perf_counter() - waited  # time spent paused is not training time (nor in the ETA)
        if stop is not None and stop.is_set():
            hist.stopped, step = True, step - 1
            break
        micro = [next(stream) for _ in range(cfg.grad_accum)]
        n_loss_tokens = sum(count(b) for b in micro)  # on CPU tensors: no GPU sync
        while True:
            try:
                step_loss = forward_backward(micro, n_loss_tokens)
                break
            except torch.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                if ranks.world > 1 or split >= cfg.batch_size:
                    raise
                split *= 2
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                note(step, f"out of memory: micro-batch halved to {math.ceil(cfg.batch_size / split)} rows and "
                           f"accumulation doubled to {cfg.grad_accum * split} (same effective batch); "
                           f"set TrainConfig(batch_size={max(1, cfg.batch_size // split)}, "
                           f"grad_accum={cfg.grad_accum * split}) to start there next time")
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # FSDP: a sharded norm
        finite = torch.isfinite(step_loss) & torch.isfinite(gnorm)
        if check_each_step and not finite.item():
            if cfg.nonfinite == "stop":
                raise NonFiniteError(_nonfinite_message(step, checkpoint_dir))
            hist.skipped += 1
            opt.zero_grad(set_to_none=True)
            sched.step()
            note(step, f"non-finite loss or gradient: step skipped ({hist.skipped} so far)")
            continue
        broken |= ~finite
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running_loss += step_loss
        running_n += n_loss_tokens / ranks.world  # summed over the ranks at log time
        hist.tokens += sum(b["input_ids"].numel() if "input_ids" in b else count(b) for b in micro)  # rows: units

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            distributed.all_sum(running_loss, running_n)
            if broken.item():  # the one host sync per log interval, with the loss read-out
                raise NonFiniteError(_nonfinite_message(step, checkpoint_dir))
            loss = (running_loss / running_n.clamp(min=1)).item()
            running_loss.zero_()
            running_n.zero_()
            elapsed = time.perf_counter() - t0
            hist.steps.append(step)
            hist.losses.append(loss)
            hist.lrs.append(sched.get_last_lr()[0])
            extra = objective.log_metrics() if hasattr(objective, "log_metrics") else {}
            if extra:
                hist.metrics.append({"step": step, **extra})
            _emit(callbacks, "on_step", {"step": step, "max_steps": cfg.max_steps, "loss": loss,
                                         "lr": hist.lrs[-1], "tokens": hist.tokens, "elapsed": elapsed,
                                         "tokens_per_s": hist.tokens / max(elapsed, 1e-9),
                                         "skipped": hist.skipped, **extra})
        if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.max_steps:
            validate_now(step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.max_steps:
            save_now(step)

    if step > 0 and (not hist.val_steps or hist.val_steps[-1] != step):
        validate_now(step)
    save_now(step)
    distributed.barrier()  # every rank leaves together: no collective is left in flight behind one of them
    hist.seconds = time.perf_counter() - t0
    model.eval()
    _emit(callbacks, "on_end", hist)
    return hist


def _split(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """Cut a micro-batch into `parts` smaller ones along the rows (after an out-of-memory error)."""
    if parts == 1:
        return [batch]
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i: i + math.ceil(n / parts)] for k, v in batch.items()} for i in range(0, n, math.ceil(n / parts))]


class ProgressBar:
    """A tqdm bar with ETA and the latest loss; subscribe it with `callbacks=[ProgressBar()]`."""

    def __init__(self, desc: str = "training"):
        self.desc, self.bar, self.last = desc, None, 0

    def on_step(self, ev: dict) -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=ev["max_steps"], desc=self.desc, unit="step")
        self.bar.set_postfix(loss=f"{ev['loss']:.3f}", tok_s=f"{ev['tokens_per_s']:.0f}", refresh=False)
        self.bar.update(ev["step"] - self.last)
        self.last = ev["step"]

    def on_message(self, ev: dict) -> None:
        """Print what the run says about itself (resuming or not); its warnings are printed as warnings."""
        import sys

        if not ev.get("info"):
            return

        from tqdm.auto import tqdm

        tqdm.write(ev["text"], file=sys.stderr)

    def on_end(self, hist: History) -> None:
        if self.bar is not None:
            self.bar.close()
