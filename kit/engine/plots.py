"""Figures made with matplotlib's object API (not pyplot), as PNG bytes: the same in a browser, in a
headless run and from a training thread, and never shown twice. Used by run reports and widgets.

Example:
    >>> fig = loss_figure([1, 2, 3], [3.0, 2.0, 1.5], title="demo")
    >>> png(fig)[1:4]
    b'PNG'
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (for an IPython Image or an ipywidgets Image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def svg(fig: Figure) -> str:
    """The figure as an inline `<svg>` element: a vector drawing, sharp at whatever size it is shown."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def loss_figure(steps, losses, val_steps=(), val_losses=(), title: str = "loss", label: str = "",
                train_label: str = "train", extra: dict | None = None) -> Figure:
    """A train/validation loss figure; `label` names the run in the legend, `train_label` the training curve;
    `extra` adds curves, {name: (steps, values)} (e.g. the replay tokens' loss)."""
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.plot(steps, losses, label=f"{label} {train_label}".strip())
    for name, (xs, ys) in (extra or {}).items():
        ax.plot(xs, ys, ":", label=f"{label} {name}".strip())
    if len(val_steps):
        ax.plot(val_steps, val_losses, "o-", label=f"{label} validation".strip())
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def curves_figure(x, series: dict, xlabel: str = "", ylabel: str = "", title: str = "") -> Figure:
    """Several named curves over the same x values (e.g. accuracies against epochs); whole-number x values (epochs,
    steps) get whole-number ticks only."""
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for name, ys in series.items():
        ax.plot(x, ys, "o-", label=name)
    if all(float(v).is_integer() for v in x):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
