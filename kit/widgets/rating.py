"""The feedback round: read two answers to the same prompt blind, pick the better one, and get DPO pairs.

Each item is (prompt, answer_1, answer_2), e.g. one question answered by two runs. A seeded coin per
item decides which answer is shown as A, so the rater cannot tell the runs apart; the stored pair
names the right one as chosen all the same. `RatingSession` is a plain object (tests and scripted
reviewers drive it); `RatingWidget` is its ipywidgets skin. The file of record is
`<path stem>.ratings.jsonl`: every decision, with its reason ("both_bad" included, which makes no
pair), rewritten atomically after every choice. `path` holds the pairs derived from it, in the kit's
preference format; it is written right after the decisions, and written again from them when a
session opens, so a kill between the two writes leaves it behind only until the next open. A line of
the decisions file that cannot be read (cut short) is reported with its line, the others are kept.

Example:
    >>> session = RatingSession(list(zip(questions, answers_1, answers_2)), "prefs.jsonl")  # doctest: +SKIP
    >>> RatingWidget(session)                                                # doctest: +SKIP
    >>> auto_rate(session, fact_judge({"Capital of Peru?": "Lima"}))         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import html
import json
import random
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..engine.cache import remove_stale_temps
from ..engine.data import write_jsonl
from ..engine.lines import read_records

CHOICES = ("a", "b", "both_bad")


def _messages(x, role: str) -> list[dict]:
    return [{"role": role, "content": x}] if isinstance(x, str) else [dict(m) for m in x]


def _text(messages: list[dict], role: str) -> str:
    return [m["content"] for m in messages if m["role"] == role][-1]


class RatingSession:
    """Items to rate, the A/B order of each (seeded), the decisions so far; `choose()` saves at once."""

    def __init__(self, items, path: str | Path, seed: int = 0):
        self.items = [{"prompt": _messages(it[0], "user"), "answers": [_messages(a, "assistant") for a in it[1:3]]}
                      for it in items]
        self.path = Path(path)
        self.log_path = self.path.with_name(f"{self.path.stem}.ratings.jsonl")
        rng = random.Random(seed)
        self.swapped = [rng.random() < 0.5 for _ in self.items]  # True: answer_2 is shown as A
        self.ratings: dict[int, dict] = {}  # item index -> {"index", "choice", "winner", "reason"}
        self.others: list[dict] = []  # saved decisions about items that are not in this session (kept)
        self.load_problems: list = []  # lines of the decisions file that could not be read
        remove_stale_temps(self.path)
        remove_stale_temps(self.log_path)
        if self.log_path.exists():  # resume an earlier session: only decisions about these very items
            self._load()
            write_jsonl(self.path, self.pairs())  # the pairs follow the file of record
        self.index = self._next(0)

    def _load(self) -> None:
        from ..engine.chat import Problem

        records, self.load_problems = read_records(self.log_path)
        keys = {self._key(i): i for i in range(len(self.items))}
        for line, r in records:
            if not (isinstance(r, dict) and r.get("choice") in CHOICES and r.get("winner") in (None, 1, 2)
                    and (r["choice"] == "both_bad") == (r["winner"] is None)):
                self.load_problems.append(Problem(line, "", "error", "not a rating (expected an object with "
                                                                     "'choice' and 'winner')"))
                continue
            key, at = r.get("key"), r.get("index")
            same = type(at) is int and 0 <= at < len(self.items) and self._key(at) == key
            i = at if same else keys.get(key) if isinstance(key, str) else None
            if i is None:
                self.others.append(r)
            else:
                self.ratings[i] = {**r, "index": i}
        for p in self.load_problems:
            warnings.warn(f"{self.log_path} line {p.line}: {p.message}; that line is skipped (every other rating "
                          "is kept) and is left out when the file is next saved", stacklevel=3)

    def _key(self, i: int) -> str:
        """A digest of item i (prompt and both answers): a saved decision applies to that item only."""
        return hashlib.sha256(json.dumps(self.items[i], sort_keys=True).encode()).hexdigest()[:16]

    def _next(self, start: int) -> int:
        return next((i for i in range(start, len(self.items)) if i not in self.ratings), len(self.items))

    @property
    def done(self) -> bool:
        return self.index >= len(self.items)

    def shown(self) -> tuple[str, str, str]:
        """The current item as the rater sees it: (prompt, answer A, answer B)."""
        it = self.items[self.index]
        first, second = it["answers"][::-1] if self.swapped[self.index] else it["answers"]
        return _text(it["prompt"], "user"), _text(first, "assistant"), _text(second, "assistant")

    def choose(self, choice: str, reason: str = "") -> None:
        """Record "a", "b" or "both_bad" for the current item, save, and move to the next unrated one."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
        if self.done:
            raise IndexError("every item is rated already")
        winner = None  # which of the item's answers (1 or 2) is better; None: both bad
        if choice != "both_bad":
            winner = 2 if (choice == "a") == self.swapped[self.index] else 1
        self.ratings[self.index] = {"index": self.index, "choice": choice, "winner": winner, "reason": reason,
                                    "key": self._key(self.index)}
        self.save()
        self.index = self._next(self.index + 1)

    def skip(self) -> None:
        """Leave the current item unrated (a new session on the same path offers it again)."""
        self.index = self._next(self.index + 1)

    def pairs(self) -> list[dict]:
        """The preference pairs so far: {"prompt", "chosen", "rejected"} in the kit's format."""
        out = []
        for i, r in sorted(self.ratings.items()):
            if r["winner"] is not None:
                answers = self.items[i]["answers"]
                out.append({"prompt": self.items[i]["prompt"], "chosen": answers[r["winner"] - 1],
                            "rejected": answers[2 - r["winner"]]})
        return out

    @property
    def both_bad(self) -> list[dict]:
        """Items where neither answer was good enough (no pair): prompt, both answers and the reason."""
        return [{**self.items[i], "reason": r["reason"]} for i, r in sorted(self.ratings.items())
                if r["choice"] == "both_bad"]

    def counts(self) -> dict:
        c = Counter(r["choice"] for r in self.ratings.values())
        return {**{k: c[k] for k in CHOICES}, "unrated": len(self.items) - len(self.ratings)}

    def save(self) -> None:
        """Rewrite the decisions (the file of record), then the pairs derived from them, each atomically."""
        write_jsonl(self.log_path, [r for _, r in sorted(self.ratings.items())] + self.others)
        write_jsonl(self.path, self.pairs())

    def widget(self) -> RatingWidget:
        return RatingWidget(self)


