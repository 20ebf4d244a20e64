"""Callbacks: the one dispatcher that tells a run's listeners what happened.

A callback is any object with some of `on_step(event)`, `on_eval(event)`, `on_checkpoint(event)`,
`on_message(event)`, `on_end(history)` and `on_model(model, tok)`; a method it lacks is skipped.

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
