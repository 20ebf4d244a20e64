"""Notebook views: live loss plot, next-token bar chart, sampling controls.

This package is the only place in the kit that imports ipywidgets. The logic sits in plain
objects (`Sampler.sample()`), so tests drive it without a browser and a headless run
(nbclient, CI) shows the same results.

Example:
    >>> plot = LossPlot(every=2)                        # doctest: +SKIP
    >>> kit.base_model(profile, callbacks=[plot])       # doctest: +SKIP
"""

from __future__ import annotations

from matplotlib.figure import Figure

from ..engine.generate import complete, next_token_probs
from ..engine.plots import curves_figure, loss_figure, png  # noqa: F401  (the notebooks' names)


def cell_text(value) -> str:
    """How a table shows a value: rates with 3 decimals, counts with thousands separators, [low, high] intervals,
    "–" for none."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return f"[{value[0]:.2f}, {value[1]:.2f}]"
    return str(value)


def table(rows: dict[str, dict], title: str | None = None):
    """{row name: {column: value}} as an HTML table (IPython `HTML`, shown as a table in Jupyter; its text form,
    for a plain console, is the same table in aligned columns)."""
    import html

    from IPython.display import HTML

    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(name))}</th>"
                   + "".join(f"<td>{html.escape(cell_text(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for name, r in rows.items())
    caption = f"<caption>{html.escape(title)}</caption>" if title else ""

    class Table(HTML):
        def __repr__(self) -> str:
            width = max([len(str(n)) for n in rows] + [0]) + 2
            cells = {c: max([len(str(c))] + [len(cell_text(r.get(c))) for r in rows.values()]) + 2 for c in columns}
            lines = [title] if title else []
            lines.append(" " * width + "".join(f"{str(c):>{cells[c]}}" for c in columns))
            lines += [f"{str(n):<{width}}" + "".join(f"{cell_text(r.get(c)):>{cells[c]}}" for c in columns)
                      for n, r in rows.items()]
            return "\n".join(lines)

    return Table(f"<table>{caption}<tr><th></th>{head}</tr>{body}</table>")


def image(fig: Figure):
    """The figure as an IPython Image, ready to display."""
    from IPython.display import Image

    return Image(data=png(fig))


class LossPlot:
    """A training callback that redraws the loss curves in the notebook every `every` read-outs."""

    def __init__(self, every: int = 5, title: str = "pre-training loss"):
        self.every, self.title = every, title
        self.steps, self.losses, self.val_steps, self.val_losses = [], [], [], []
        self.handle, self._n = None, 0

    def _draw(self) -> None:
        from IPython.display import display

        img = image(loss_figure(self.steps, self.losses, self.val_steps, self.val_losses, self.title))
        if self.handle is None:
            self.handle = display(img, display_id=True)
        else:
            self.handle.update(img)

    def on_step(self, ev: dict) -> None:
        self.steps.append(ev["step"])
        self.losses.append(ev["loss"])
        self._n += 1
        if self._n % self.every == 0:
            self._draw()

    def on_eval(self, ev: dict) -> None:
        self.val_steps.append(ev["step"])
        self.val_losses.append(ev["val_loss"])

    def on_end(self, hist) -> None:
        self._draw()

    def show(self, history: dict) -> None:
        """Draw a finished run's curves (e.g. a model loaded from the cache)."""
        self.steps, self.losses = history["steps"], history["losses"]
        self.val_steps, self.val_losses = history["val_steps"], history["val_losses"]
        self._draw()


def next_token_chart(model, tok, prompt: str, k: int = 10):
    """Bar chart (an IPython Image) of the `k` most likely next tokens after `prompt`."""
    pairs = next_token_probs(model, tok, prompt, k)
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    labels = [repr(t) for t, _ in pairs][::-1]
    ax.barh(labels, [p for _, p in pairs][::-1])
    ax.set_xlabel("probability")
    ax.set_title(f"next token after {prompt!r}")
    ax.set_xlim(0, 1)
    return image(fig)


def token_histogram(stats: dict, bins: int = 30):
    """Histogram (an IPython Image) of tokens per example, from `kit.engine.data.stats()`."""
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist(stats["per_example"], bins=bins)
    ax.set_xlabel("tokens per example (after the chat template)")
    ax.set_ylabel("examples")
    ax.set_title(f"{stats['examples']} examples, mean {stats['mean_tokens']:.0f} tokens")
    return image(fig)


class Sampler:
    """Temperature / top-k controls that sample continuations of a prompt.

    `Sampler(model, tok).sample()` works without widgets; `.widget()` returns the controls.
    """

    def __init__(self, model, tok, prompt: str = "The capital of France is", n: int = 3, max_new_tokens: int = 24):
        self.model, self.tok, self.n, self.max_new_tokens = model, tok, n, max_new_tokens
        self.prompt, self.temperature, self.top_k, self.seed = prompt, 0.8, 20, 0

    def sample(self) -> list[str]:
        return complete(self.model, self.tok, [self.prompt] * self.n, max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature, top_k=self.top_k, seed=self.seed, mark_cut=True)

    def widget(self):
        import ipywidgets as w

        prompt = w.Text(value=self.prompt, description="prompt", layout=w.Layout(width="95%"))
        temp = w.FloatSlider(value=self.temperature, min=0.0, max=2.0, step=0.1, description="temperature")
        topk = w.IntSlider(value=self.top_k, min=0, max=100, description="top-k (0=all)")
        button = w.Button(description="Sample", button_style="primary")
        out = w.Textarea(layout=w.Layout(width="95%", height="8em"))

        def run(_=None) -> None:
            self.prompt, self.temperature, self.top_k = prompt.value, temp.value, topk.value
            self.seed += 1
            texts = self.sample()
            out.value = "\n".join(f"{i + 1}. {self.prompt}{t}" for i, t in enumerate(texts))

        button.on_click(run)
        run()
        box = w.VBox([prompt, w.HBox([temp, topk, button]), out])
        box.sampler_button, box.sampler_output = button, out  # handles for tests
        return box


class ChatCompare:
    """One prompt, the replies of several models side by side (e.g. base vs fine-tuned).

    `ChatCompare({"base": (m0, tok), "tuned": (m1, tok)}).answers("Capital of Peru?")` works without widgets.
    """

    def __init__(self, models: dict, max_new_tokens: int = 40):
        self.models, self.max_new_tokens = models, max_new_tokens

    def answers(self, prompt: str) -> dict[str, str]:
        from ..engine.generate import chat_replies

        conv = [[{"role": "user", "content": prompt}]]
        return {name: chat_replies(m, t, conv, max_new_tokens=self.max_new_tokens, mark_cut=True)[0][0]
                for name, (m, t) in self.models.items()}

    def widget(self, prompt: str = "What is the capital of Peru?"):
        import html

        import ipywidgets as w

        box_in = w.Text(value=prompt, description="prompt", layout=w.Layout(width="70%"))
        button = w.Button(description="Ask all", button_style="primary")
        cells = {name: w.HTML(layout=w.Layout(width=f"{96 // max(1, len(self.models))}%")) for name in self.models}

        def ask(_=None) -> None:
            for name, text in self.answers(box_in.value).items():
                cells[name].value = f"<b>{html.escape(name)}</b><br>{html.escape(text) or '<i>(empty)</i>'}"

        button.on_click(ask)
        ask()
        box = w.VBox([w.HBox([box_in, button]), w.HBox(list(cells.values()))])
        box.button, box.prompt, box.cells = button, box_in, cells
        return box
