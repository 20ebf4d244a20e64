"""Mirror a run to a tracker that users of transformers and TRL know: `report_to="trackio"` (local
SQLite under $TRACKIO_DIR, by default the kit's cache folder's trackio/; no account; `trackio show`
opens its dashboard) or `"tensorboard"` (event files in the run folder's tensorboard/;
`tensorboard --logdir` shows them). The kit's own run.json and
metrics.jsonl stay the record; a tracker only mirrors them.

Example:
    >>> with Run("lora-r4", config=cfg, report_to="tensorboard") as run:       # doctest: +SKIP
    ...     train(model, rows, tcfg, callbacks=[run])
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import KitError

TRACKERS = ("trackio", "tensorboard")
PROJECT = "fine-tuning-kit"


class TrackerMissing(KitError, ImportError):
    """A tracker was asked for but its package is not installed; the message names the extra."""


def tracker_names(report_to) -> list[str]:
    """`report_to` as a list of tracker names: None / "none" -> [], "all" -> every installed one."""
    if report_to is None or report_to == "none" or report_to == []:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if names == ["all"]:
        return [n for n in TRACKERS if _installed(n)]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to={report_to!r}: unknown tracker(s) {', '.join(map(repr, unknown))}; the kit "
                         f"mirrors runs to {', '.join(TRACKERS)} (or None)")
    return names


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec("trackio" if name == "trackio" else "tensorboard") is not None


def _scalars(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class TensorBoard:
    """Event files in `folder/tensorboard`, through torch's SummaryWriter."""

    def __init__(self, folder: Path, name: str, config: dict):
        if not _installed("tensorboard"):
            raise TrackerMissing("report_to='tensorboard' needs the tensorboard package: pip install "
                                 "'fine-tuning-kit[track]' (or pip install tensorboard)")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(config.items())))

    def log(self, scalars: dict, step: int) -> None:
        for tag, value in _scalars(scalars).items():
            self.writer.add_scalar(tag, value, step)

    def results(self, results: dict) -> None:
        for tag, value in _scalars(results).items():
            self.writer.add_scalar(f"results/{tag}", value, 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackio:
    """A trackio run in the project "fine-tuning-kit" (local, under $TRACKIO_DIR)."""

    def __init__(self, folder: Path, name: str, config: dict):
        if not _installed("trackio"):
            raise TrackerMissing("report_to='trackio' needs the trackio package: pip install "
                                 "'fine-tuning-kit[track]' (or pip install trackio)")
        import os

        from .cache import cache_root

        os.environ.setdefault("TRACKIO_DIR", str(cache_root() / "trackio"))  # beside the kit's other files
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=PROJECT, name=name, config=config, embed=False, auto_log_cpu=False,
                                auto_log_gpu=False)

    def log(self, scalars: dict, step: int) -> None:
        self.run.log(_scalars(scalars), step=step)

    def results(self, results: dict) -> None:
        self.run.config.update({f"results/{k}": v for k, v in _scalars(results).items()})
        self.run.log({f"results/{k}": v for k, v in _scalars(results).items()})

    def close(self) -> None:
        self.run.finish()


def open_trackers(report_to, folder: Path, name: str, config: dict) -> list:
    """The trackers named by `report_to`, opened; a missing package raises `TrackerMissing` naming the extra."""
    return [{"trackio": Trackio, "tensorboard": TensorBoard}[n](folder, name, config) for n in tracker_names(report_to)]


def installed() -> list[str]:
    """The trackers whose package is installed, in the order of `TRACKERS`."""
    return [n for n in TRACKERS if _installed(n)]
