"""Is the course ready for class? Build the artefacts, run every notebook headless, time it, check its figures.

Run: `python bench/course.py [--profile classroom] [--notebooks 01 03] [--expected bench/expected.json]`
(`make class-ready [PROFILE=smoke]` calls it). Steps:
  1. build every cached artefact of the profile (the kit's base model, and the real chat model converted from
     its packaged GGUF file), timed;
     `--no-build` skips this, so the notebooks build on demand (the time of a course from an empty cache);
  2. run each notebook top to bottom with nbclient (KIT_PROFILE, KIT_HEADLESS=1, offline) and time it;
     after each, read its key figures in its own kernel, and check that the cache entries built in step 1
     are still there, unchanged (a learner would otherwise wait for a rebuild in class);
  3. write an executed HTML copy of each notebook to `<cache>/reference/<profile>/`;
  4. compare the figures with their ranges in `bench/expected.json` (the one table of expected figures);
  5. print a table of wall time per notebook and pass / fail per figure, then every problem with what to
     do about it, and last one JSON line: `notebook_seconds`, `build_seconds`, `total_seconds` (build and every
     notebook), `course_seconds` (build and notebooks 01 to 05), `profile`, `ok`.
Exit status 1 when anything is off. Timings are for this machine at this moment: measure alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "bench" / "expected.json"
MARK = "KIT_FIGURES "
ENV = {"KIT_HEADLESS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


@dataclass
class Figure:
    """One row of the expected-figures table: where the figure is read, and its range for this profile."""

    notebook: str           # "01"
    name: str               # "fact probe after pre-training"
    read: str               # "kernel: EXPR" (evaluated in the notebook's kernel after it ran) | "cache: KIND KEY"
    low: float | None = None
    high: float | None = None
    source: str = ""        # where the range comes from


@dataclass
class NotebookRun:
    seconds: float
    figures: dict = field(default_factory=dict)  # name -> value, or an error string
    error: str | None = None                     # the cell that failed, and how
    slowest: list = field(default_factory=list)  # [(seconds, cell index, its first line)], slowest first


@dataclass
class Report:
    profile: str
    build_seconds: float = 0.0
    notebook_seconds: dict = field(default_factory=dict)
    notebook_status: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)  # (Figure, value, verdict)
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_expected(path: Path, profile: str) -> list[Figure]:
    """The rows of the expected-figures table, with this profile's range (None, None when it has none)."""
    table = json.loads(Path(path).read_text())
    out = []
    for row in table["figures"]:
        lo_hi = row.get("ranges", {}).get(profile)
        out.append(Figure(row["notebook"], row["figure"], row["read"], *(lo_hi or (None, None)),
                          source=row.get("sources", {}).get(profile, "")))
    return out


def notebooks(selected: list[str] | None = None) -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not selected or p.name[:2] in selected]


# ----------------------------------------------------------------------------- the real build and runner
def build_artefacts(profile: str, rebuild: bool = False) -> dict[str, Path]:
    """Build (or load; `rebuild`: build again) every cached artefact of the profile; return {kind: entry folder}.

    "base": the kit's own pre-trained model (notebooks 01 to 05); "real": the real chat model of notebooks 01, 03,
    04 and 06, converted once from its packaged file (a packaged model is rebuilt when its entry is removed).
    """
    import shutil

    from transformers.utils import logging as hf_logging

    from kit.engine.callbacks import ProgressBar
    from kit.engine.models import load
    from kit.engine.packaged import PACKAGED, entry
    from kit.lessons.artifacts import base_model
    from kit.lessons.profiles import get_profile

    hf_logging.disable_progress_bar()  # no "Loading weights" bars between the table's lines
    base = base_model(profile, rebuild=rebuild, callbacks=[ProgressBar(f"pre-training ({profile})")])
    real = get_profile(profile).real
    out = {"base": base.path}
    if real.model in PACKAGED:
        if rebuild:
            shutil.rmtree(entry(real.model, real.layers), ignore_errors=True)
        load(real.model, layers=real.layers)
        out["real"] = entry(real.model, real.layers)
    return out


