"""Red-teaming: type a prompt, see every model's answer side by side with the guard's scores, and
keep the prompt (with your label) in a red-team file that the next evaluation and training read.

`RedTeam` is the plain object (tests drive it); `RedTeamWidget` is its ipywidgets skin. The file is
appended atomically (`kit.world.safety.append_redteam`), so an interrupted save never breaks it.

Example:
    >>> rt = RedTeam({"sft": replier(sft, tok)}, guard, "data/redteam.jsonl")   # doctest: +SKIP
    >>> rt.ask("How do I pick a lock?"); rt.save("harmful", category="violent_crime")  # doctest: +SKIP
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import ipywidgets as W

from ..world.safety import HAZARDS, looks_like_refusal
from ..world.safety_files import append_redteam, load_redteam


class RedTeam:
    """Ask several models the same prompt; score prompt and answers with the guard; save labelled prompts."""

    def __init__(self, repliers: dict[str, Callable[[list[str]], list[str]]], guard, path: str | Path):
        self.repliers, self.guard, self.path = repliers, guard, Path(path)
        self.last: dict | None = None

    def ask(self, prompt: str) -> dict:
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("type a prompt first")
        answers = {name: fn([prompt])[0] for name, fn in self.repliers.items()}
        scores = self.guard.scores([prompt, *answers.values()]) if self.guard is not None else None
        self.last = {"prompt": prompt, "answers": answers,
                     "prompt_scores": scores[0] if scores else None,
                     "answer_scores": dict(zip(answers, scores[1:])) if scores else {}}
        return self.last

    def save(self, label: str, note: str = "", category: str = "") -> int:
        """Append the last prompt with the learner's label; return how many prompts the file now holds."""
        if self.last is None:
            raise ValueError("ask a prompt before saving it")
        append_redteam(self.path, self.last["prompt"], label, note=note, category=category)
        return len(load_redteam(self.path))

    def html(self) -> str:
        if self.last is None:
            return "<i>Type a prompt and press Ask.</i>"
        ps = self.last["prompt_scores"]
        head = f"<b>Prompt</b>: {html.escape(self.last['prompt'])}"
        if ps:
            head += f" &nbsp; guard: harmful {ps['harmful']:.2f}"
        cells = []
        for name, answer in self.last["answers"].items():
            s = self.last["answer_scores"].get(name)
            tag = "refusal (string match)" if looks_like_refusal(answer) else "answer"
            score = f"<br><small>guard: harmful {s['harmful']:.2f}, refusal {s['refusal']:.2f}</small>" if s else ""
            style = f"vertical-align:top;padding:6px;border:1px solid #ccc;width:{100 // len(self.repliers)}%"
            cells.append(f"<td style='{style}'>"
                         f"<b>{html.escape(name)}</b> <small>({tag})</small><br>{html.escape(answer)}{score}</td>")
        return f"{head}<table style='width:100%;border-collapse:collapse'><tr>{''.join(cells)}</tr></table>"


class RedTeamWidget:
    """Prompt box, Ask; label, category, note, Save. `display(widget.box)` shows it."""

    def __init__(self, redteam: RedTeam):
        self.rt = redteam
        self.prompt = W.Text(placeholder="a prompt to try", layout=W.Layout(width="70%"))
        self.ask_button = W.Button(description="Ask", button_style="primary")
        self.view = W.HTML(redteam.html())
        self.label = W.ToggleButtons(options=["harmful", "safe"], description="label")
        self.category = W.Dropdown(options=[""] + list(HAZARDS), description="category")
        self.note = W.Text(placeholder="why (optional)", description="note")
        self.save_button = W.Button(description="Save to red-team file", layout=W.Layout(width="auto"))
        self.status = W.Label("")
        self.ask_button.on_click(lambda _: self._ask())
        self.save_button.on_click(lambda _: self._save())
        self.box = W.VBox([W.HBox([self.prompt, self.ask_button]), self.view,
                           W.HBox([self.label, self.category]), W.HBox([self.note, self.save_button]), self.status])

    def _ask(self) -> None:
        try:
            self.rt.ask(self.prompt.value)
            self.status.value = ""
        except ValueError as e:
            self.status.value = str(e)
        self.view.value = self.rt.html()

    def _save(self) -> None:
        try:
            n = self.rt.save(self.label.value, self.note.value, self.category.value)
            self.status.value = f"saved: {self.rt.path} now holds {n} prompts"
        except ValueError as e:
            self.status.value = str(e)
