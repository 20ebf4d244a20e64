"""Widgets as plain HTML in an executed notebook, for the HTML copies `make class-ready` hands out.

A widget's output in a notebook file is only a reference to its state; nbconvert's HTML page draws it with
JavaScript fetched from a CDN, so on an offline classroom machine every control (and notebook 03's live loss
plot, which lives inside the panel) shows as an empty `Out[n]:`. `snapshot(nb)` replaces each widget output
with what the widget showed when the notebook finished (its text, its HTML, its values), marked as a snapshot, and
drops the widget state (and with it the CDN scripts) from the page.

Example:
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> nb.metadata["widgets"] = {STATE: {"state": {"a": {"model_name": "LabelModel", "state": {"value": "hi"}}}}}
    >>> nb.cells = [nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output(
    ...     "display_data", {VIEW: {"model_id": "a"}, "text/plain": "Label(value='hi')"})])]
    >>> snapshot(nb)
    1
    >>> "hi" in nb.cells[0].outputs[0].data["text/html"], "widgets" in nb.metadata
    (True, False)
"""

from __future__ import annotations

import html

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
NOTE = ("<p style='color:#666;font-size:85%'><i>A snapshot of an interactive control, as it was when the notebook "
        "finished running: open the notebook in JupyterLab to use it.</i></p>")


def _ref(value) -> str | None:
    """The model id in an "IPY_MODEL_<id>" reference."""
    return value[len("IPY_MODEL_"):] if isinstance(value, str) and value.startswith("IPY_MODEL_") else None


def _output(out: dict) -> str:
    """One output captured by an Output widget: its text, its HTML, or its image."""
    if out.get("output_type") == "stream":
        return f"<pre>{html.escape(str(out.get('text', '')))}</pre>"
    data = out.get("data", {})
    if "image/png" in data:
        return f"<img src='data:image/png;base64,{data['image/png']}'>"
    if "image/svg+xml" in data:
        return str(data["image/svg+xml"])
    return str(data.get("text/html") or f"<pre>{html.escape(str(data.get('text/plain', '')))}</pre>")


def render(models: dict, model_id: str, depth: int = 0) -> str:
    """One widget (and its children) as static HTML."""
    model = models.get(model_id)
    if model is None or depth > 20:
        return ""
    name, st = model.get("model_name", ""), model.get("state", {})
    label = html.escape(str(st.get("description") or ""))
    value = st.get("value")
    if name.endswith(("BoxModel", "AccordionModel", "TabModel")):
        row = name.startswith("HBox")
        inner = "".join(render(models, r, depth + 1) for r in map(_ref, st.get("children", [])) if r)
        style = "display:flex;gap:1em;align-items:flex-start" if row else ""
        return f"<div style='{style}'>{inner}</div>"
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<div>{value or ''}</div>"  # the kit's own HTML (escaped where it holds user text)
    if name == "OutputModel":
        return "".join(map(_output, st.get("outputs", [])))
    if name == "ButtonModel":
        return f"<span style='border:1px solid #999;border-radius:3px;padding:0 .4em'>{label}</span>"
    if name == "TextareaModel":
        text = html.escape(str(value or ''))
        return f"<div>{label}<pre style='border:1px solid #ccc;padding:.3em'>{text}</pre></div>"
    if name in ("IntProgressModel", "FloatProgressModel"):
        return f"<div>{label} {value} of {st.get('max')}</div>"
    if value is not None:
        text = html.escape(", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
        return f"<div>{label + ': ' if label else ''}<code>{text}</code></div>"
    return f"<div>{label}</div>" if label else ""


def snapshot(nb) -> int:
    """Replace every widget output of `nb` with static HTML (in place); return how many were replaced."""
    models = nb.metadata.get("widgets", {}).get(STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if VIEW in data:
                shown = render(models, data[VIEW].get("model_id", ""))
                out["data"] = {"text/html": (shown or "<div><i>(an interactive control)</i></div>") + NOTE,
                               "text/plain": data.get("text/plain", "")}
                replaced += 1
    nb.metadata.pop("widgets", None)
    return replaced