def probe_source(exprs: dict[str, str]) -> str:
    """A cell that evaluates each figure's expression in the notebook's kernel and prints them as JSON."""
    return (f"import json as _kit_json\n_kit_figures = {{}}\nfor _kit_name, _kit_expr in {exprs!r}.items():\n"
            "    try:\n        _kit_figures[_kit_name] = float(eval(_kit_expr))\n"
            "    except Exception as _kit_e:\n        _kit_figures[_kit_name] = f'{type(_kit_e).__name__}: {_kit_e}'\n"
            f"print({MARK!r} + _kit_json.dumps(_kit_figures))")


def run_notebook(path: Path, exprs: dict[str, str], html_out: Path | None, timeout: int = 1800) -> NotebookRun:
    """Execute `path` with nbclient (the environment of this process), read the figures, write the HTML copy."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    if exprs:
        nb.cells.append(nbformat.v4.new_code_cell(probe_source(exprs)))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error, t0 = None, time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        failed = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        error = f"cell {failed} raised {getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', str(e))[:300]}"
    except Exception as e:  # a timeout, a dead kernel
        error = f"{type(e).__name__}: {str(e)[:300]}"
    seconds = time.perf_counter() - t0
    figures = {}
    if exprs:
        probe = nb.cells.pop()
        for out in probe.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith(MARK):
                    figures = json.loads(line[len(MARK):])
    nb.cells = nb.cells[:n_cells]
    slowest = sorted(((t, i, (c.source.strip().splitlines() or [''])[0][:60]) for i, c in enumerate(nb.cells)
                      if c.cell_type == "code" and (t := cell_seconds(c)) is not None), reverse=True)[:5]
    if html_out is not None:
        from nbconvert import HTMLExporter

        sys.path.insert(0, str(ROOT / "bench"))
        from widget_snapshot import snapshot

        snapshot(nb)  # the widgets as they were, drawn without the CDN an offline classroom cannot reach
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(HTMLExporter().from_notebook_node(nb)[0], encoding="utf-8")
    return NotebookRun(seconds, figures, error, slowest)


def cell_seconds(cell) -> float | None:
    """How long a code cell ran, from the timestamps nbclient records in its metadata (None if it did not run)."""
    from datetime import datetime

    stamps = cell.get("metadata", {}).get("execution", {})
    start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 1)


# ----------------------------------------------------------------------------- checks
def snapshot(entries: dict[str, Path]) -> dict[str, int | None]:
    """Each entry's manifest time (None when the entry is missing or incomplete): a rebuild changes it."""
    from kit.engine.cache import is_complete

    return {k: (p / "manifest.json").stat().st_mtime_ns if is_complete(p) else None for k, p in entries.items()}


def check_cache(report: Report, nb: str, entries: dict[str, Path], before: dict, after: dict, profile: str) -> None:
    """Name the notebook during which a built entry went missing, or was rebuilt."""
    for kind, path in entries.items():
        if before.get(kind) is not None and after.get(kind) is None:
            report.problems.append(
                f"notebook {nb}: the cache entry {kind}/{path.name} is missing after it ran (removed while the course "
                f"ran?): the next notebook that needs it would rebuild it, minutes of waiting in class. What to do: "
                f"run `make class-ready PROFILE={profile}` again, and leave KIT_CACHE={path.parent.parent} alone "
                "meanwhile")
        elif after.get(kind) is not None and after[kind] != before.get(kind):
            report.problems.append(
                f"notebook {nb}: the cache entry {kind}/{path.name} was rebuilt while it ran (it had gone missing or "
                f"was incomplete), so this notebook's time includes a build. What to do: run `make class-ready "
                f"PROFILE={profile}` again and leave the cache alone while it runs; if it happens again, the notebook "
                "builds with settings other than the profile's (another cache key): look at its build call")


