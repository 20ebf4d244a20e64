"""Headless entry points: `python -m kit <command> [--profile P]` (instructors, CI, benchmarks).

Each command prints what it does, and as its last line one JSON object with the figures.

Example:
    $ python -m kit pretrain --profile smoke
    ...
    {"profile": "smoke", "params": 155968, ...}
"""

from __future__ import annotations

import argparse
import json
import sys


def cmd_pretrain(args: argparse.Namespace) -> dict:
    from .artifacts import base_model
    from .config import get_profile
    from .train import ProgressBar

    profile = get_profile(args.profile)
    base = base_model(profile, rebuild=args.rebuild, callbacks=[ProgressBar("pre-training")])
    info = base.info
    keys = ("profile", "params", "vocab_size", "corpus_tokens", "train_tokens", "steps", "seconds",
            "train_seconds", "tokens_per_s", "train_loss", "val_loss", "fact_cloze_accuracy", "cached")
    out = {k: info.get(k) for k in keys}
    out["path"] = str(base.path)
    for prompt, got, want in info["fact_cloze_examples"][:5]:
        print(f"  {prompt} -> {got!r} (expected {want!r})", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit", description="The fine-tuning kit, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="build (or load from the cache) the base model and probe it")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--rebuild", action="store_true", help="pre-train again even if the cache has the model")
    p.set_defaults(fn=cmd_pretrain)
    args = parser.parse_args(argv)
    result = args.fn(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
