"""Runs: record each training run in a folder, compare runs, sweep settings, write a report.

A run is a folder `<root>/<name>/` (root: `work_root() / "runs"` unless given; the name reduced to a safe slug
that stays inside it): `run.json` (status "running" | "finished" | "stopped" | "failed" (settings refused) |
"crashed", error, config, data fingerprints, parent (the run or model it started from), versions, times,
checkpoint, results; rewritten atomically), `metrics.jsonl` (one line per training read-out or validation pass,
appended at once), `samples.json` (prompts, the run's answers). A killed process leaves its run "running"."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import threading
import time
from pathlib import Path

from .cache import work_root, write_text_atomic
from .results import cell, table
from .sanitize import slug


def runs_root(root: str | Path | None = None) -> Path:
    """`root`, else `work_root() / "runs"`: the cache's runs folder, or the learner's own beside a read-only cache."""
    return Path(root) if root is not None else work_root() / "runs"


def run_folder(name: str, root: str | Path | None = None) -> Path:
    """`<root>/<slug(name)>`, checked to resolve inside the runs root (a symlink out of it is refused)."""
    base = runs_root(root)
    folder = base / slug(name)
    if not folder.resolve().is_relative_to(base.resolve()):
        raise ValueError(f"the run folder {folder} resolves outside the runs folder {base} (a link?): give "
                         "another run name or root")
    return folder


def auto_name(prefix: str) -> str:
    """A new, sortable run name: `<prefix>-<date>-<time>-<microseconds>`."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() // 1000 % 10**6:06d}"


def _write_json(path: Path, obj) -> None:

    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str))  # a crash leaves the old


def fingerprint(rows) -> dict:
    """SHA-256 over the canonical JSON of each row (sorted keys; the kit's `_` bookkeeping keys left out)."""
    h, rows = hashlib.sha256(), list(rows)
    for row in rows:
        row = {k: v for k, v in row.items() if not str(k).startswith("_")} if isinstance(row, dict) else row
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n")
    return {"sha256": h.hexdigest(), "rows": len(rows)}


def _versions() -> dict:
    out = {}
    for key, dist in (("kit", "fine-tuning-kit"), ("torch", "torch"), ("transformers", "transformers")):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[key] = importlib.metadata.version(dist)
    return out


# ----------------------------------------------------------------------------- recording one run
def hopeless(ev: dict, first: float, after: float = 0.3, ratio: float = 0.97) -> str | None:
    """The early-stop rule for a training read-out `ev` of `train()` after the first one: once `after` (30%) of the
    steps are done, stop if the loss is not below `ratio` (97%) of the `first` read-out; stop at once on a NaN or
    infinite loss. Returns the reason to stop, or None.

    >>> hopeless({"step": 3, "max_steps": 10, "loss": 3.9}, first=4.0)
    'training loss 3.9 at step 3/10 is not below 97% of the first one 4'
    """
    loss, step, total = ev["loss"], ev["step"], ev["max_steps"]
    if not abs(loss) < float("inf"):
        return f"training loss is {loss} at step {step}/{total}"
    if step >= after * total and not loss < ratio * first:
        return f"training loss {loss:.4g} at step {step}/{total} is not below {ratio:.0%} of the first one {first:.4g}"