def read_cache_figure(fig: Figure, entries: dict[str, Path]):
    _, kind, key = fig.read.split(None, 2)
    if kind not in entries:
        return f"no cache entry of kind {kind!r} was built"
    info = entries[kind] / "info.json"
    try:
        info = info if info.is_file() else entries[kind] / "converted.json"  # a converted model's own record
        return float(json.loads(info.read_text())[key])
    except (OSError, KeyError, ValueError, TypeError) as e:
        return f"{type(e).__name__}: {e}"


def judge(report: Report, fig: Figure, value) -> None:
    where = f"notebook {fig.notebook}, figure '{fig.name}'"
    if not isinstance(value, float) or math.isnan(value):
        verdict = "NOT READ"
        report.problems.append(f"{where}: could not be read ({fig.read}): {value}. What to do: if the notebook "
                               "changed, update this figure's `read` in bench/expected.json")
    elif fig.low is None:
        verdict = "no range"
    elif fig.low <= value <= fig.high:
        verdict = "ok"
    else:
        verdict = "OUT"
        report.problems.append(
            f"{where} = {value:.4g}, outside its range {fig.low:g} - {fig.high:g} for profile {report.profile} "
            f"(range from: {fig.source or 'bench/expected.json'}). What to do: rerun it alone on an idle machine, with "
            "`--rebuild` if the cached models may be stale; if the kit changed on purpose, re-measure and update the "
            "range in bench/expected.json")
    report.figures.append((fig, value, verdict))


def course(profile: str, paths: list[Path], figures: list[Figure], *, build: Callable[[str], dict] | None,
           runner: Callable = run_notebook, reference: Path | None = None) -> Report:
    """Build, run each notebook, check the cache and the figures; return the Report (nothing printed here)."""
    report = Report(profile)
    entries: dict[str, Path] = {}
    if build is not None:
        t0 = time.perf_counter()
        try:
            entries = build(profile)
        except Exception as e:
            report.problems.append(f"build: {type(e).__name__}: {e}. What to do: run `python -m kit pretrain "
                                   f"--profile {profile}` to see the whole error")
        report.build_seconds = time.perf_counter() - t0
    state = snapshot(entries)
    values: dict[tuple[str, str], object] = {}
    for path in paths:
        nb = path.name[:2]
        exprs = {f.name: f.read.split(":", 1)[1].strip() for f in figures
                 if f.notebook == nb and f.read.startswith("kernel:")}
        html = reference / f"{path.stem}.html" if reference is not None else None
        run = runner(path, exprs, html)
        report.notebook_seconds[path.stem] = round(run.seconds, 1)
        report.notebook_status[path.stem] = "ok" if run.error is None else "FAILED"
        if run.error is not None:
            report.problems.append(f"notebook {nb} ({path.name}) failed: {run.error}. What to do: open it in "
                                   f"JupyterLab with KIT_PROFILE={profile} and run it to see the error")
        for name in exprs:
            values[nb, name] = run.figures.get(name, "the notebook stopped before its figures were read"
                                               if run.error else "not in the notebook's output")
        after = snapshot(entries)
        check_cache(report, nb, entries, state, after, profile)
        state = after
    ran = {p.name[:2] for p in paths}
    for fig in figures:
        if fig.read.startswith("cache:"):
            judge(report, fig, read_cache_figure(fig, entries))
        elif fig.notebook in ran:
            judge(report, fig, values[fig.notebook, fig.name])
    return report


