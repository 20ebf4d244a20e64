"""Curation: page through chat examples, accept / reject / edit each one, every decision saved at once.

`Curator` is a plain object (tests drive it directly or through the widget's buttons); the
decisions file is rewritten atomically after every decision, so a crashed kernel loses nothing,
and opening a Curator on the same file resumes where it stopped.

Example:
    >>> cur = Curator(examples, "curated.jsonl", tok)   # doctest: +SKIP
    >>> cur.accept(); cur.reject(); cur.accepted()      # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.chat import check_example, mask_html, render
from ..engine.data import clean, validate, write_jsonl


class Curator:
    def __init__(self, examples: list[dict], path: str | Path, tok=None, max_length: int | None = None):
        self.examples = [clean(e) for e in examples]
        self.path, self.tok, self.max_length = Path(path), tok, max_length
        self.decisions: dict[int, dict] = {}  # index -> {"decision": ..., "messages": ...}
        if self.path.exists():  # resume an earlier session
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    d = json.loads(line)
                    self.decisions[d["index"]] = {"decision": d["decision"], "messages": d["messages"]}
        self.index = next((i for i in range(len(self.examples)) if i not in self.decisions), 0)

    # --- navigation and decisions
    @property
    def current(self) -> dict:
        """The example at `index`, with its edit applied if it has one."""
        d = self.decisions.get(self.index)
        return {"messages": d["messages"]} if d else self.examples[self.index]

    def go(self, step: int) -> None:
        self.index = max(0, min(len(self.examples) - 1, self.index + step))

    def _decide(self, decision: str, messages: list[dict]) -> None:
        self.decisions[self.index] = {"decision": decision, "messages": messages}
        self.save()
        self.go(1)

    def accept(self) -> None:
        self._decide("accept", self.current["messages"])

    def reject(self) -> None:
        self._decide("reject", self.current["messages"])

    def edit(self, messages: list[dict] | str) -> list:
        """Replace the current example (a message list, or its JSON text) and accept it if it is valid.

        Returns the format problems; with errors nothing is saved and the example stays current.
        """
        if isinstance(messages, str):
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError as e:
                from ..engine.chat import Problem

                return [Problem(0, "messages", "error", f"malformed JSON: {e.msg} at column {e.colno}")]
        problems = check_example({"messages": messages})
        if not any(p.severity == "error" for p in problems):
            self._decide("edit", messages)
        return problems

    def save(self) -> None:
        """Rewrite the decisions file atomically (temporary file + rename)."""
        write_jsonl(self.path, [{"index": i, **d} for i, d in sorted(self.decisions.items())])

    # --- views
    def problems(self) -> list:
        out = check_example(self.current)
        if self.tok is not None and not any(p.severity == "error" for p in out):
            out += validate([self.current], self.tok, self.max_length).problems
        return out

    def accepted(self) -> list[dict]:
        """The curated dataset: accepted and edited examples, in their original order."""
        return [{"messages": d["messages"]} for _, d in sorted(self.decisions.items()) if d["decision"] != "reject"]

    def counts(self) -> dict:
        c = {"accept": 0, "reject": 0, "edit": 0}
        for d in self.decisions.values():
            c[d["decision"]] += 1
        return {**c, "undecided": len(self.examples) - len(self.decisions)}

    def widget(self):
        import ipywidgets as w

        view, status = w.HTML(), w.HTML()
        editor = w.Textarea(layout=w.Layout(width="100%", height="7em"))
        buttons = {name: w.Button(description=name) for name in ("◀ prev", "accept", "reject", "save edit", "next ▶")}
        buttons["accept"].button_style, buttons["reject"].button_style = "success", "danger"

        def refresh(problems=None) -> None:
            ex = self.current
            probs = self.problems() if problems is None else problems
            shown = mask_html(render(ex, self.tok, self.max_length), self.tok) if self.tok and not any(
                p.severity == "error" for p in probs) else f"<pre>{json.dumps(ex, indent=1)}</pre>"
            listed = "".join(f"<li><b>{p.severity}</b> {p.field}: {p.message}</li>" for p in probs) or "<li>none</li>"
            decided = self.decisions.get(self.index, {}).get("decision", "undecided")
            view.value = f"<b>example {self.index + 1} / {len(self.examples)}</b> ({decided}){shown}"
            status.value = f"problems:<ul>{listed}</ul>counts: {self.counts()} &nbsp; saved to <code>{self.path}</code>"
            editor.value = json.dumps(ex["messages"], indent=1, ensure_ascii=False)

        def act(fn):
            return lambda _: (fn(), refresh())

        buttons["◀ prev"].on_click(act(lambda: self.go(-1)))
        buttons["next ▶"].on_click(act(lambda: self.go(1)))
        buttons["accept"].on_click(act(self.accept))
        buttons["reject"].on_click(act(self.reject))

        def save_edit(_) -> None:
            text = editor.value
            problems = self.edit(text)
            if any(p.severity == "error" for p in problems):
                refresh(problems)
                editor.value = text  # keep the learner's draft to fix
            else:
                refresh()

        buttons["save edit"].on_click(save_edit)
        refresh()
        box = w.VBox([view, w.HBox(list(buttons.values())), editor, status])
        box.buttons, box.editor = buttons, editor  # handles for tests and for scripted use
        return box
