"""Validation memory: peak RSS of the whole `python -m kit data validate` process on one huge line.

Cases: a valid example whose reply is 50 MB of text (ASCII, and emoji), and one whose question is
5 MB of words, each with and without `--max-length`. The CLI runs as the child of a small process
that reads the child's peak RSS (`getrusage(RUSAGE_CHILDREN)`), so nothing of this script is counted.

Run: `python bench/validate_memory.py [--profile smoke]`. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = """import resource, subprocess, sys
code = subprocess.run([sys.executable, "-m", "kit", *sys.argv[1:]], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def peak_rss_mb(args: list[str]) -> tuple[float, int, float]:
    """(peak RSS in MB, exit status, seconds) of `python -m kit ARGS`."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True, check=True)
    kb, code = out.stdout.split()
    return int(kb) / 1024, int(code), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smoke")
    args = ap.parse_args()
    user = {"role": "user", "content": "What is the capital of Peru?"}
    cases = {
        "50 MB reply (ASCII)": {"messages": [user, {"role": "assistant", "content": "x" * 50_000_000}]},
        "48 MB reply (emoji)": {"messages": [user, {"role": "assistant", "content": "\U0001F600" * 12_000_000}]},
        "5 MB question": {"messages": [{"role": "user", "content": "word " * 1_000_000},
                                       {"role": "assistant", "content": "Lima."}]},
    }
    small = {"messages": [user, {"role": "assistant", "content": "The capital of Peru is Lima."}]}
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, example in {"3 small lines": None, **cases}.items():
            path = Path(d) / "data.jsonl"
            text = json.dumps(small) + "\n" if example is None else json.dumps(example, ensure_ascii=False) + "\n"
            path.write_text(text * (3 if example is None else 1), encoding="utf-8")
            for extra in ([], ["--max-length", "256"]):
                mb, code, seconds = peak_rss_mb(["data", "validate", "--profile", args.profile, str(path), *extra])
                rows.append({"case": name, "max_length": extra[-1] if extra else None, "peak_rss_mb": round(mb, 1),
                             "exit": code, "seconds": round(seconds, 2), "bytes": path.stat().st_size})
    for r in rows:
        print(f"{r['case']:>22}  max_length={str(r['max_length']):>4}  peak RSS {r['peak_rss_mb']:7.1f} MB  "
              f"exit {r['exit']}  {r['seconds']:6.2f} s")
    print(json.dumps({"profile": args.profile, "runs": rows,
                      "max_peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
                      "this_process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