class Run:
    """One run's folder, written as it runs: a `train()` callback and a context manager. `report_to="trackio" |
    "tensorboard"` mirrors it to that tracker (`kit.engine.trackers`; run.json stays the record). With
    `early_stop=(after,
    ratio)` the `hopeless` rule sets `run.stop` (give `train()` `stop=run.stop`). When the `with` block ends (or
    at `finish()`) the run is "crashed" with the error if it raised (the exception goes on), "stopped" or "finished"."""

    def __init__(self, name: str, config=None, datasets: dict | None = None, root: str | Path | None = None,
                 early_stop: tuple[float, float] | None = None, tensorboard: bool = False, parent: str | None = None,
                 report_to: str | list[str] | None = None):
        self.folder = run_folder(name, root)
        name = self.folder.name
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", "samples.json"):  # a run of the same name starts afresh
            (self.folder / stale).unlink(missing_ok=True)
        self.early_stop, self.stop, self.stopped, self._first = early_stop, threading.Event(), False, None
        self._t0, self._trackers = time.time(), []
        self.info = {"name": name, "status": "running", "error": None, "stop_reason": None, "early_stopped": False,
                     "config": {}, "datasets": {}, "parent": parent,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None,
                     "wall_seconds": None, "versions": _versions(), "checkpoint": None, "results": {}}
        self.log(config=config, datasets=datasets)
        if tensorboard and report_to is None:  # the older spelling of report_to="tensorboard"
            report_to = "tensorboard"
        from .trackers import open_trackers  # a tracker asked for but not installed: an error naming the extra

        self._trackers = open_trackers(report_to, self.folder, name, self.info["config"])

    def log(self, config=None, datasets: dict | None = None, results: dict | None = None) -> None:
        """Add config fields (a dict or a config dataclass), dataset fingerprints, results; saved at once."""
        config = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
        self.info["config"].update(json.loads(json.dumps(config or {}, default=str)))
        self.info["datasets"].update({k: fingerprint(rows) for k, rows in (datasets or {}).items()})
        self.info["results"].update(results or {})
        _write_json(self.folder / "run.json", self.info)

    def log_results(self, results: dict) -> None:
        self.log(results=results)
        for tracker in self._trackers:
            tracker.results(results)

    def log_samples(self, rows) -> None:
        """Sample answers: dicts with prompt, answer (and expected), or (prompt, answer, expected, ...) tuples."""
        keys = ("prompt", "answer", "expected")
        rows = [r if isinstance(r, dict) else dict(zip(keys, r)) for r in rows]
        _write_json(self.folder / "samples.json", [{k: r[k] for k in keys if k in r} for r in rows])

    def _event(self, kind: str, ev: dict, scalars: dict) -> None:
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": kind, **ev, "time": round(time.time() - self._t0, 3)}, default=str) + "\n")
        for tracker in self._trackers:
            tracker.log(scalars, ev["step"])

    def on_step(self, ev: dict) -> None:
        self._event("step", ev, {"train/loss": ev["loss"], "train/lr": ev["lr"]})
        if self._first is None:
            self._first = ev["loss"]  # the rule judges the later read-outs against this one
        elif self.early_stop and not self.info["stop_reason"] and (why := hopeless(ev, self._first, *self.early_stop)):
            self.info.update(stop_reason=why, early_stopped=True)
            self.stop.set()
            self.log()

    def on_eval(self, ev: dict) -> None:
        self._event("eval", ev, {"val/loss": ev["val_loss"]})

    def on_checkpoint(self, ev: dict) -> None:
        self.info["checkpoint"] = ev["path"]
        self.log()

    def on_end(self, hist) -> None:
        if hist.stopped:
            self.stopped, self.info["stop_reason"] = True, self.info["stop_reason"] or "stop requested"
            self.log()

    def finish(self, status: str | None = None, error: str | None = None) -> None:
        self.info.update(status=status or ("stopped" if self.stopped else "finished"), error=error,
                         ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), wall_seconds=round(time.time() - self._t0, 3))
        self.log()
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.finish()
        else:  # a configuration refused before training "failed"; anything else "crashed"
            from .config import ConfigError

            self.finish("failed" if isinstance(exc, ConfigError) else "crashed", f"{exc_type.__name__}: {exc}")
        return False  # an exception goes on


# ----------------------------------------------------------------------------- reading and comparing runs
def load_run(folder: str | Path) -> dict:
    """A run folder's run.json, with "folder" added."""
    return {**json.loads((Path(folder) / "run.json").read_text(encoding="utf-8")), "folder": str(folder)}


