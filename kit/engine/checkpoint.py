"""Checkpoints that resume exactly, with no pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder `step-000120/` holds
  * `model.safetensors`      the weights (tied weights stored once);
  * `optimizer.safetensors`  AdamW's per-parameter tensors, and the torch RNG state;
  * `state.json`             step, schedule, optimizer hyper-parameters, history so far, config;
  * `manifest.json`          size and SHA-256 of each file (written last).
It is written into a temporary folder and renamed into place, so a kill mid-write leaves either
the previous checkpoint or a complete new one; a folder whose manifest does not match its files
is refused with an error that names it, and `latest()` falls back to the previous one.

Example:
    >>> save(run_dir / "step-000010", model, opt, sched, {"step": 10})   # doctest: +SKIP
    >>> state = load(latest(run_dir), model, opt, sched)                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .cache import is_complete, remove_stale_temps, write_entry
from .errors import KitError

FILES = ("model.safetensors", "optimizer.safetensors", "state.json")  # what a checkpoint's manifest must list


class CheckpointError(KitError, RuntimeError):
    """A checkpoint folder that cannot be loaded (incomplete or corrupt)."""


def usable(folder: Path) -> bool:
    """True when `folder` is a complete checkpoint: a well-formed manifest that lists the checkpoint's
    files, each with its recorded size and hash."""
    return is_complete(Path(folder), FILES)


def step_folder(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"step-{step:06d}"


def save(folder: Path, model, opt: torch.optim.Optimizer, sched, state: dict) -> Path:
    """Write one checkpoint atomically (temporary folder + rename)."""
    opt_state = opt.state_dict()
    tensors = {f"state.{i}.{k}": v.detach().cpu().contiguous()
               for i, s in opt_state["state"].items() for k, v in s.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    meta = {**state, "param_groups": groups, "scheduler": sched.state_dict()}

    def fill(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))

    write_entry(Path(folder), fill)
    return Path(folder)


def load(folder: Path, model, opt: torch.optim.Optimizer, sched) -> dict:
    """Restore model, optimizer, schedule and RNG from `folder`; return the saved state dict.

    Raises:
        CheckpointError: the folder is incomplete or a file does not match the manifest.
    """
    folder = Path(folder)
    if not usable(folder):
        raise CheckpointError(f"checkpoint {folder} is incomplete or corrupt (manifest.json is missing, malformed, "
                              "or does not match its files): it was probably cut off mid-write; delete it to resume "
                              "from the previous one")
    try:
        device = next(model.parameters()).device
        load_model(model, str(folder / "model.safetensors"), device=str(device))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        meta = json.loads((folder / "state.json").read_text())
        per_param: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("state."):
                _, i, name = key.split(".", 2)
                per_param.setdefault(int(i), {})[name] = value.to(device) if name != "step" else value
        opt.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        sched.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
    except Exception as e:  # files that match their manifest but do not fit this model or optimizer
        raise CheckpointError(f"checkpoint {folder} does not fit this run ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}): it was written by another model "
                              "or configuration; give another checkpoint_dir, or delete it to start fresh") from e
    return meta


def _newest_first(run_dir: Path) -> list[Path]:
    """The `step-N` folders under `run_dir`, highest step first (sorted as numbers, not strings)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    folders = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(folders, key=lambda p: int(p.name[5:]), reverse=True)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint under `run_dir` (by step number), skipping broken ones with a warning.

    Temporary folders of a checkpoint write that was killed are removed first."""
    if Path(run_dir).is_dir():
        remove_stale_temps(Path(run_dir) / "step", ".step-*.tmp-*")
    for folder in _newest_first(run_dir):
        if usable(folder):
            return folder
        warnings.warn(f"skipping incomplete checkpoint {folder}", stacklevel=2)
    return None


def prune(run_dir: Path, keep: int = 2) -> None:
    """Delete all but the `keep` newest complete checkpoints (and any incomplete older ones)."""
    import shutil

    kept = 0
    for folder in _newest_first(run_dir):
        if kept < keep and usable(folder):
            kept += 1
        elif kept >= keep:
            shutil.rmtree(folder, ignore_errors=True)
