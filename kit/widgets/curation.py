"""Curation: page through chat examples, accept / reject / edit each one, every decision saved at once.

`Curator` is a plain object (tests drive it directly or through the widget's buttons); the
decisions file is rewritten atomically after every decision, so a crashed kernel loses nothing,
and opening a Curator on the same file resumes where it stopped. A decision is keyed by a hash of
the example's content (not its position), so a Curator opened on another list never applies an old
decision to a different example; decisions about examples not in the list stay in the file. A line
of the file that cannot be read (cut short by a killed write) is reported with its line number, and
every other decision is kept.

Example:
    >>> cur = Curator(examples, "curated.jsonl", tok)   # doctest: +SKIP
    >>> cur.accept(); cur.reject(); cur.accepted()      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import html
import json
import warnings
from pathlib import Path

from ..engine.cache import remove_stale_temps
from ..engine.chat import Problem, check_example, mask_html, render
from ..engine.data import clean, validate, write_jsonl
from ..engine.lines import read_records

DECISIONS = ("accept", "reject", "edit")


def content_keys(examples: list[dict]) -> list[str]:
    """One key per example: a hash of its content, and which copy of that content it is (0, 1, ...)."""
    seen: dict[str, int] = {}
    out = []
    for ex in examples:
        digest = hashlib.sha256(json.dumps(clean(ex), sort_keys=True).encode()).hexdigest()[:16]
        out.append(f"{digest}-{seen.get(digest, 0)}")
        seen[digest] = seen.get(digest, 0) + 1
    return out


class Curator:
    def __init__(self, examples: list[dict], path: str | Path, tok=None, max_length: int | None = None):
        self.examples = [clean(e) for e in examples]
        self.keys = content_keys(self.examples)
        self.path, self.tok, self.max_length = Path(path), tok, max_length
        self.decisions: dict[int, dict] = {}  # index -> {"decision": ..., "messages": ...}
        self.others: list[dict] = []          # saved decisions about examples that are not in this list
        self.load_problems: list[Problem] = []  # lines of the decisions file that could not be read
        remove_stale_temps(self.path)
        if self.path.exists():  # resume an earlier session
            self._load()
        self.index = next((i for i in range(len(self.examples)) if i not in self.decisions), 0)

    def _load(self) -> None:
        records, self.load_problems = read_records(self.path)
        where = {k: i for i, k in enumerate(self.keys)}
        for line, rec in records:
            if not (isinstance(rec, dict) and rec.get("decision") in DECISIONS
                    and isinstance(rec.get("messages"), list)):
                self.load_problems.append(Problem(line, "", "error", "not a decision (expected an object with "
                                                                     "'decision' and 'messages')"))
                continue
            key = rec.get("key")
            if key is None:  # a file written before decisions had keys: match by content
                key = content_keys([{"messages": rec["messages"]}])[0]
            if isinstance(key, str) and key in where:
                self.decisions[where[key]] = {"decision": rec["decision"], "messages": rec["messages"]}
            else:
                self.others.append(rec)
        for p in self.load_problems:
            warnings.warn(f"{self.path} line {p.line}: {p.message}; that line is skipped (every other decision "
                          "is kept) and is left out when the file is next saved", stacklevel=3)

    # --- navigation and decisions
    @property
    def current(self) -> dict | None:
        """The example at `index`, with its edit applied if it has one (None when there is no example)."""
        if not self.examples:
            return None
        d = self.decisions.get(self.index)
        return {"messages": d["messages"]} if d else self.examples[self.index]

    def go(self, step: int) -> None:
        self.index = max(0, min(len(self.examples) - 1, self.index + step))

    def _decide(self, decision: str, messages: list[dict]) -> None:
        if not self.examples:
            raise ValueError("there is no example to decide on: the list given to Curator is empty")
        self.decisions[self.index] = {"decision": decision, "messages": messages}
        self.save()
        self.go(1)

    def accept(self) -> None:
        self._decide("accept", self.current["messages"] if self.examples else [])

    def reject(self) -> None:
        self._decide("reject", self.current["messages"] if self.examples else [])

    def edit(self, messages: list[dict] | str) -> list:
        """Replace the current example (a message list, or its JSON text) and accept it if it is valid.

        Returns the format problems; with errors nothing is saved and the example stays current.
        """
        if isinstance(messages, str):
            from ..engine.lines import LineError, parse_json

            try:
                messages = parse_json(messages)[0]
            except LineError as e:
                return [Problem(0, "messages", "error", str(e))]
        problems = check_example({"messages": messages})
        if not any(p.severity == "error" for p in problems):
            self._decide("edit", messages)
        return problems

    def save(self) -> None:
        """Rewrite the decisions file atomically (temporary file + rename)."""
        mine = [{"key": self.keys[i], "index": i, **d} for i, d in sorted(self.decisions.items())]
        write_jsonl(self.path, mine + self.others)

    # --- views
    def problems(self) -> list:
        if self.current is None:
            return []
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
            for name in ("accept", "reject", "save edit"):
                buttons[name].disabled = ex is None
            if ex is None:
                view.value, editor.value = "<i>no example to curate: the list is empty</i>", ""
                status.value = f"counts: {html.escape(str(self.counts()))}"
                return
            probs = self.problems() if problems is None else problems
            shown = mask_html(render(ex, self.tok, self.max_length), self.tok) if self.tok and not any(
                p.severity == "error" for p in probs) else \
                f"<pre>{html.escape(json.dumps(ex, indent=1, ensure_ascii=False))}</pre>"
            listed = "".join(f"<li><b>{p.severity}</b> {html.escape(p.field)}: {html.escape(p.message)}</li>"
                             for p in probs) or "<li>none</li>"
            unread = "".join(f"<li>decisions file line {p.line}: {html.escape(p.message)}</li>"
                             for p in self.load_problems)
            decided = self.decisions.get(self.index, {}).get("decision", "undecided")
            view.value = f"<b>example {self.index + 1} / {len(self.examples)}</b> ({decided}){shown}"
            status.value = (f"problems:<ul>{listed}</ul>{'not read:<ul>' + unread + '</ul>' if unread else ''}"
                            f"counts: {html.escape(str(self.counts()))} &nbsp; saved to "
                            f"<code>{html.escape(str(self.path))}</code>")
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
