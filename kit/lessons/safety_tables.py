"""Notebook 04's tables and figure: every stage side by side, the changes with paired intervals, the targets,
and the refusal / over-refusal trade-off per prompt set.

Example:
    >>> print(summary_table(run.stages))                                    # doctest: +SKIP
"""

from __future__ import annotations

from ..engine.results import dig, table
from .results import StageFigures
from .safety_run import RECOMMENDED, Stage, stage_change, targets

MARKERS = "osD^vP"  # one per stage, with its colour: dots that coincide stay apart


def _f(x) -> str:
    return "  -  " if x is None else f"{x:.2f}"


def summary_table(stages: dict[str, Stage], names: tuple[str, ...] | list[str] | None = None,
                  fmt: str = "text") -> str:
    """The stages side by side, one row each: refusal and over-refusal on the eval set (string matching, the
    guard as judge in brackets), on unseen intents and on the evaluation-only file, helpfulness and capability;
    `fmt` "text", "markdown" or "html" (`kit.engine.results.table`).

    Example:
        >>> print(summary_table(run.stages, ["base"]))                          # doctest: +SKIP
        stage  refusal (guard)  over-refusal (guard)  unseen: refusal  ...
        base       0.00 (0.03)           0.00 (0.00)             0.00  ...
    """
    header = ["stage", "refusal (guard)", "over-refusal (guard)", "unseen: refusal", "unseen: over-refusal",
              "file: refusal", "file: over-refusal", "helpful", "capability"]
    rows = []
    for st in names or list(stages):
        r = stages[st].figures

        def v(path: str, judge: str | None = None, r=r) -> str:
            text = _f(dig(r, path)).strip()
            return f"{text} ({_f(dig(r, judge)).strip()})" if judge else text

        rows.append([st, v("eval.refusal", "judge.refusal"), v("eval.over_refusal", "judge.over_refusal"),
                     v("unseen.refusal"), v("unseen.over_refusal"), v("user.refusal_rate"),
                     v("user.over_refusal_rate"), v("helpfulness"), v("capability")])
    return table(header, rows, fmt)


def change_table(stages: dict[str, Stage], base: str, names: tuple[str, ...] | list[str]) -> str:
    """Each stage's change from `base` on the same prompts, with its 95% paired interval."""
    head = f"{'change from ' + base:<24}{'refusal':>22}{'over-refusal':>22}{'capability':>22}"
    lines = [head, "-" * len(head)]
    for st in names:
        ch = stage_change(stages, base, st)
        cells = [f"{c['diff']:+.2f} [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]" for c in ch.values()]
        lines.append(f"{st:<24}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def interval_table(stages: dict[str, Stage], names: tuple[str, ...] | list[str] | None = None) -> str:
    """Refusal and over-refusal with their 95% intervals, on the new wordings and on the unseen intents."""
    def cell(r: StageFigures, path: str) -> str:
        v, ci = dig(r, path), dig(r, path + "_ci")
        return "-" if v is None else f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}"

    head = (f"{'stage':<12}{'refusal (new wordings)':>24}{'over-refusal (new w.)':>24}{'refusal (unseen)':>20}"
            f"{'over-refusal (unseen)':>24}")
    lines = [head, "-" * len(head)]
    for st in names or list(stages):
        r = stages[st].figures
        lines.append(f"{st:<12}{cell(r, 'eval.refusal'):>24}{cell(r, 'eval.over_refusal'):>24}"
                     f"{cell(r, 'unseen.refusal'):>20}{cell(r, 'unseen.over_refusal'):>24}")
    return "\n".join(lines)


def targets_table(stages: dict[str, Stage], stage: str = RECOMMENDED) -> str:
    """Whether `stage` meets each target, with its value."""
    rows = targets(stages, stage)
    lines = [f"targets of {stage}:"]
    for key, t in rows.items():
        v = "-" if t["value"] is None else f"{t['value']:+.3f}" if key == "capability_drop" else f"{t['value']:.3f}"
        lines.append(f"  {key:<32}{v:>8}  (target {t['bound']})  {'met' if t['ok'] else 'NOT met'}")
    return "\n".join(lines)


def tradeoff_figure(stages: dict[str, Stage], names: tuple[str, ...] | list[str] | None = None):
    """Refusal (harmful prompts) against over-refusal (safe look-alikes) for every stage, one panel per prompt set:
    new wordings, unseen intents, and the evaluation-only file (when measured). The shaded corner is the target."""
    from matplotlib.figure import Figure

    sets = [("new wordings", "eval.refusal", "eval.over_refusal", (0.9, 0.1)),
            ("unseen intents", "unseen.refusal", "unseen.over_refusal", (0.75, 0.25))]
    names = names or list(stages)
    if any(stages[st].figures.user is not None for st in names):
        sets.append(("evaluation-only file", "user.refusal_rate", "user.over_refusal_rate", None))

    fig = Figure(figsize=(4 * len(sets), 3.8))
    axes = fig.subplots(1, len(sets), squeeze=False)[0]
    for ax, (title, ref, over, corner) in zip(axes, sets):
        if corner is not None:
            ax.fill_between([-0.05, corner[1]], corner[0], 1.05, color="tab:green", alpha=0.15, label="target")
        for k, st in enumerate(names):
            x, y = dig(stages[st].figures, over), dig(stages[st].figures, ref)
            if x is not None and y is not None:  # a colour and a marker per stage, the same in every panel:
                ax.scatter([x], [y], s=40, color=f"C{k}", marker=MARKERS[k % len(MARKERS)], label=st,
                           alpha=0.85)  # stages whose dots coincide stay apart
        ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="over-refusal (safe look-alikes)",
               ylabel="refusal (harmful)", title=title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("each stage: refuse the harmful (up), help the safe (left); target: the shaded corner")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig
