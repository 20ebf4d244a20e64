"""Output hygiene of an executed notebook: what a learner sees must look finished.

`HOOK` is a cell run first in the kernel: it counts the matplotlib figures each cell creates (into a JSON file
beside the notebook), less those drawn into a widget (`plots.svg`) or into a report file (`runs.report`).
`problems(nb, counts)` then reads the executed cells and names:
  * a cell that created a figure but shows no image (nor a widget): e.g. `image(fig)` that is not the cell's
    last expression, so the figure is drawn and thrown away;
  * a float printed with more than 4 decimals (`0.31669407129339494`, `9.547611261950806e-05`);
  * a raw Markdown table in a text output (`| a | b |` over `|---|---|`): a table should render.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

COUNTS = "_kit_figure_counts.json"
HOOK = f"""
import json as _kit_json
import matplotlib.figure as _kit_mf
import kit.engine.plots as _kit_plots
import kit.engine.runs as _kit_runs
_kit_state = {{"made": 0, "elsewhere": 0, "cells": {{}}}}
def _kit_counting(fn, key):
    def counted(*a, **k):
        _kit_state[key] += 1
        return fn(*a, **k)
    return counted
_kit_mf.Figure.__init__ = _kit_counting(_kit_mf.Figure.__init__, "made")
_kit_plots.svg = _kit_counting(_kit_plots.svg, "elsewhere")  # drawn into a widget, shown where the widget is
_kit_runs.report = _kit_counting(_kit_runs.report, "elsewhere")  # its loss curves go into the report file
def _kit_after(result):
    n = _kit_state["made"] - _kit_state["elsewhere"]
    _kit_state["made"] = _kit_state["elsewhere"] = 0
    if n > 0:
        _kit_state["cells"][str(result.execution_count)] = n
        with open({COUNTS!r}, "w") as f:
            _kit_json.dump(_kit_state["cells"], f)
get_ipython().events.register("post_run_cell", _kit_after)
"""

LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:[eE][-+]?\d+)?(?![\w.])")
TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$")
SHOWN = ("image/png", "image/svg+xml", "image/jpeg", "application/vnd.jupyter.widget-view+json")


def _text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "") if "text/html" not in output.get("data", {}) else ""


def problems(nb, counts: dict[str, int]) -> list[str]:
    """Every hygiene problem of an executed notebook (`nb`: nbformat, `counts`: figures made per execution count)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        made = counts.get(str(cell.get("execution_count")), 0)
        shown = any(k in o.get("data", {}) for o in cell.outputs for k in SHOWN)
        if made and not shown:
            out.append(f"cell {i}: {made} figure(s) created, none displayed (is the image(...) the last line?)")
        text = "".join(_text(o) for o in cell.outputs)
        for m in LONG_FLOAT.finditer(text):
            out.append(f"cell {i}: a float with more than 4 decimals: {m.group(0)!r}")
            break
        if any(TABLE_RULE.match(line) for line in text.splitlines()):
            out.append(f"cell {i}: a raw Markdown table in a text output (display it as HTML)")
    return out


def read_counts(folder: Path) -> dict[str, int]:
    path = Path(folder) / COUNTS
    counts = json.loads(path.read_text()) if path.is_file() else {}
    path.unlink(missing_ok=True)
    return counts
