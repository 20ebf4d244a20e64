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
An objective is a function `objective(model, batch) -> (sum of unit losses, n units)` (`kit.engine.losses`).
`train()` reads top to bottom; each step of it is a method of `_Loop`, which holds the run's state.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import checkpoint, distributed
from .callbacks import emit
from .config import TrainConfig, validate
from .errors import KitError
from .losses import IGNORE, autocast, causal_lm_loss, mean_loss


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


def evaluate_loss(model, data, cfg: TrainConfig, objective: Callable = causal_lm_loss) -> float:
    """Mean loss per unit over the first `eval_batches` whole batches of `data` (fixed order)."""
    bs = min(cfg.batch_size, len(data))
    return mean_loss(model, data, min(len(data), bs * cfg.eval_batches) // bs * bs, bs, objective)


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
        stop, pause: threading.Events: stop ends the run before the next step; pause waits there.
        checkpoint_dir: where to write checkpoints (every `cfg.checkpoint_every` steps, and at the end).
        resume: continue from the newest complete checkpoint in `checkpoint_dir`, mid-epoch included;
            the result is bit-identical (on CPU) to a run that was never interrupted.

    Raises:
        NonFiniteError: a NaN/inf loss or gradient with `cfg.nonfinite == "stop"` (checked before the
            optimizer step on CPU; on CUDA at every log step and before every checkpoint, so no
            checkpoint with broken weights is ever written).
    """
    validate(cfg)
    loop = _Loop(model, cfg, objective, val_data, callbacks, checkpoint_dir)  # device, optimizer, schedule
    start = loop.start(data, resume)
    step = start
    for step in range(start + 1, cfg.max_steps + 1):
        if loop.wait_or_stop(pause, stop):
            loop.hist.stopped, step = True, step - 1
            break
        micro = [next(loop.stream) for _ in range(cfg.grad_accum)]
        step_loss, n_units = loop.forward_backward(step, micro)  # an out-of-memory error halves the micro-batch
        if not loop.update(step, step_loss):  # a non-finite loss or gradient: stopped, or the step skipped
            continue
        loop.account(micro, step_loss, n_units)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            loop.log(step)
        if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.max_steps:
            loop.validate(step)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.max_steps:
            loop.save(step)
    return loop.finish(step)


class _Loop:
    """The state of one `train()` run, and each part of a step as a method."""

    def __init__(self, model, cfg: TrainConfig, objective: Callable, val_data, callbacks: Sequence, checkpoint_dir):
        self.ranks, self.device = distributed.setup(pick_device(cfg.device), cfg.batch_size)
        if self.ranks.world > 1 and cfg.distributed == "fsdp" and checkpoint_dir is not None:
            raise ValueError("checkpoints are not written under FSDP (sharded weights): drop checkpoint_dir "
                             "or use TrainConfig(distributed='ddp')")
        distributed.device_settings(self.device, cfg.cpu_threads, cfg.tf32)
        model.to(self.device).train()
        if cfg.gradient_checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5 name
        if cfg.compile:
            model.compile()  # in place: parameter names (and checkpoints) stay the same
        self.model, self.cfg, self.objective, self.val_data, self.checkpoint_dir = (model, cfg, objective, val_data,
                                                                                    checkpoint_dir)
        self.net = distributed.wrap(model, self.ranks, self.device, cfg.distributed)  # `model` with one process
        self.callbacks = callbacks if self.ranks.main else ()
        self.opt = make_optimizer(model, cfg, self.device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.hist, self.t0 = History(), time.perf_counter()
        zeros = lambda **kw: torch.zeros((), device=self.device, **kw)  # noqa: E731
        self.running_loss, self.running_n = zeros(), zeros()  # summed between two log steps
        self.broken = zeros(dtype=torch.bool)  # a non-finite step not yet reported (CUDA)
        self.split = 1  # parts each micro-batch is cut into after an out-of-memory error
        self.check_each_step = self.device.type == "cpu" or cfg.nonfinite == "skip"  # on CUDA a check is a sync
        self.stream, self.count = iter(()), None

    def start(self, data, resume: bool) -> int:
        """Resume from the newest complete checkpoint (when asked), start the batch stream; return the step."""
        cfg, start = self.cfg, 0
        last = checkpoint.latest(self.checkpoint_dir) if resume and self.checkpoint_dir is not None else None
        if last is not None:
            meta = checkpoint.load(last, self.model, self.opt, self.sched)
            start, self.hist = meta["step"], History(**meta["history"])
            if self.ranks.main:  # the saved running sums are global: one rank holds them
                self.running_loss.fill_(meta["running"][0])
                self.running_n.fill_(meta["running"][1])
            self.t0 -= self.hist.seconds
            emit(self.callbacks, "on_message", {"step": start, "text": f"resuming from step {start} ({last})",
                                                "info": True})
        elif resume:
            where = f"no complete checkpoint in {self.checkpoint_dir}" if self.checkpoint_dir else "no checkpoint_dir"
            emit(self.callbacks, "on_message", {"step": 0, "text": f"nothing to resume, starting fresh ({where})",
                                                "info": True})
        self.stream = batches(data, cfg.batch_size, cfg.seed, skip=start * cfg.grad_accum)
        self.count = getattr(data, "count", None) or (lambda b: int((b["labels"] != IGNORE).sum()))  # loss units
        return start

    def wait_or_stop(self, pause: threading.Event | None, stop: threading.Event | None) -> bool:
        """Wait while paused (time paused is not training time, nor in the ETA); True when asked to stop."""
        if pause is not None and pause.is_set():
            waited = time.perf_counter()
            while pause.is_set() and not (stop is not None and stop.is_set()):
                time.sleep(0.05)
            self.t0 += time.perf_counter() - waited
        return stop is not None and stop.is_set()

    def forward_backward(self, step: int, micro: list[dict]) -> tuple[torch.Tensor, int]:
        """Forward + backward every micro-batch; (the step's summed loss, its loss units). Out of memory: the
        micro-batch is halved and the step tried again (same effective batch)."""
        n_units = sum(self.count(b) for b in micro)  # on CPU tensors: no GPU sync
        while True:
            try:
                return self._forward_backward(micro, n_units), n_units
            except torch.OutOfMemoryError:
                if not self._halve_micro_batch(step):
                    raise

    def _forward_backward(self, micro: list[dict], n_units: int) -> torch.Tensor:
        ranks, device = self.ranks, self.device
        step_loss = torch.zeros((), device=device)
        parts = [{k: v.to(device, non_blocking=True) for k, v in p.items()}
                 for b in micro for p in _split(distributed.shard(b, ranks), self.split)]
        for i, b in enumerate(parts):
            sync = i == len(parts) - 1 or ranks.world == 1 or self.cfg.distributed == "fsdp"
            with nullcontext() if sync else self.net.no_sync():  # DDP: all-reduce once a step
                with autocast(device):
                    loss_sum, _ = self.objective(self.net, b)
                # DDP averages gradients over ranks: x world, so the update is the one-process update
                (loss_sum * ranks.world / max(1, n_units)).backward()
            step_loss += loss_sum.detach().float()
        return step_loss

    def _halve_micro_batch(self, step: int) -> bool:
        """After an out-of-memory error: cut each micro-batch in twice as many parts; False when it cannot."""
        cfg = self.cfg
        self.opt.zero_grad(set_to_none=True)
        if self.ranks.world > 1 or self.split >= cfg.batch_size:
            return False
        self.split *= 2
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.note(step, f"out of memory: micro-batch halved to {math.ceil(cfg.batch_size / self.split)} rows and "
                        f"accumulation doubled to {cfg.grad_accum * self.split} (same effective batch); set "
                        f"TrainConfig(batch_size={max(1, cfg.batch_size // self.split)}, "
                        f"grad_accum={cfg.grad_accum * self.split}) to start there next time")
        return True

    def update(self, step: int, step_loss: torch.Tensor) -> bool:
        """Clip the gradient, step the optimizer and the schedule; False for a non-finite step that was skipped
        (`nonfinite="skip"`; with "stop" it raises NonFiniteError)."""
        cfg = self.cfg
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else
                                               math.inf)
        gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # FSDP: a sharded norm
        finite = torch.isfinite(step_loss) & torch.isfinite(gnorm)
        if self.check_each_step and not finite.item():
            if cfg.nonfinite == "stop":
                raise NonFiniteError(_nonfinite_message(step, self.checkpoint_dir))
            self.hist.skipped += 1
            self.opt.zero_grad(set_to_none=True)
            self.sched.step()
            self.note(step, f"non-finite loss or gradient: step skipped ({self.hist.skipped} so far)")
            return False
        self.broken |= ~finite
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return True

    def account(self, micro: list[dict], step_loss: torch.Tensor, n_units: int) -> None:
        """Add the step to the running loss and the token count."""
        self.running_loss += step_loss
        self.running_n += n_units / self.ranks.world  # summed over the ranks at log time
        self.hist.tokens += sum(b["input_ids"].numel() if "input_ids" in b else self.count(b) for b in micro)

    def log(self, step: int) -> None:
        """Read the mean loss since the last log step (the one host sync of the interval) and tell the callbacks."""
        distributed.all_sum(self.running_loss, self.running_n)
        if self.broken.item():
            raise NonFiniteError(_nonfinite_message(step, self.checkpoint_dir))
        loss = (self.running_loss / self.running_n.clamp(min=1)).item()
        self.running_loss.zero_()
        self.running_n.zero_()
        hist, elapsed = self.hist, time.perf_counter() - self.t0
        hist.steps.append(step)
        hist.losses.append(loss)
        hist.lrs.append(self.sched.get_last_lr()[0])
        extra = self.objective.log_metrics() if hasattr(self.objective, "log_metrics") else {}
        if extra:
            hist.metrics.append({"step": step, **extra})
        emit(self.callbacks, "on_step", {"step": step, "max_steps": self.cfg.max_steps, "loss": loss,
                                         "lr": hist.lrs[-1], "tokens": hist.tokens, "elapsed": elapsed,
                                         "tokens_per_s": hist.tokens / max(elapsed, 1e-9), "skipped": hist.skipped,
                                         **extra})

    def validate(self, step: int) -> None:
        if self.val_data is not None:
            self.hist.val_steps.append(step)
            self.hist.val_losses.append(evaluate_loss(self.model, self.val_data, self.cfg, self.objective))
            emit(self.callbacks, "on_eval", {"step": step, "val_loss": self.hist.val_losses[-1]})

    def save(self, step: int) -> None:
        """A checkpoint (when there is a checkpoint_dir), refused if a non-finite step is pending."""
        if self.checkpoint_dir is None:
            return
        if self.broken.item():
            raise NonFiniteError(_nonfinite_message(step, self.checkpoint_dir))
        self.hist.seconds = time.perf_counter() - self.t0
        running = torch.stack([self.running_loss, self.running_n])
        distributed.all_sum(running)
        if self.ranks.main:
            path = checkpoint.save(checkpoint.step_folder(self.checkpoint_dir, step), self.model, self.opt,
                                   self.sched, {"step": step, "history": self.hist.to_dict(),
                                                "running": running.tolist()})
            checkpoint.prune(self.checkpoint_dir, keep=2)
            emit(self.callbacks, "on_checkpoint", {"step": step, "path": str(path)})
        distributed.barrier()

    def note(self, step: int, text: str) -> None:
        """What a guard did: kept in the History, warned, told to the callbacks."""
        self.hist.notes.append(f"step {step}: {text}")
        warnings.warn(text, stacklevel=4)
        emit(self.callbacks, "on_message", {"step": step, "text": text})

    def finish(self, step: int) -> History:
        """The last validation and checkpoint, then the History."""
        if step > 0 and (not self.hist.val_steps or self.hist.val_steps[-1] != step):
            self.validate(step)
        self.save(step)
        distributed.barrier()  # every rank leaves together: no collective is left in flight behind one of them
        self.hist.seconds = time.perf_counter() - self.t0
        self.model.eval()
        emit(self.callbacks, "on_end", self.hist)
        return self.hist


def _split(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """Cut a micro-batch into `parts` smaller ones along the rows (after an out-of-memory error)."""
    if parts == 1:
        return [batch]
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i: i + math.ceil(n / parts)] for k, v in batch.items()} for i in range(0, n, math.ceil(n / parts))]
