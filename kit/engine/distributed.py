"""Several processes, one `train()`: torchrun + DistributedDataParallel (or FSDP), and device settings.

How a run is split over N processes (ranks):
  * every rank draws the same seeded micro-batches (same order as a one-process run) and keeps
    its own slice of rows, so the global batch is exactly the one-process batch;
  * the loss is divided by the loss tokens of the WHOLE global batch and multiplied by N, because
    DDP averages gradients over ranks: the update equals the one-process update;
  * only rank 0 writes checkpoints and tells the callbacks (logs, progress bars, widgets).

Launch:  torchrun --nproc_per_node 2 my_script.py   (gloo on CPU, nccl on CUDA; chosen here)

FSDP (`TrainConfig(distributed="fsdp")`) shards parameters, gradients and optimizer state over the
ranks, for a model that does not fit one GPU: each decoder layer and the whole model are wrapped
with `torch.distributed.fsdp.fully_shard`. Checkpoints are not written under FSDP (a sharded
state needs torch.distributed.checkpoint); train() refuses a `checkpoint_dir` there.

Example:
    >>> d = current()          # outside torchrun: one process
    >>> (d.rank, d.world, d.main)
    (0, 1, True)
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Where this process stands: its rank, how many ranks there are, its GPU index on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def current() -> Dist:
    """Read the ranks that torchrun sets in the environment (one process when there is none)."""
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))))


def setup(device: torch.device, batch_size: int) -> tuple[Dist, torch.device]:
    """Join the process group under torchrun (gloo on CPU, nccl on CUDA); return the ranks and this rank's device."""
    d = current()
    if d.world == 1:
        return d, device
    if batch_size % d.world:
        raise ValueError(f"batch_size={batch_size} does not split over {d.world} processes: each rank takes "
                         f"batch_size / {d.world} rows of every micro-batch, so pick a multiple of {d.world}")
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown)  # the kit made the group, so the kit tears it down
    return d, device


def shutdown() -> None:
    """Destroy the process group the kit created, while the interpreter is still whole.

    Left to interpreter exit, the group is destroyed during finalisation: gloo's worker threads
    (and the async work objects FSDP keeps, holding tensors) are torn down after Python's own
    state, and the C++ runtime aborts both ranks with "terminate called without an active
    exception" (SIGABRT), now and then. `setup()` registers this with `atexit` when it created
    the group; calling it earlier is safe, and a second call does nothing.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()  # work objects and groups held only by reference cycles go now, not during finalisation


def device_settings(device: torch.device, cpu_threads: int, tf32: bool) -> None:
    """TF32 matmuls on CUDA (when allowed); on CPU, `cpu_threads` threads, or the cores shared among local ranks.

    With 0 threads and one process torch's own default (the physical cores) is kept.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        return
    d = current()
    if cpu_threads > 0:
        torch.set_num_threads(cpu_threads)
    elif d.local_world > 1:  # N processes on one machine: do not oversubscribe the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.local_world))


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, strategy: str) -> torch.nn.Module:
    """DDP (the default) or FSDP around `model` when there are several ranks; the model itself otherwise."""
    if d.world == 1:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(batch: dict[str, torch.Tensor], d: Dist) -> dict[str, torch.Tensor]:
    """This rank's contiguous slice of the rows of a micro-batch (all tensors split on dim 0)."""
    if d.world == 1:
        return batch
    return {k: v.tensor_split(d.world)[d.rank] for k, v in batch.items()}


def all_sum(*tensors: torch.Tensor) -> None:
    """Sum tensors over the ranks, in place (nothing to do with one process)."""
    if dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
