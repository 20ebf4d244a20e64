"""Callbacks: the one dispatcher that tells a run's listeners what happened.

A callback is any object with some of `on_step(event)`, `on_eval(event)`, `on_checkpoint(event)`,
`on_message(event)`, `on_end(history)` and `on_model(model, tok)`; a method it lacks is skipped.
`ProgressBar` is the callback the command line uses.

Example:
    >>> class Printer:
    ...     def on_message(self, ev):
    ...         print(ev["text"])
    >>> emit([Printer(), object()], "on_message", {"step": 0, "text": "hello"})
    hello
"""

from __future__ import annotations

from collections.abc import Sequence


def emit(callbacks: Sequence, name: str, *args) -> None:
    """Call `name(*args)` on every callback that has it, in order."""
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


def message(callbacks: Sequence, text: str, step: int = 0) -> None:
    """Tell the callbacks (`on_message`) and print a note about the run."""
    emit(callbacks, "on_message", {"step": step, "text": text})
    print(text)


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

    def on_end(self, hist) -> None:
        if self.bar is not None:
            self.bar.close()