def print_report(report: Report, out=None) -> None:
    p = lambda *a: print(*a, file=out or sys.stdout)  # noqa: E731
    p(f"\n{'step':<36}{'seconds':>9}  status")
    if report.build_seconds:
        p(f"{'build (base model, real model)':<36}{report.build_seconds:>9.1f}  ok")
    for name, secs in report.notebook_seconds.items():
        p(f"{name:<36}{secs:>9.1f}  {report.notebook_status[name]}")
    if any(n[:2] not in COURSE for n in report.notebook_seconds):
        p(f"{'course (build and 01 to 05)':<36}{course_seconds(report):>9.1f}")
    p(f"{'total':<36}{total_seconds(report):>9.1f}")
    if report.figures:  # the figure's name last and whole: a column never runs into the next
        num = lambda v: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"  # noqa: E731
        rows = [(fig.notebook, num(value) if isinstance(value, float) else "-",
                 f"{num(fig.low)} - {num(fig.high)}" if fig.low is not None else "-", verdict, fig.name)
                for fig, value, verdict in report.figures]
        w = [max(len(r[j]) for r in [("notebook", "value", "range", "verdict", ""), *rows]) for j in range(4)]
        p("")
        for r in [("notebook", "value", "range", "verdict", "figure"), *rows]:
            p(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}")
    if report.problems:
        p(f"\nNOT READY for class, profile {report.profile}: {len(report.problems)} problem(s)")
        for prob in report.problems:
            p(f"  - {prob}")
    else:
        p(f"\nready for class: profile {report.profile}, every notebook ran and every figure is in range")


def total_seconds(report: Report) -> float:
    return round(report.build_seconds + sum(report.notebook_seconds.values()), 1)


COURSE = ("01", "02", "03", "04", "05")  # the classroom course; 06 (your model, your data) comes after it


def course_seconds(report: Report) -> float:
    """The build and notebooks 01 to 05: the course a class sits through (`total_seconds` adds the rest)."""
    return round(report.build_seconds + sum(s for n, s in report.notebook_seconds.items() if n[:2] in COURSE), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=os.environ.get("KIT_PROFILE") or "classroom")
    ap.add_argument("--notebooks", nargs="*", help="two-digit prefixes, e.g. 01 03 (default: all)")
    ap.add_argument("--expected", default=str(EXPECTED), help="the expected-figures table (JSON)")
    ap.add_argument("--no-build", action="store_true", help="let the notebooks build what they need")
    ap.add_argument("--rebuild", action="store_true", help="build the cached models again, even if present")
    ap.add_argument("--no-html", action="store_true", help="do not write executed HTML copies")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("KIT_SEED") or 0),
                    help="every seed of the profile shifted by this (KIT_SEED): another base model, another data order")
    args = ap.parse_args(argv)
    os.environ.update(ENV, KIT_PROFILE=args.profile, KIT_SEED=str(args.seed))  # the kernels inherit this environment
    from kit.engine.cache import cache_root

    folder = args.profile if not args.seed else f"{args.profile}-seed{args.seed}"
    reference = None if args.no_html else cache_root() / "reference" / folder
    def runner(path: Path, exprs: dict, html: Path | None) -> NotebookRun:
        print(f"running {path.name} (profile {args.profile}) ...", file=sys.stderr, flush=True)
        run = run_notebook(path, exprs, html, args.timeout)
        print(f"  {path.name}: {run.seconds:.1f} s, {'ok' if run.error is None else 'FAILED'}", file=sys.stderr,
              flush=True)
        for secs, i, first in run.slowest:  # where the time went: the slowest cells
            print(f"    cell {i:>2} {secs:7.1f} s  {first}", file=sys.stderr, flush=True)
        return run

    t0 = time.perf_counter()
    report = course(args.profile, notebooks(args.notebooks), load_expected(Path(args.expected), args.profile),
                    build=None if args.no_build else lambda p: build_artefacts(p, args.rebuild), runner=runner,
                    reference=reference)
    print_report(report)
    if reference is not None:
        print(f"executed copies: {reference}/")
    print(json.dumps({"profile": args.profile, "seed": args.seed, "notebook_seconds": report.notebook_seconds,
                      "build_seconds": round(report.build_seconds, 1), "total_seconds": total_seconds(report),
                      "course_seconds": course_seconds(report), "wall_seconds": round(time.perf_counter() - t0, 1),
                      "ok": report.ok,
                      "figures": {f"{f.notebook} {f.name}": v for f, v, _ in report.figures}}))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
