"""The widgets as a learner meets them: JupyterLab in headless Chromium, driven by clicks and keys.

Run by `make test-browser` (see conftest.py for what it starts). Each test opens one notebook in
its own tab, runs its cells with Shift+Enter up to the widget, uses the widget, and checks what a
person would see (the page) and what the widget wrote (the files); screenshots go to build/browser.
"""

from __future__ import annotations

import json
import re
import time

from lab_driver import Notebook, wait_for


def _check_console(nb: Notebook) -> None:
    assert nb.console_errors == [], f"{nb.name}: JavaScript console errors:\n" + "\n".join(nb.console_errors)


def _lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


# --- notebook 03: the control panel ---------------------------------------------------------------
def _panel_step(status: str) -> int:
    """The step number in the panel's status text ("... step 12/300 ...", or "12/300 steps")."""
    m = re.search(r"(\d+)\s*/\s*[\d?]+", status) or re.search(r"step\D{0,3}(\d+)", status)
    assert m, f"no step counter in the panel's status: {status!r}"
    return int(m.group(1))


class Panel:
    def __init__(self, nb: Notebook, cell: int):
        self.nb, self.root = nb, nb.cell(cell).locator(".kit-panel")

    def button(self, label: str):
        return self.root.locator("button", has_text=re.compile(label))

    def status(self) -> str:
        """The status line, lower-cased."""
        return self.root.locator(".kit-panel-status").inner_text().lower()

    def step(self) -> int:
        return _panel_step(self.status())

    def settled(self, timeout: float = 10) -> int:
        """The step once it held for 1 s (or the last one seen after `timeout` s, if it never did)."""
        deadline, last = time.monotonic() + timeout, self.step()
        while time.monotonic() < deadline:
            time.sleep(1)
            if (now := self.step()) == last:
                break
            last = now
        return last

    def plot(self) -> str | None:
        """The loss plot's SVG text (None while the panel shows its placeholder)."""
        svg = self.root.locator(".kit-panel-plot svg")
        return svg.first.evaluate("e => e.outerHTML") if svg.count() else None

    def field(self, name: str):
        box = self.root.locator(".widget-inline-hbox", has=self.nb.page.locator("label", has_text=re.compile(
            rf"^\s*{name}\s*$")))
        return box.locator("input")


