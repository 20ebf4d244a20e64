"""Every notebook runs top to bottom in the smoke profile; notebooks are committed without outputs.

The notebooks run in order in one temporary folder (sharing its data/ and runs/, so notebook 03 trains
on what notebook 02 saved, as a learner's would), so that a test run never leaves smoke-profile data in
the checkout's notebooks/data for a later classroom run to train on. Notebook 06 (any model, any data)
runs on a tiny random Qwen2 built here, with a ChatML template and no pad token, as a hub model would
come: `KIT_MODEL` points the notebook at it.
"""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from hygiene import HOOK, problems, read_counts
from nbclient import NotebookClient
from tiny_hub import save_tiny_qwen2

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    dirty = [i for i, c in code if c["outputs"] or c["execution_count"]]
    assert dirty == [], f"{path.name}: cells {dirty} carry outputs; clear them before committing"


@pytest.fixture(scope="session")
def course_dir(tmp_path_factory) -> Path:
    """The folder the notebooks run in (they write data/, runs/, ...), beside a link to datasets/ (../datasets)."""
    root = tmp_path_factory.mktemp("course")
    (root / "notebooks").mkdir()
    (root / "datasets").symlink_to(ROOT / "datasets", target_is_directory=True)
    return root / "notebooks"


def execute(nb, folder: Path, timeout: int = 600) -> list[str]:
    """Execute a notebook in `folder` with the figure counter first; return its output-hygiene problems."""
    nb.cells.insert(0, nbformat.v4.new_code_cell(HOOK))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()  # raises CellExecutionError, naming the cell, on any error
    finally:
        nb.cells.pop(0)
    return problems(nb, read_counts(folder))


def run_smoke(path: Path, folder: Path, monkeypatch) -> str:
    """Execute one notebook in the smoke profile; return the text of its outputs (any error, or an output that
    does not look finished (`hygiene.problems`), fails the test)."""
    monkeypatch.setenv("KIT_PROFILE", "smoke")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("KIT_HEADLESS", "1")  # no one clicks: panels train synchronously
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    found = execute(nb, folder)
    print(f"{path.name}: {time.perf_counter() - t0:.1f} s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []
    assert found == [], f"{path.name}: outputs that do not look finished:\n" + "\n".join(found)
    assert os.environ["KIT_PROFILE"] == "smoke"
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(path, monkeypatch, course_dir):
    monkeypatch.delenv("KIT_MODEL", raising=False)
    text = run_smoke(path, course_dir, monkeypatch)
    if path.stem.startswith("01_"):
        assert "smollm2: 35,392,320 parameters" in text and "general knowledge cloze" in text  # section 9, stand-in
    if path.stem.startswith("04_"):
        assert "targets of guarded" in text and "dpo_guarded" in text  # every stage measured
    if path.stem.startswith("06_"):
        assert "LlamaForCausalLM" in text  # the real chat model's stand-in, by default
        assert "the same replies everywhere: True" in text  # the reloaded adapter and merged model answer alike


def test_notebook_06_runs_on_another_architecture(monkeypatch, tmp_path, course_dir):
    lines = (ROOT / "datasets" / "word_tasks_train.jsonl").read_text().splitlines()
    texts = [m["content"] for line in lines for m in json.loads(line)["messages"]]
    monkeypatch.setenv("KIT_MODEL", str(save_tiny_qwen2(tmp_path / "tiny-qwen2", texts, hidden=64)))
    text = run_smoke(next(p for p in NOTEBOOKS if p.stem.startswith("06_")), course_dir, monkeypatch)
    assert "Qwen2ForCausalLM" in text and "had no pad token" in text  # it ran on the hub-style model
    assert "the same replies everywhere: True" in text


def test_hygiene_check_fails_on_what_it_names(tmp_path, monkeypatch):
    """The check itself: a figure drawn and not displayed, a long float, a raw Markdown table; then a clean twin."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    setup = "from kit.widgets import curves_figure, image\nfig = lambda: curves_figure([0, 1], {'a': [1, 2]})"
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        setup, "shown = image(fig())\nprint('drawn')", "print(0.31669407129339494)",
        "print('| a | b |\\n|---|---|\\n| 1 | 2 |')")])
    found = execute(bad, tmp_path)
    assert [f.split(":")[0] for f in found] == ["cell 1", "cell 2", "cell 3"], found
    assert "none displayed" in found[0] and "4 decimals" in found[1] and "Markdown table" in found[2]
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in (
        setup, "print('drawn')\nimage(fig())", "print(f'{0.31669407129339494:.3f}')",
        "from IPython.display import HTML\nHTML('<table><tr><td>1</td></tr></table>')")])
    assert execute(good, tmp_path) == []
