"""Sweeps: a grid (or a random search) of settings, one recorded run per point, resumable.

`parse_grid("lr=1e-4,3e-4;lora_r=4,16")` reads a grid, `grid` and `random_search` make the points, and
`sweep(points, run_fn)` runs each as a `kit.engine.runs.Run`, loading instead of redoing a finished run whose
configuration and data are the same (`reuse_key`).

Example:
    >>> grid(parse_grid("lr=1e-4,3e-4;lora_r=4"))
    [{'lr': 0.0001, 'lora_r': 4}, {'lr': 0.0003, 'lora_r': 4}]
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import random
import re
import sys
from pathlib import Path

from .runs import Run, info_of, load_run, runs_root
from .sanitize import slug


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def parse_grid(text: str) -> dict[str, list]:
    """"lr=1e-4,3e-4;lora_r=4,16" -> {"lr": [0.0001, 0.0003], "lora_r": [4, 16]}: numbers, true / false, or text."""
    spec = {}
    for part in filter(str.strip, re.split(r"[;\n]", text)):
        key, sep, values = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value1,value2,... in the grid, got {part.strip()!r}")
        spec[key.strip()] = [_value(v.strip()) for v in values.split(",")]
    return spec


def grid(spec: dict[str, list]) -> list[dict]:
    """Every combination of the values, in a stable order (the last key changes fastest)."""
    return [dict(zip(spec, values)) for values in itertools.product(*spec.values())]


def random_search(spec: dict, n: int, seed: int = 0) -> list[dict]:
    """Up to `n` distinct seeded random points: a list is picked from, a (low, high) tuple drawn uniformly."""
    rng, out = random.Random(seed), []
    for _ in range(50 * n):
        point = {k: rng.uniform(*v) if isinstance(v, tuple) else rng.choice(list(v)) for k, v in spec.items()}
        if len(out) < n and point not in out:
            out.append(point)
    return out


def run_name(prefix: str, params: dict) -> str:
    """A folder-safe name made of the parameters: the same point always gets the same name (see `slug`)."""
    parts = [f"{k}={'+'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in params.items()]
    return slug("-".join([prefix, *parts]))


def reuse_key(description: dict) -> dict:
    """SHA-256 of a run's full configuration and of its data fingerprint (`run_fn.describe(params)`'s
    "config" and "data"): a finished run is reused only when both match."""
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()  # noqa: E731
    return {"config_sha256": digest(description.get("config")), "data_sha256": digest(description.get("data"))}


def sweep(points: list[dict], run_fn, name: str = "sweep", root: str | Path | None = None, progress: bool = True,
          early_stop: tuple[float, float] | None = (0.3, 0.97)) -> list[dict]:
    """Run `run_fn(params, run) -> results` for each point in turn; it gives `callbacks=[run], stop=run.stop`
    to training. Resumable: a run "finished", or "stopped" by the early-stop rule, is loaded, not redone,
    when its full configuration and its data are the same; a "failed" (settings refused) or "crashed" one, one a
    killed process left "running", or one whose configuration or data changed, is redone (in the same folder).
    A point that fails or crashes is recorded with its error and the sweep goes on to the next one.

    What "the same" means comes from `run_fn.describe(params) -> {"config": ..., "data": ..., "parent": ...}`
    (`kit.lessons.iterate.sft_run_fn` has one): the whole configuration the point trains with, a
    fingerprint of its data, and the run or model it starts from. Without `describe`, only the point itself
    is compared, so a setting changed outside the grid would go unnoticed: give one.
    `early_stop`: (after, ratio) of the `hopeless` rule, or None."""
    from tqdm.auto import tqdm

    describe = getattr(run_fn, "describe", None) or (lambda p: {"config": p, "data": None})
    out = []
    with tqdm(points, desc=name, unit="run", disable=not progress) as bar:
        for params in bar:
            rname = run_name(name, params)
            bar.set_postfix_str(rname)
            try:
                description, refused = describe(dict(params)), None
            except Exception as e:  # e.g. a setting the config check refuses: recorded below as a crashed run
                description, refused = {"config": params, "data": None}, e
            key = reuse_key(description)
            old = runs_root(root) / rname / "run.json"
            try:
                old = load_run(old.parent) if old.is_file() else {"status": None}
            except (OSError, ValueError):  # an unreadable record: the run is done again
                old = {"status": None}
            done = old.get("status") == "finished" or (old.get("status") == "stopped" and old.get("early_stopped"))
            if done and refused is None and old.get("reuse_key") == key:
                out.append(old)
                continue
            run = Run(rname, config=params, root=root, early_stop=early_stop, parent=description.get("parent"))
            try:
                with run:
                    run.info["reuse_key"] = key  # what a later sweep compares before reusing this run
                    run.info["params"] = dict(params)  # the sweep point itself, apart from the full config
                    if refused is not None:
                        raise refused
                    run.log_results(run_fn(dict(params), run) or {})
            except Exception as e:  # recorded by the run ("failed" / "crashed", with the error); next point
                if progress:
                    why = next(iter(str(e).splitlines()), "") or type(e).__name__
                    bar.write(f"{rname}: {run.info['status']}: {why}", file=sys.stderr)
            out.append(info_of(run))
    return out
