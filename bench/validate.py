"""Validation speed: `kit.data` checks of 10,000 generated chat examples (format + template checks).

Run: `python bench/validate.py [--n 10000] [--profile classroom]`. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from kit.engine.data import validate_file, write_jsonl
from kit.lessons.artifacts import tokenizer_for
from kit.world.chats import chat_examples
from kit.world.corpus import load_world


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()
    world = load_world()
    examples = []
    seed = 0
    while len(examples) < args.n:  # different seeds give different phrasings and system prompts
        examples += chat_examples(world, list(world), per_fact=3, seed=seed)
        seed += 1
    examples = examples[: args.n]
    tok = tokenizer_for(args.profile)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "examples.jsonl"
        write_jsonl(path, examples)
        t0 = time.perf_counter()
        report = validate_file(path, tok, args.max_length)
        seconds = time.perf_counter() - t0
    out = {"examples": args.n, "seconds": round(seconds, 3), "examples_per_s": round(args.n / seconds, 1),
           "errors": len(report.errors), "warnings": len(report.warnings), "tokens": report.summary["tokens"]}
    for k, v in out.items():
        print(f"{k:>15}  {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
