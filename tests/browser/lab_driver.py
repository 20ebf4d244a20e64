"""A notebook open in JupyterLab, driven as a person would: click a cell, Shift+Enter, type, click a button.

Cells are found by what they contain (other changes to the notebooks move them), widgets by their
class names and button labels. Every page collects the browser's console errors.

Example:
    nb = Notebook.open(browser, lab, "03_fine_tuning.ipynb", shots)
    nb.run_to(nb.cell_with("panel.widget()"))
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

PROMPT_DONE = re.compile(r"\[\d+\]")
TRACEBACK = "Traceback (most recent call last)"


def wait_for(check, timeout: float, what: str, every: float = 0.2):
    """Poll `check()` until it returns something truthy; AssertionError naming `what` after `timeout` s."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {value!r})")


class Notebook:
    def __init__(self, page, lab: dict, name: str, shots: Path):
        self.page, self.lab, self.name, self.shots = page, lab, name, shots
        self.path = lab["dir"] / name
        self.console_errors: list[str] = []
        page.on("console", lambda m: self.console_errors.append(f"console.{m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console_errors.append(f"uncaught: {e}"))

    @classmethod
    def open(cls, browser, lab: dict, name: str, shots: Path) -> Notebook:
        context = browser.contexts[0] if browser.contexts else browser.new_context()
        page = context.new_page()
        page.set_viewport_size({"width": 1280, "height": 1000})
        nb = cls(page, lab, name, shots)
        # A workspace of its own per notebook: no tab of an earlier test is restored beside it.
        workspace = re.sub(r"\W", "-", Path(name).stem)
        page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}",
                  wait_until="domcontentloaded")
        nb.cell(0).wait_for(state="visible", timeout=90_000)
        wait_for(nb.kernel_idle, 90, f"{name}: the kernel starts and is idle")
        return nb

    # --- the kernel, through the server's API
    def session(self) -> dict | None:
        return next((s for s in self.lab["api"]("/api/sessions") if s["path"].endswith(self.name)), None)

    def kernel_idle(self) -> bool:
        s = self.session()
        return bool(s and s["kernel"] and s["kernel"]["execution_state"] == "idle")

    def close(self) -> None:
        """Close the page and shut its kernel down (a training thread with it)."""
        s = self.session()
        if s is not None:
            self.lab["api"](f"/api/sessions/{s['id']}", method="DELETE")
        self.page.close()

    # --- cells
    def cell_with(self, text: str) -> int:
        """The index of the first code cell whose source contains `text` (read from the notebook file)."""
        cells = json.loads(self.path.read_text())["cells"]
        found = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and text in "".join(c["source"])]
        assert found, f"{self.name}: no code cell contains {text!r}"
        return found[0]

    def cell(self, i: int):
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(i)

    def is_code(self, i: int) -> bool:
        return "jp-CodeCell" in (self.cell(i).get_attribute("class") or "")

    def prompt(self, i: int) -> str:
        return self.cell(i).locator(".jp-InputPrompt").first.inner_text().strip()

    def output_text(self, i: int) -> str:
        outputs = self.cell(i).locator(".jp-OutputArea-output")
        return "\n".join(outputs.nth(k).inner_text() for k in range(outputs.count()))

    def select(self, i: int) -> None:
        """Select cell i in command mode (a click on its prompt area, then Escape)."""
        cell = self.cell(i)
        cell.scroll_into_view_if_needed()
        cell.locator(".jp-InputPrompt").first.click()
        self.page.keyboard.press("Escape")

    def run_to(self, last: int, timeout: float = 300) -> None:
        """Shift+Enter from the first cell through cell `last`, each code cell finished and without an error."""
        self.select(0)
        for i in range(last + 1):
            self.page.keyboard.press("Shift+Enter")
            if self.is_code(i):
                self.wait_done(i, timeout)

    def wait_done(self, i: int, timeout: float) -> None:
        wait_for(lambda: PROMPT_DONE.fullmatch(self.prompt(i).rstrip(":")), timeout,
                 f"{self.name}: cell {i} finishes")
        out = self.output_text(i)
        assert TRACEBACK not in out, f"{self.name}: cell {i} shows an error:\n{out[-3000:]}"

    def add_cell_below(self, i: int, code: str) -> int:
        """A new code cell under cell i with `code` typed in; returns its index (not run yet)."""
        self.select(i)
        self.page.keyboard.press("b")
        self.page.keyboard.press("Enter")  # edit mode in the new cell
        self.page.keyboard.type(code)
        return i + 1

    def save(self) -> list[dict]:
        """Ctrl+S, then the saved cells as the file on disk holds them."""
        before = self.path.stat().st_mtime_ns
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        wait_for(lambda: self.path.stat().st_mtime_ns != before, 30, f"{self.name}: Ctrl+S writes the file")
        return json.loads(self.path.read_text())["cells"]

    def shot(self, name: str, element=None) -> Path:
        """A screenshot of the page (or of one element, whole) into the screenshots folder."""
        path = self.shots / f"{name}.png"
        (element or self.page).screenshot(path=str(path))
        return path
