"""Text made safe for the places it goes to: file names, spreadsheet cells, and a reader's screen.

* `slug(name)`: a run name as a folder name that cannot climb out of its folder (no `/`, no `..`).
* `safe_cell(text)` / `unsafe_cell(cell)`: a CSV cell no spreadsheet runs as a formula, and back.
* `shorten(text, limit)`: at most `limit` characters on one line, cut at a word and marked with "…".
* `mark_cut(text, ended)`: a reply that stopped at the token limit, cut after its last whole word and marked "…".

Example:
    >>> slug("../../etc/x y"), safe_cell("=1+1"), unsafe_cell(safe_cell("=1+1"))
    ('etc_x_y', "'=1+1", '=1+1')
"""

from __future__ import annotations

import hashlib
import re


def slug(name: str, limit: int = 120) -> str:
    """A run name as a safe folder name: letters, digits and `._=+-` only (others become `_`), no leading `._-`,
    at most `limit` characters (a long name keeps a hash of the whole, so two long names stay apart).

    >>> slug("../../etc/x y")
    'etc_x_y'
    """
    text = re.sub(r"[^A-Za-z0-9._=+-]", "_", str(name)).lstrip("._-") or "run"
    if len(text) > limit:
        text = f"{text[:limit - 13]}-{hashlib.sha256(str(name).encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"
    return text


def shorten(text: str, limit: int = 80) -> str:
    """The text on one line, at most `limit` characters: cut after the last whole word that fits, marked "…".

    >>> shorten("The capital of Burkina Faso is Ouagadougou.", 30)
    'The capital of Burkina Faso…'
    """
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(1, limit - 1)]
    if flat[len(cut)] != " " and " " in cut:  # the cut fell inside a word: drop that word
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"


SENTENCE_END = (".", "!", "?", ")", "]", "}", '"', "'", "\u201d", "\u2019", ":", "…")  # a sentence's, a JSON value's


def mark_cut(text: str, ended: bool | None = None) -> str:
    """A generated text as a reader should see it: one that stopped at `max_new_tokens` (`ended` False) loses
    its last, perhaps half-written, word and ends in "…"; one that ended its turn is left as it is. `ended` None
    (not recorded): a text that does not end like a sentence is taken to be cut.

    >>> mark_cut("(fraud). I c", ended=False), mark_cut("Lima.", ended=True), mark_cut("Noah had 9 cups and")
    ('(fraud). I…', 'Lima.', 'Noah had 9 cups…')
    """
    text = str(text).rstrip()
    if ended or (ended is None and (not text or text.endswith(SENTENCE_END))):
        return text
    if text and text[-1].isalnum() and " " in text:
        text = text[: text.rindex(" ")]
    return text.rstrip(" ,;:-") + "…"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell that starts so as a formula


def safe_cell(text: str) -> str:
    """A text as a CSV cell no spreadsheet runs as a formula: one starting with = + - @ (or a tab / carriage
    return), or with the escape "'" itself, gets a leading "'"; `unsafe_cell` takes it off again.

    >>> safe_cell("=SUM(A1:A9)"), safe_cell("'quoted"), unsafe_cell(safe_cell("'quoted"))
    ("'=SUM(A1:A9)", "''quoted", "'quoted")
    """
    return "'" + text if text.startswith((*FORMULA_START, "'")) else text


def unsafe_cell(text: str) -> str:
    """The text `safe_cell` was given."""
    return text[1:] if text.startswith("'") else text
