"""`make class-ready` (bench/course.py): the table, and the failures it names, on fake notebooks and a fake cache."""

import ast
import builtins
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from kit.engine.cache import write_entry

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("course", ROOT / "bench" / "course.py")
course = importlib.util.module_from_spec(spec)
sys.modules["course"] = course  # dataclasses look their module up there
spec.loader.exec_module(course)

FIGURES = {"01": {"fact probe": 0.91}, "03": {"held-out QA": 0.87}}
TABLE = {"figures": [
    {"notebook": "01", "figure": "fact probe", "read": "kernel: after['accuracy']", "ranges": {"smoke": [0.8, 1.0]}},
    {"notebook": "03", "figure": "held-out QA", "read": "kernel: full.info['heldout_qa_accuracy']",
     "ranges": {"smoke": [0.8, 0.95]}},
    {"notebook": "01", "figure": "cached fact probe", "read": "cache: base fact_cloze_accuracy",
     "ranges": {"smoke": [0.8, 1.0]}},
]}
PATHS = [Path(f"notebooks/{nb}_fake.ipynb") for nb in ("01", "02", "03")]


def fake_entry(cache: Path, kind: str) -> Path:
    entry = cache / kind / f"smoke-{kind}"
    write_entry(entry, lambda tmp: (tmp / "info.json").write_text(json.dumps({"fact_cloze_accuracy": 0.91})))
    return entry


@pytest.fixture
def setup(tmp_path):
    """A fake build (two cache entries) and a fake runner; `hooks[nb]` runs while notebook nb 'runs'."""
    hooks, ran = {}, []

    def build(profile, rebuild=False):
        return {"base": fake_entry(tmp_path, "base"), "sft": fake_entry(tmp_path, "sft")}

    def runner(path, exprs, html):
        nb = path.name[:2]
        ran.append((nb, dict(exprs)))
        if nb in hooks:
            hooks[nb]()
        return course.NotebookRun(1.5, dict(FIGURES.get(nb, {})))

    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps(TABLE))
    return {"build": build, "runner": runner, "hooks": hooks, "ran": ran, "expected": expected, "cache": tmp_path}


def run(setup, table=None):
    figures = course.load_expected(setup["expected"], "smoke") if table is None else table
    return course.course("smoke", PATHS, figures, build=setup["build"], runner=setup["runner"])


def test_a_good_course_is_ready_and_the_table_shows_times_and_figures(setup, capsys):
    report = run(setup)
    assert report.ok, report.problems
    assert setup["ran"][0] == ("01", {"fact probe": "after['accuracy']"})  # each notebook gets its own figures
    course.print_report(report)
    out = capsys.readouterr().out
    assert "01_fake" in out and "03_fake" in out and "total" in out
    rows = [line for line in out.splitlines() if "fact probe" in line]
    assert len(rows) == 2 and all("  ok  " in r for r in rows)  # the verdict in its own column, the name after it
    assert all(r.rstrip().endswith("fact probe") for r in rows)  # the figure's name whole, last
    assert "ready for class" in out


def test_a_range_tightened_on_purpose_names_the_notebook_the_figure_and_what_to_do(setup, capsys):
    table = json.loads(setup["expected"].read_text())
    table["figures"][1]["ranges"]["smoke"] = [0.9, 0.95]  # the figure is 0.87
    setup["expected"].write_text(json.dumps(table))
    report = run(setup)
    assert not report.ok and len(report.problems) == 1
    problem = report.problems[0]
    assert "notebook 03, figure 'held-out QA' = 0.87, outside its range 0.9 - 0.95" in problem
    assert "What to do" in problem and "bench/expected.json" in problem
    course.print_report(report)
    out = capsys.readouterr().out
    print(out)  # shown with -s: the failing output
    assert "NOT READY for class" in out and any("  OUT  " in line for line in out.splitlines())


def test_a_cache_entry_removed_mid_way_names_the_notebook_and_the_entry(setup, capsys):
    setup["hooks"]["02"] = lambda: shutil.rmtree(setup["cache"] / "base" / "smoke-base")
    report = run(setup)
    assert not report.ok
    assert report.problems[0].startswith("notebook 02: the cache entry base/smoke-base is missing after it ran")
    assert "make class-ready PROFILE=smoke" in report.problems[0]
    assert any("notebook 01, figure 'cached fact probe'" in p for p in report.problems)  # its info.json is gone too
    course.print_report(report)
    print(capsys.readouterr().out)  # shown with -s: the failing output


def test_an_entry_rebuilt_during_a_notebook_is_named(setup):
    def rebuild():
        shutil.rmtree(setup["cache"] / "sft" / "smoke-sft")
        fake_entry(setup["cache"], "sft")

    setup["hooks"]["03"] = rebuild
    report = run(setup)
    assert [p[:60] for p in report.problems] == ["notebook 03: the cache entry sft/smoke-sft was rebuilt while"]