def list_runs(root: str | Path | None = None) -> list[dict]:
    """Every run under `root`, oldest first."""
    found, out = sorted(runs_root(root).glob("*/run.json")), []  # by name, then (a stable sort) by start time
    for p in found:
        try:
            out.append(load_run(p.parent))
        except (OSError, ValueError) as e:  # a record someone broke: say so, list the others
            import warnings

            warnings.warn(f"skipping {p}: it cannot be read ({e}); delete the folder or fix the file", stacklevel=2)
    return sorted(out, key=lambda r: str(r.get("started")))


def info_of(run) -> dict:
    run = {**run.info, "folder": str(run.folder)} if isinstance(run, Run) else run
    return run if isinstance(run, dict) else load_run(run)


def metrics(run) -> list[dict]:
    """The run's metric events in order (a line cut short by a killed process is left out)."""
    path = Path(info_of(run)["folder"]) / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]  # flat events: "}" ends a whole one


def compare(runs, keys=None, all_keys: bool = False) -> dict:
    """Runs as rows: name, status, note (stop reason or error), parent, the config keys and data fingerprints
    ("data:<name>") that differ (all of them with `all_keys`), then the result `keys` (default: every scalar
    result). `differs`: the keys whose value differs between runs that set them (a key only some runs have,
    with one value, is no difference: those runs are of another kind)."""
    infos = [info_of(r) for r in runs]
    cfgs = [{**i["config"], **{f"data:{k}": f"{d['rows']} rows, sha256 {d['sha256'][:10]}"
                               for k, d in i["datasets"].items()}} for i in infos]
    cfg_keys = list(dict.fromkeys(k for c in cfgs for k in c))
    if keys is None:
        keys = [k for k in dict.fromkeys(k for i in infos for k in i["results"]) if k not in cfg_keys
                and not any(isinstance(i["results"].get(k), (dict, list)) for i in infos)]
    differs = {k for k in cfg_keys if len({json.dumps(c[k], sort_keys=True) for c in cfgs if k in c}) > 1}
    shown = cfg_keys if all_keys else [k for k in cfg_keys if k in differs]
    rows = [[i["name"], i["status"], i.get("stop_reason") or i.get("error"), i.get("parent"),
             *(c.get(k) for k in shown), *(i["results"].get(k) for k in keys)] for i, c in zip(infos, cfgs)]
    return {"columns": ["name", "status", "note", "parent", *shown, *keys], "rows": rows, "differs": differs}


def compare_table(runs, keys=None, html: bool = False, all_keys: bool = False) -> str:
    """A Markdown (or HTML) table, one column per run: status, parent, the config keys that differ (marked `*`;
    every key with `all_keys`), results."""
    cmp, fmt = compare(runs, keys, all_keys), "html" if html else "markdown"
    mark = (lambda t: f"<b>{t}</b> *") if html else (lambda t: f"**{t}** \\*")
    body = [[mark(cell(col, fmt)) if col in cmp["differs"] else cell(col, fmt),
             *(cell(r[j], fmt) for r in cmp["rows"])] for j, col in enumerate(cmp["columns"][1:], start=1)]
    return table(["", *(cell(r[0], fmt) for r in cmp["rows"])], body, fmt)


