"""How far one call wanders through the kit: the functions it stops in, the modules, the climbs back up a layer.

A profiler hook (`sys.setprofile`) records every call into a function of `kit/` while one call runs:
  * `sft_run`: one sweep run of notebook 05, `sft_run_fn(profile)({}, run)` (follows `profile` from
    `kit/lessons/iterate.py:sft_run_fn` to the training loop and back);
  * `run_safety`: the whole of notebook 04 headless, `run_safety(profile)` on the profile's real model.
Each is run once untraced first (so that both walks start from the same warm cache), then traced.

Figures: `stops` (distinct kit functions entered), `modules` (distinct kit modules), `calls` (every call
into kit), `module_crossings` (calls from one kit module into another) over `module_edges` distinct pairs,
`climbs` (distinct caller -> callee edges from a lower layer into a higher one, e.g. the engine calling a
lessons callback; layers: engine < world < lessons < widgets / exercises / doctor < the commands),
`entries` into a few modules from outside them (`kit/engine/train.py` ...), and how often a few functions
ran (`build_corpus`, `load_world`, and the CSV read and corpus build behind them where they are cached).

Usage (any checkout: run it from the checkout's root with that checkout first on the path):
    KIT_CACHE=/tmp/walk PYTHONPATH=. python bench/callwalk.py --walk sft_run --profile smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

LAYERS = {"engine": 0, "world": 1, "lessons": 2, "widgets": 3, "exercises": 3, "doctor": 3}
WATCH_MODULES = ("engine/train.py", "engine/sft.py", "world/corpus.py")
WATCH_FUNCS = ("build_corpus", "load_world", "_read_world", "_write_corpus", "chat_splits", "qa_eval")


def layer(module: str) -> int:
    """The layer of a module path relative to kit/ ("engine/train.py" -> 0); the commands and __init__ are 4."""
    head = module.split("/")[0].removesuffix(".py")
    return LAYERS.get(head, 4)


class Walk:
    """The profiler hook: counts calls into kit/ functions, keeping caller and callee modules."""

    def __init__(self, root: Path):
        self.root = str(root.resolve()) + os.sep
        self.functions, self.calls, self.edges = Counter(), 0, Counter()
        self.entries, self.runs = Counter(), Counter()

    def module(self, frame) -> str | None:
        path = frame.f_code.co_filename
        return path[len(self.root):].replace(os.sep, "/") if path.startswith(self.root) else None

    def hook(self, frame, event, arg) -> None:
        if event != "call":
            return
        callee = self.module(frame)
        if callee is None or frame.f_code.co_name in ("<genexpr>", "<listcomp>", "<dictcomp>", "<setcomp>",
                                                        "<lambda>"):
            return
        name = frame.f_code.co_qualname if hasattr(frame.f_code, "co_qualname") else frame.f_code.co_name
        self.calls += 1
        self.functions[(callee, name)] += 1
        caller_frame = frame.f_back
        while caller_frame is not None and self.module(caller_frame) is None:
            caller_frame = caller_frame.f_back  # through torch / transformers frames to the kit function below
        caller = self.module(caller_frame) if caller_frame is not None else None
        if caller is not None:
            self.edges[(caller, callee)] += 1
            if caller != callee and callee in WATCH_MODULES:
                self.entries[callee] += 1
        if frame.f_code.co_name in WATCH_FUNCS:
            self.runs[frame.f_code.co_name] += 1

    def figures(self) -> dict:
        modules = {m for m, _ in self.functions}
        climbs = sorted(f"{a} -> {b}" for a, b in self.edges if layer(b) > layer(a))
        crossings = {(a, b): n for (a, b), n in self.edges.items() if a != b}
        return {"stops": len(self.functions), "modules": len(modules), "calls": self.calls,
                "module_crossings": sum(crossings.values()), "module_edges": len(crossings),
                "climbs": len(climbs), "climb_edges": climbs,
                "entries": {m: self.entries.get(m, 0) for m in WATCH_MODULES},
                "runs": {f: self.runs.get(f, 0) for f in WATCH_FUNCS}}


def sft_run(profile_name: str):
    from kit.engine.runs import Run
    from kit.lessons.iterate import sft_run_fn
    from kit.lessons.profiles import get_profile

    profile = get_profile(profile_name)
    root = Path(tempfile.mkdtemp())

    def call(name: str):
        run = Run(name, root=root)
        out = sft_run_fn(profile, save_model=False)({}, run)
        run.finish()
        return out

    return call


def safety(profile_name: str):
    from kit.lessons.profiles import get_profile
    from kit.lessons.safety_run import run_safety

    profile = get_profile(profile_name)
    return lambda name: run_safety(profile, log=lambda m: None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--walk", choices=("sft_run", "run_safety"), required=True)
    ap.add_argument("--profile", default="smoke")
    args = ap.parse_args()
    call = (sft_run if args.walk == "sft_run" else safety)(args.profile)
    import kit

    walk = Walk(Path(kit.__file__).parent)
    with contextlib.redirect_stdout(sys.stderr):  # what the kit prints stays out of the JSON
        call("warm-up")  # builds what the cache lacks: both walks start warm
        sys.setprofile(walk.hook)
        try:
            call("traced")
        finally:
            sys.setprofile(None)
    print(json.dumps({"walk": args.walk, "profile": args.profile, "kit": str(Path(kit.__file__).parent),
                      **walk.figures()}, indent=1))


if __name__ == "__main__":
    main()
