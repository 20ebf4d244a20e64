"""The course over several seeds: the spread of every checked figure, and ranges taken from it.

Another CPU sums floats in another order, so a class on other laptops trains another base model and sees
other figures. `KIT_SEED` stands in for that: it shifts every seed of the profile (the base model's
initialisation and data order, the fine-tunings', the safety stages', the feedback round's). This script
runs `bench/course.py --seed S` for each seed, one after the other (each builds its own base model),
keeps every run's figures in `--out` as it goes (a killed run loses only its own seed), and with `--apply`
writes each figure's spread (mean, sd, min, max, the values) and a range that holds every seed with room to
spare into `bench/expected.json`.

Usage:
    python bench/seeds.py --profile classroom --seeds 0 1 2 3 4     # ~17 min a seed on 2 CPU cores
    python bench/seeds.py --profile classroom --apply               # ranges from what --out holds
    python bench/seeds.py --seeds 0 1 2 3 4 --notebooks 02 03       # after a change to notebook 03's recipe only
    python bench/seeds.py --profile classroom --table               # the spread as a Markdown table
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "bench" / "expected.json"


def run_seed(profile: str, seed: int, timeout: int, notebooks: list[str] | None = None) -> dict:
    """One `bench/course.py` run (all notebooks, or the two-digit prefixes `notebooks`); its JSON summary."""
    cmd = [sys.executable, str(ROOT / "bench" / "course.py"), "--profile", profile, "--seed", str(seed)]
    cmd += ["--notebooks", *notebooks] if notebooks else []
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    last = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not last:
        raise RuntimeError(f"seed {seed}: bench/course.py printed no summary (exit {done.returncode}):\n"
                           + done.stderr[-2000:])
    return json.loads(last[-1])


def merge(old: dict | None, new: dict, notebooks: list[str] | None) -> dict:
    """A seed's record after a run: the run itself, or (a run of some notebooks only) the old record with those
    notebooks' figures and seconds replaced, and a note of what was re-measured when."""
    if not notebooks or not old:
        return new
    keep = {k: v for k, v in old["figures"].items() if k[:2] not in notebooks}
    seconds = {k: v for k, v in old.get("notebook_seconds", {}).items() if k[:2] not in notebooks}
    remeasured = old.get("remeasured", []) + [f"{' '.join(notebooks)} on {time.strftime('%Y-%m-%d')}"]
    return {**old, "figures": {**keep, **new["figures"]}, "remeasured": remeasured,
            "notebook_seconds": {**seconds, **new.get("notebook_seconds", {})},
            "ok": old.get("ok", True) and new.get("ok", True)}


def spread(values: list[float]) -> dict:
    """mean, sd, min, max of one figure over the seeds (rounded for the table)."""
    r = lambda x: round(x, 4)  # noqa: E731
    return {"mean": r(statistics.mean(values)), "sd": r(statistics.stdev(values)) if len(values) > 1 else 0.0,
            "min": r(min(values)), "max": r(max(values)), "n": len(values)}


def range_from(values: list[float], old: list | None) -> list[float]:
    """A range holding every seed's value with room to spare: [min, max] widened by the larger of two sds, half
    the spread, and 0.03 (a few questions of a rate), 10% for a figure above 1 (a loss, a count), clipped to
    [0, 1] where every value is a rate. A figure that did not move keeps its old range (an exact check). A rate
    whose seeds spread so far that the range would be all of [0, 1] gets a floor instead, at half the lowest
    seed's value: it no longer says what a class will see, only that the stage learned something at all."""
    lo, hi = min(values), max(values)
    if lo == hi and old:
        return old
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    scale = 0.1 * max(abs(lo), abs(hi)) if max(abs(lo), abs(hi)) > 1 else 0.03
    margin = max(2 * sd, (hi - lo) / 2, scale)
    low, high = lo - margin, hi + margin
    if all(0 <= v <= 1 for v in values):
        low, high = max(0.0, low), min(1.0, high)
        if low == 0.0 and high == 1.0 and lo > 0:  # a range that checks nothing: a floor at half the lowest seed
            low = lo / 2
    digits = 3 if high - low < 10 else 0
    return [math.floor(low * 10**digits) / 10**digits, math.ceil(high * 10**digits) / 10**digits]