def test_panel_trains_pauses_and_stops_in_notebook_03(browser, lab, shots, timings):
    t0 = time.perf_counter()
    nb = Notebook.open(browser, lab, "03_fine_tuning.ipynb", shots)
    try:
        at = nb.cell_with("panel.widget()")
        nb.run_to(at)
        timings["notebook 03 up to the panel"] = time.perf_counter() - t0
        panel = Panel(nb, at)
        panel.root.wait_for(state="visible", timeout=30_000)
        for label in ("Start", "Pause", "Stop"):
            assert panel.button(label).count() == 1 and panel.button(label).is_visible(), f"no {label} button"
        shown = nb.output_text(at)
        assert "VBox(" not in shown and "Loading widget" not in shown, f"the panel shows as text: {shown[:300]}"

        saved = nb.save()  # what the learner's file now holds: no error output in any cell run so far
        errors = [i for i, c in enumerate(saved[:at + 1]) for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert errors == [], f"cells {errors} saved an error output"
        mimes = {k for o in saved[at]["outputs"] for k in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in mimes, f"the panel cell saved only {sorted(mimes)}"

        # Long enough to watch: the learner types a larger number of epochs, then presses Start.
        epochs = panel.field("epochs")
        epochs.fill("200")
        epochs.press("Enter")
        t1 = time.perf_counter()
        panel.button("Start").click()
        first = wait_for(lambda: (panel.step() >= 1 and panel.plot()) and (panel.step(), panel.plot()), 120,
                         "Start: the first step shows")
        timings["Start to the first step"] = time.perf_counter() - t1
        wait_for(lambda: panel.step() > first[0] and panel.plot() != first[1], 30,
                 f"the step counter (was {first[0]}) and the plot change while training")
        panel.root.scroll_into_view_if_needed()
        nb.shot("03-panel-training")
        nb.shot("03-panel-training-widget", panel.root)

        # The kernel answers a new cell while the panel trains.
        new = nb.add_cell_below(at, "print(1 + 1)")
        t2 = time.perf_counter()
        nb.page.keyboard.press("Shift+Enter")
        wait_for(lambda: nb.output_text(new).strip() == "2", 5, "a new cell `print(1 + 1)` answers while training")
        timings["print(1 + 1) during training"] = time.perf_counter() - t2
        assert "paus" not in panel.status() and "stop" not in panel.status(), panel.status()
        before = panel.step()

        # Pause holds the step for 5 s; Resume goes on.
        panel.button("Pause").click()
        held = panel.settled()  # a step already under way may finish
        assert held >= before
        time.sleep(5)
        assert (now := panel.step()) == held, f"Pause: the step moved from {held} to {now} in 5 s"
        assert "paused" in panel.status(), f"Pause: the status does not say so: {panel.status()!r}"
        nb.shot("03-panel-paused")
        (panel.button("Resume") if panel.button("Resume").count() else panel.button("Pause")).click()
        wait_for(lambda: panel.step() > held, 30, f"Resume: the step goes on from {held}")

        # Stop: within 2 s the steps stop and the status says so.
        panel.button("Stop").click()
        t3 = time.perf_counter()
        wait_for(lambda: "stop" in panel.status(), 2, "Stop: the status says so")
        timings["Stop to 'stop' in the status"] = time.perf_counter() - t3
        last = panel.step()
        time.sleep(3)
        assert (now := panel.step()) == last, f"Stop: the step moved from {last} to {now} after the status said so"
        wait_for(lambda: "stopped" in panel.status(), 120, "the stopped run is saved and measured")
        nb.shot("03-panel-stopped")
        _check_console(nb)
    except Exception:
        nb.shot("03-failure")
        raise
    finally:
        nb.close()
        timings["notebook 03 in all"] = time.perf_counter() - t0


# --- notebook 02: curation -------------------------------------------------------------------------
def test_curation_clicks_are_saved_in_notebook_02(browser, lab, shots, timings):
    t0 = time.perf_counter()
    nb = Notebook.open(browser, lab, "02_dataset_building.ipynb", shots)
    try:
        at = nb.cell_with("cur.widget()")
        nb.run_to(at)
        path = lab["dir"] / "data" / "curation.jsonl"
        assert _lines(path) == [], "the curation file has decisions before any click"
        out = nb.cell(at)
        for label in ("accept", "reject", "accept"):
            out.locator("button", has_text=re.compile(rf"^\s*{label}\s*$")).click()
            time.sleep(0.3)  # a person's pace between clicks
        decisions = wait_for(lambda: len(_lines(path)) == 3 and _lines(path), 30,
                             "three clicks give three decisions in data/curation.jsonl")
        assert [(d["index"], d["decision"]) for d in decisions] == [(0, "accept"), (1, "reject"), (2, "accept")]
        wait_for(lambda: "example 4 /" in nb.output_text(at), 10, "the widget shows the next example")
        nb.shot("02-curation-after-three-clicks")
        _check_console(nb)
    except Exception:
        nb.shot("02-failure")
        raise
    finally:
        nb.close()
        timings["notebook 02"] = time.perf_counter() - t0


# --- notebook 05: rating ---------------------------------------------------------------------------
# Sections 1-3 of notebook 05 (a sweep of four runs and a data round) take minutes on a CPU;
# tests/test_notebooks.py runs them. Here the learner runs the setup cell, takes the base model as
# "the best run" in one typed cell, and runs the notebook's own rating cell.
STAND_IN = 'best, best_model = {"name": "browser-check"}, base.model'


def test_rating_click_is_saved_in_notebook_05(browser, lab, shots, timings):
    t0 = time.perf_counter()
    nb = Notebook.open(browser, lab, "05_iteration.ipynb", shots)
    try:
        setup, rating = nb.cell_with("kit.setup()"), nb.cell_with("RatingSession(")
        nb.run_to(setup)
        typed = nb.add_cell_below(setup, STAND_IN)
        nb.page.keyboard.press("Shift+Enter")
        nb.wait_done(typed, 60)
        rating += 1  # the typed cell sits above it now
        nb.select(rating)
        nb.page.keyboard.press("Shift+Enter")
        nb.wait_done(rating, 300)
        out = nb.cell(rating)
        assert "A is better" in out.inner_text(), f"no rating widget: {nb.output_text(rating)[:300]}"
        log = lab["dir"] / "data" / "feedback-smoke-browser-check.ratings.jsonl"
        assert _lines(log) == [], "the ratings file has decisions before any click"
        out.locator("button", has_text="A is better").click()
        decisions = wait_for(lambda: _lines(log), 30, "one click gives one decision in the ratings file")
        assert [(d["index"], d["choice"]) for d in decisions] == [(0, "a")]
        wait_for(lambda: "item 2 /" in nb.output_text(rating), 10, "the widget shows the next item")
        nb.shot("05-rating-after-click")
        nb.shot("05-rating-after-click-widget", out.locator(".jp-OutputArea-output").last)
        _check_console(nb)
    except Exception:
        nb.shot("05-failure")
        raise
    finally:
        nb.close()
        timings["notebook 05"] = time.perf_counter() - t0