def test_a_figure_that_cannot_be_read_and_a_failed_notebook_are_named(setup):
    def runner(path, exprs, html):
        nb = path.name[:2]
        if nb == "03":
            return course.NotebookRun(2.0, {}, error="cell 7 raised NameError: name 'full' is not defined")
        return course.NotebookRun(1.0, {"fact probe": "KeyError: 'accuracy'"} if nb == "01" else {})

    setup["runner"] = runner
    report = run(setup)
    text = "\n".join(report.problems)
    assert "notebook 01, figure 'fact probe': could not be read (kernel: after['accuracy']): KeyError" in text
    assert "notebook 03 (03_fake.ipynb) failed: cell 7 raised NameError" in text
    assert "notebook 03, figure 'held-out QA': could not be read" in text and "stopped before" in text
    assert report.notebook_status == {"01_fake": "ok", "02_fake": "ok", "03_fake": "FAILED"}


def test_main_exits_1_and_ends_with_the_json_line(setup, monkeypatch, capsys):
    monkeypatch.setattr(course, "build_artefacts", setup["build"])
    monkeypatch.setattr(course, "run_notebook", lambda p, e, h, timeout: setup["runner"](p, e, h))
    monkeypatch.setattr(course, "notebooks", lambda chosen: [p for p in PATHS if not chosen or p.name[:2] in chosen])
    monkeypatch.setenv("KIT_CACHE", str(setup["cache"]))
    monkeypatch.setenv("KIT_PROFILE", "smoke")
    table = json.loads(setup["expected"].read_text())
    table["figures"][0]["ranges"]["smoke"] = [0.95, 1.0]
    setup["expected"].write_text(json.dumps(table))
    assert course.main(["--profile", "smoke", "--expected", str(setup["expected"]), "--notebooks", "01", "02"]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["profile"] == "smoke" and last["ok"] is False
    assert last["notebook_seconds"] == {"01_fake": 1.5, "02_fake": 1.5}
    assert last["total_seconds"] >= 3.0 and "01 fact probe" in last["figures"]


def test_a_real_notebook_runs_its_figures_are_read_and_its_html_copy_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A fake notebook"),
                nbformat.v4.new_code_cell("after = {'accuracy': 0.75}"),
                nbformat.v4.new_code_cell("import ipywidgets as w\n"
                                          "w.VBox([w.HTML('<b>loss 1.25</b>'), w.Button(description='Start'),\n"
                                          "        w.Textarea(value='a <sample>')])")]
    path = tmp_path / "01_fake.ipynb"
    nbformat.write(nb, path)
    html = tmp_path / "reference" / "01_fake.html"
    result = course.run_notebook(path, {"fact probe": "after['accuracy']", "missing": "nope + 1"}, html, timeout=120)
    assert result.error is None
    assert result.figures["fact probe"] == 0.75 and result.figures["missing"].startswith("NameError")
    text = html.read_text()
    assert "A fake notebook" in text and course.MARK not in text  # the figure probe is not in the copy
    # the widgets are drawn as they were (no CDN needed offline), user text escaped, marked as a snapshot
    assert "<b>loss 1.25</b>" in text and "Start" in text and "a &lt;sample&gt;" in text
    assert "A snapshot of an interactive control" in text and "widget-state+json" not in text


# ----------------------------------------------------------------------------- the repo's own table
def bound_names(path: Path) -> set[str]:
    """Every name a notebook's code binds (assignments, imports, defs, loop targets)."""
    names = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        src = "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))  # no magics
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
    return names


def test_the_expected_table_reads_names_each_notebook_defines():
    table = json.loads((ROOT / "bench" / "expected.json").read_text())
    assert table["figures"], "bench/expected.json lists no figure"
    for row in table["figures"]:
        path = next((ROOT / "notebooks").glob(f"{row['notebook']}_*.ipynb"), None)
        assert path is not None, f"{row['figure']}: no notebook {row['notebook']}"
        for profile, (low, high) in row["ranges"].items():
            assert low <= high, f"{row['figure']}: range for {profile} is upside down"
        kind, what = row["read"].split(":", 1)
        assert kind in ("kernel", "cache")
        if kind == "kernel":
            used = {n.id for n in ast.walk(ast.parse(what.strip(), mode="eval")) if isinstance(n, ast.Name)}
            unknown = used - bound_names(path) - set(dir(builtins))
            assert not unknown, f"figure '{row['figure']}' reads {sorted(unknown)}, which {path.name} never defines"
        else:
            assert what.split()[0] in ("base", "real")


def test_cell_seconds_reads_nbclient_timestamps():
    cell = nbformat.v4.new_code_cell("x = 1")
    assert course.cell_seconds(cell) is None  # never ran
    cell.metadata["execution"] = {"iopub.execute_input": "2026-11-28T10:00:00.000000Z",
                                  "shell.execute_reply": "2026-11-28T10:01:02.500000Z"}
    assert course.cell_seconds(cell) == 62.5


def test_course_seconds_count_the_build_and_notebooks_01_to_05():
    report = course.Report("smoke", build_seconds=10.0,
                           notebook_seconds={"01_a": 1.0, "05_b": 2.0, "06_c": 100.0})
    assert course.course_seconds(report) == 13.0 and course.total_seconds(report) == 113.0