def is_floor(rng: list[float], values: list[float]) -> bool:
    """Whether `range_from` gave these values a floor (half the lowest, up to 1) rather than a range."""
    return rng[1] == 1.0 and rng[0] > 0 and rng[0] == math.floor(min(values) / 2 * 1000) / 1000


def apply(results: dict, profile: str, path: Path = EXPECTED) -> list[str]:
    """Write spreads and ranges into the expected-figures table; return one line per figure."""
    table = json.loads(path.read_text())
    seeds = sorted(results, key=int)
    lines = []
    for row in table["figures"]:
        key = f"{row['notebook']} {row['figure']}"
        values = [results[s]["figures"].get(key) for s in seeds]
        values = [v for v in values if isinstance(v, (int, float))]
        if len(values) < 2:
            lines.append(f"{key}: {len(values)} seed(s) measured, left as it was")
            continue
        new = range_from(values, row.get("ranges", {}).get(profile))
        row.setdefault("ranges", {})[profile] = new
        row.setdefault("spread", {})[profile] = {**spread(values), "seeds": [int(s) for s in seeds],
                                                 "values": [round(v, 4) for v in values]}
        row.setdefault("sources", {})[profile] = (
            f"bench/seeds.py --profile {profile} --seeds {' '.join(seeds)} ({time.strftime('%Y-%m-%d')}, 2-core "
            f"CPU): every seed's value inside, widened by max(2 sd, half the spread, 0.03 or 10%)")
        s = row["spread"][profile]
        floor = is_floor(new, values)
        if floor:
            row["sources"][profile] += (f"; the seeds spread from {min(values):.3f} to {max(values):.3f}, too far "
                                        "for a range: a floor at half the lowest seed")
        lines.append(f"{key}: mean {s['mean']} sd {s['sd']} min {s['min']} max {s['max']} -> "
                     f"{'floor' if floor else 'range'} {new}")
    path.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    return lines


def markdown(results: dict, profile: str, path: Path = EXPECTED) -> str:
    """The spread as a Markdown table: one row per checked figure, one column per seed, then mean ± sd and the
    range (or floor) `bench/expected.json` holds for the profile."""
    table = json.loads(path.read_text())
    seeds = sorted(results, key=int)
    head = ["figure", *(f"seed {s}" for s in seeds), "mean ± sd", "range"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["figures"]:
        key = f"{row['notebook']} {row['figure']}"
        values = [results[s]["figures"].get(key) for s in seeds]
        if not any(isinstance(v, (int, float)) for v in values):
            continue
        nums = [v for v in values if isinstance(v, (int, float))]
        fmt = (lambda v: f"{v:,.0f}") if max(map(abs, nums)) > 10 else (lambda v: f"{v:.3f}")  # noqa: E731
        mean = f"{fmt(statistics.mean(nums))} ± {fmt(statistics.stdev(nums)) if len(nums) > 1 else '0'}"
        rng = row.get("ranges", {}).get(profile)
        cells = [fmt(v) if isinstance(v, (int, float)) else "–" for v in values]
        shown = ("–" if not rng else f"≥ {fmt(rng[0])} (floor)" if is_floor(rng, nums)
                 else f"{fmt(rng[0])} – {fmt(rng[1])}")
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {mean} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--seeds", type=int, nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=None, help="the per-seed figures (default bench/seeds-PROFILE.json)")
    ap.add_argument("--apply", action="store_true", help="write spreads and ranges into bench/expected.json")
    ap.add_argument("--notebooks", nargs="*", help="re-measure these notebooks only (two-digit prefixes, e.g. 02 03; "
                    "list the ones they read from too): the seed's other figures are kept")
    ap.add_argument("--table", action="store_true", help="print the spread as a Markdown table")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds one seed's course may take")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "bench" / f"seeds-{args.profile}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        print(f"seed {seed}: running the course ...", file=sys.stderr, flush=True)
        results[str(seed)] = merge(results.get(str(seed)), run_seed(args.profile, seed, args.timeout, args.notebooks),
                                   args.notebooks)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s, in range: {results[str(seed)]['ok']}", file=sys.stderr,
              flush=True)
    if args.apply:
        for line in apply(results, args.profile):
            print(line)
    if args.table:
        print(markdown(results, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