def overlay_losses(runs, title: str = "training (solid) and validation (dashed) loss"):
    """Overlaid loss curves of the runs (a matplotlib Figure made without pyplot: safe on any backend). The
    training curve is the chat tokens' loss where a run logged one (`chat_loss`), so that it compares with the
    validation loss; else the loss it logged."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    for run in runs:
        name, events, colour = info_of(run)["name"], metrics(run), None
        steps = [(e["step"], e["chat_loss"] if e.get("chat_loss") is not None else e["loss"])
                 for e in events if e["event"] == "step"]
        vals = [(e["step"], e["val_loss"]) for e in events if e["event"] == "eval"]
        if steps:
            colour = ax.plot(*zip(*steps), label=name)[0].get_color()
        if vals:
            ax.plot(*zip(*vals), "o--", color=colour, label=None if steps else f"{name} (validation)")
    ax.set(xlabel="step", ylabel="loss (nats per token)", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def side_by_side(runs, n: int = 5) -> list[dict]:
    """The first `n` sample prompts with each run's answer: [{"prompt", "expected", <run name>: answer}]."""
    by_run = {}
    for info in map(info_of, runs):
        path = Path(info["folder"]) / "samples.json"
        by_run[info["name"]] = {s["prompt"]: s for s in json.loads(path.read_text("utf-8"))} if path.exists() else {}
    prompts = list(dict.fromkeys(p for answers in by_run.values() for p in answers))[:n]
    return [{"prompt": p, "expected": next(a[p] for a in by_run.values() if p in a).get("expected"),
             **{name: a[p]["answer"] if p in a else None for name, a in by_run.items()}} for p in prompts]


# ----------------------------------------------------------------------------- the report
def report(runs, path: str | Path, title: str = "Runs", n_samples: int = 5) -> Path:
    """Markdown (HTML if `path` ends with .html) about the runs: config, data and results side by side
    (differences marked `*`), loss curves (a PNG beside the .md; embedded in HTML) and sample answers."""
    infos, path = [info_of(r) for r in runs], Path(path)
    html = path.suffix.lower() in (".html", ".htm")
    path.parent.mkdir(parents=True, exist_ok=True)
    from .plots import png

    image = png(overlay_losses(infos))
    if html:
        img = f"<p><img alt='loss curves' src='data:image/png;base64,{base64.b64encode(image).decode()}'></p>"
    else:
        path.with_suffix(".png").write_bytes(image)
        img = f"![loss curves]({path.with_suffix('.png').name})"
    fmt = "html" if html else "markdown"
    head = lambda level, text: f"<h{level}>{cell(text, fmt)}</h{level}>" if html else f"{'#' * level} {text}"
    columns, answers = ["prompt", "expected", *(i["name"] for i in infos)], side_by_side(infos, n_samples)
    parts = [head(1, title), head(2, "Configuration and results"), compare_table(infos, html=html),
             head(2, "Loss curves"), img, head(2, "Sample answers"),
             table([cell(c, fmt) for c in columns], [[cell(r.get(c), fmt) for c in columns] for r in answers],
                   fmt) if answers else "(no samples recorded)"]
    text = "\n\n".join(parts) + "\n"
    if html:
        style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
        text = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{cell(title, 'html')}</title>"
                f"<style>{style}</style></head><body>\n{text}</body></html>\n")
    path.write_text(text, encoding="utf-8")
    return path


def mirror(run, report_to: str) -> str:
    """Copy a finished run's record (config, every metric event, results) into a tracker; returns the command
    that opens the tracker's viewer on it. `run`: a run dict of `kit.engine.runs.list_runs`, or its folder."""
    from .trackers import PROJECT, open_trackers

    info = run if isinstance(run, dict) else load_run(run)
    folder = Path(info["folder"])
    with contextlib.redirect_stdout(io.StringIO()):  # the tracker's own log lines: the command below says it all
        (tracker,) = open_trackers(report_to, folder, info["name"], info.get("config", {}))
        try:
            for ev in metrics(info):
                scalars = ({"train/loss": ev.get("loss"), "train/lr": ev.get("lr")} if ev.get("event") == "step"
                           else {"val/loss": ev.get("val_loss")})
                tracker.log({k: v for k, v in scalars.items() if v is not None}, int(ev.get("step", 0)))
            tracker.results(info.get("results", {}))
        finally:
            tracker.close()
    if report_to == "tensorboard":
        return f"tensorboard --logdir {folder / 'tensorboard'}"
    import os

    return f"TRACKIO_DIR={os.environ['TRACKIO_DIR']} trackio show --project {PROJECT}"