def auto_rate(session: RatingSession, judge: Callable[[str, str, str], str | None],
              reason: str = "scripted reviewer") -> dict:
    """Rate every remaining item with `judge(prompt, answer_a, answer_b) -> "a" | "b" | "both_bad" | None`
    (None: no preference, the item is skipped); a headless stand-in for a person. Returns the counts."""
    while not session.done:
        choice = judge(*session.shown())
        if choice is None:
            session.skip()
        else:
            session.choose(choice, reason)
    return session.counts()


def fact_judge(expected: dict[str, str], noise: float = 0.0, seed: int = 0) -> Callable[[str, str, str], str | None]:
    """The scripted reviewer. It is not a user: it knows every answer (`expected[prompt]`, the fact), so its
    ratings are fact supervision. It prefers the answer that states the expected fact (as whole words);
    "both_bad" when neither does; None (skip) when both do.

    `noise` (0 to 1): the share of decisions it gets wrong on purpose (seeded): a preference is flipped, and a
    "both_bad" becomes a random pick, as a tired or careless person would rate. See what imperfect feedback does.

    Example:
        >>> judge = fact_judge({"Capital of Peru?": "Lima"})
        >>> judge("Capital of Peru?", "It is Lima.", "It is Cusco."), judge("Capital of Peru?", "Lima", "Lima.")
        ('a', None)
    """
    import random

    from ..world.probes import contains_fact

    if not (isinstance(noise, (int, float)) and 0 <= noise <= 1):
        raise ValueError(f"noise must be a share between 0 and 1, got {noise!r}")
    rng = random.Random(seed)

    def judge(prompt: str, a: str, b: str) -> str | None:
        has_a, has_b = contains_fact(a, expected[prompt]), contains_fact(b, expected[prompt])
        choice = None if has_a and has_b else "a" if has_a else "b" if has_b else "both_bad"
        if choice is not None and rng.random() < noise:  # a wrong decision, on purpose
            choice = {"a": "b", "b": "a"}.get(choice) or rng.choice(["a", "b"])
        return choice
    return judge


class RatingWidget:
    """The session's skin: prompt, answers A and B, "A is better" / "B is better" / "Both bad", a reason, progress."""

    LABELS = {"a": "A is better", "b": "B is better", "both_bad": "Both bad"}

    def __init__(self, session: RatingSession):
        import ipywidgets as w

        self.session = session
        self.prompt, self.progress = w.HTML(), w.Label()
        box = w.Layout(width="49%", border="1px solid #ccc", padding="4px")
        self.answers = {k: w.HTML(layout=box) for k in ("a", "b")}
        self.reason = w.Text(description="reason", placeholder="why? (optional)", layout=w.Layout(width="98%"))
        self.buttons = {c: w.Button(description=label, button_style="danger" if c == "both_bad" else "success")
                        for c, label in self.LABELS.items()}
        for c, button in self.buttons.items():
            button.on_click(lambda _, c=c: self.choose(c))
        self.box = w.VBox([self.prompt, w.HBox(list(self.answers.values())), w.HBox(list(self.buttons.values())),
                           self.reason, self.progress])
        self.refresh()

    def choose(self, choice: str) -> None:
        self.session.choose(choice, self.reason.value.strip())
        self.reason.value = ""
        self.refresh()

    def refresh(self) -> None:
        s = self.session
        for button in self.buttons.values():
            button.disabled = s.done
        prompt, a, b = ("every item is rated", "", "") if s.done else s.shown()
        self.prompt.value = f"<b>{html.escape(prompt)}</b>"
        for key, text in (("a", a), ("b", b)):
            body = f"<div style='white-space:pre-wrap'>{html.escape(text)}</div>"
            self.answers[key].value = f"<b>{key.upper()}</b>{body}" if text else ""
        counts = ", ".join(f"{k}: {v}" for k, v in s.counts().items())
        self.progress.value = f"item {min(s.index + 1, len(s.items))} / {len(s.items)}  ({counts})  saved to {s.path}"

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)
