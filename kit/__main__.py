"""Headless entry points: `python -m kit <command> [--profile P]` (instructors, CI, benchmarks).

`pretrain`, `sft`, `safety` and `sweep` print progress, then as their last line one JSON object with the figures;
`data validate` prints its report (or, with --json, a JSON list) and exits 1 when there are errors.

Example:
    $ python -m kit pretrain --profile smoke
    ...
    {"profile": "smoke", "params": 155968, ...}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 1."""


def quiet() -> None:
    """No "Loading weights" bars from transformers (called once the arguments are checked: it is a slow import)."""
    from . import _quiet_transformers

    _quiet_transformers()


def cmd_pretrain(args: argparse.Namespace) -> dict:
    from .lessons.profiles import get_profile

    if args.resume and args.fresh:
        raise UsageError("--resume continues an interrupted build and --fresh deletes it: give one of them")
    profile = get_profile(args.profile)
    quiet()
    from .engine.train import ProgressBar
    from .lessons.artifacts import base_model

    base = base_model(profile, rebuild=args.rebuild, resume=args.resume, fresh=args.fresh,
                      callbacks=[ProgressBar("pre-training")])
    info = base.info
    keys = ("profile", "params", "vocab_size", "corpus_tokens", "train_tokens", "steps", "seconds",
            "train_seconds", "tokens_per_s", "train_loss", "val_loss", "fact_cloze_accuracy", "cached")
    out = {k: info.get(k) for k in keys}
    out["path"] = str(base.path)
    for prompt, got, want in info["fact_cloze_examples"][:5]:
        print(f"  {prompt} -> {got!r} (expected {want!r})", file=sys.stderr)
    return out


def cmd_sft(args: argparse.Namespace) -> dict:
    if args.data is not None:
        return cmd_sft_any(args)
    if args.model is not None or args.eval is not None:
        raise UsageError("--model and --eval go with --data TRAIN.jsonl (without --data, sft runs the course's recipe "
                         "on the kit's own base model)")
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    lora = args.lora or profile.sft.lora
    changes = {k: v for k, v in (("epochs", args.epochs), ("lora_lr" if lora else "lr", args.lr), ("seed", args.seed))
               if v is not None}
    profile = profile.with_sft(**changes) if changes else profile
    quiet()
    from .engine.runs import runs_root
    from .engine.train import ProgressBar
    from .lessons.artifacts import base_model
    from .lessons.sft import finetune_recipe

    t0 = time.perf_counter()
    out_dir = args.out or runs_root() / f"sft-{profile.name}-{'lora' if lora else 'full'}" \
        f"{'' if args.seed is None else f'-seed{args.seed}'}"
    result = finetune_recipe(profile, base_model(profile), lora=lora, callbacks=[ProgressBar("fine-tuning")],
                             out_dir=out_dir)
    info = result.info
    for question, answer, expected, ok in info["qa_examples"][:6]:
        print(f"  {'ok ' if ok else 'NO '} {question} -> {answer!r} (expected {expected!r})", file=sys.stderr)
    keys = ("profile", "lora", "epochs", "seed", "steps", "train_examples", "trainable_params", "train_seconds",
            "train_loss", "train_chat_loss", "train_replay_loss", "val_loss", "heldout_split",
            "heldout_qa_strict", "heldout_qa_strict_ci", "base_heldout_qa_strict", "majority_baseline_strict",
            "heldout_qa_strict_by_fact", "heldout_qa_accuracy", "base_heldout_qa_accuracy", "heldout_qa_by_fact",
            "format_rate", "ppl_before", "ppl_after", "cloze_before", "cloze_after",
            "cloze_before_train_countries", "cloze_after_train_countries", "cloze_before_heldout_countries",
            "cloze_after_heldout_countries")
    return {**{k: info[k] for k in keys}, "seconds": round(time.perf_counter() - t0, 2), "path": str(result.path)}


def cmd_sft_any(args: argparse.Namespace) -> dict:
    """`sft --model DIR_OR_ID --data FILE`: any causal LM on any chat data, measured before and after."""
    import dataclasses

    from .engine.config import SFTConfig, problems_sft, raise_problems
    from .lessons.profiles import get_profile

    real = get_profile(args.profile).real
    name = args.model or real.model  # default: the profile's real chat model (SmolLM2, offline)
    base = real.sft if name == real.model else SFTConfig(seq_len=256)  # the real model: notebook 06's settings
    cfg = dataclasses.replace(base, lora=args.lora, replay=0.0, seq_len=args.seq_len or base.seq_len,
                              batch_size=args.batch_size or base.batch_size)
    changes = {k: v for k, v in (("epochs", args.epochs), ("lora_lr" if args.lora else "lr", args.lr),
                                 ("seed", args.seed)) if v is not None}
    cfg = dataclasses.replace(cfg, **changes)
    raise_problems(problems_sft(cfg))
    train_examples = read_examples(args.data, "training data")
    eval_examples = read_examples(args.eval, "evaluation data") if args.eval else None
    quiet()
    from .engine.data import validate
    from .engine.models import load
    from .engine.sft import finetune
    from .engine.train import ProgressBar

    model, tok = load(name, layers=real.layers) if name == real.model else load(name)
    limit = getattr(model.config, "max_position_embeddings", None) or cfg.seq_len
    cfg = dataclasses.replace(cfg, seq_len=min(cfg.seq_len, limit))
    for what, path, examples in (("training data", args.data, train_examples),
                                 ("evaluation data", args.eval, eval_examples or [])):
        report = validate(examples, tok, cfg.seq_len)
        if report.errors:  # what only this model's chat template shows: special tokens in the text, ...
            print(report, file=sys.stderr)
            raise UsageError(f"{what} {path} has {len(report.errors)} error(s) with this model's chat template "
                             "(listed above with their lines): fix them, or check with `python -m kit data "
                             "validate`")
    out = args.out or f"runs/sft-{Path(name.rstrip('/')).name}-{'lora' if args.lora else 'full'}"
    t0 = time.perf_counter()
    result = finetune(model, tok, train_examples, eval_examples, cfg, callbacks=[ProgressBar("fine-tuning")],
                      out_dir=out)
    info = result.info
    for s in result.samples[:4]:
        print(f"  {s['prompt']!r}: {s['before']!r} -> {s['after']!r} (expected {s['reference']!r})", file=sys.stderr)
    keys = ("lora", "epochs", "lr", "steps", "train_examples", "eval_examples", "loss_tokens", "trainable_params",
            "train_loss", "eval_loss_before", "eval_loss_after", "exact_match_before", "exact_match_after",
            "exact_match_change", "token_f1_before", "token_f1_after", "rouge_l_before", "rouge_l_after")
    return {"model": name, **{k: info.get(k) for k in keys}, "seconds": round(time.perf_counter() - t0, 2),
            "saved_to": str(result.path)}


def read_examples(path: str, what: str) -> list[dict]:
    """Chat examples from a JSONL or CSV file; any error in it ends the command with its report."""
    p = input_file(path, what)
    from .engine.data import load_file

    examples, report = load_file(p)
    if report.errors:
        print(report, file=sys.stderr)
        raise UsageError(f"{what} {path} has {len(report.errors)} error(s) (listed above with their lines): "
                         f"fix them, or check with `python -m kit data validate {path}`")
    return examples


def input_file(path: str, what: str) -> Path:
    """The path of a file the user named, checked: it exists, is a regular file, and can be read."""
    p = Path(path)
    try:
        exists, folder, regular = p.exists(), p.is_dir(), p.is_file()
    except (OSError, ValueError) as e:  # a name with a NUL byte, too long a name
        raise UsageError(f"{what}: {path!r} is not a usable path ({e}): check the name") from None
    if not exists:
        raise UsageError(f"{what}: no such file: {path} (check the path; relative paths start from {Path.cwd()})")
    if folder:
        raise UsageError(f"{what}: {path} is a folder, not a file: give the JSONL or CSV file inside it")
    if not regular:
        raise UsageError(f"{what}: {path} is not a regular file (a device or a pipe): save the data to a file first")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{what}: {path} cannot be read (permission denied): check the file's permissions")
    return p


def cmd_safety(args: argparse.Namespace) -> dict:
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    if args.seed is not None:
        profile = profile.with_safety(seed=args.seed)
    if args.redteam is not None:
        input_file(args.redteam, "--redteam file")
    if args.eval_prompts is not None:
        input_file(args.eval_prompts, "--eval-prompts file")
    quiet()
    from .engine.models import load
    from .lessons.safety_run import (
        FIXES,
        STAGES,
        change_table,
        interval_table,
        run_safety,
        stage_change,
        summary_table,
        targets_table,
    )

    real = profile.real
    name = args.model or real.model
    model, tok = load(name, layers=real.layers) if name == real.model else load(name)
    run = run_safety(profile, model=model, tok=tok, redteam_path=args.redteam, eval_prompts_path=args.eval_prompts,
                     log=lambda m: print(m, file=sys.stderr))
    for text in (summary_table(run.stages), interval_table(run.stages), change_table(run.stages, "base", FIXES),
                 targets_table(run.stages)):
        print(text, file=sys.stderr)
    keys = ("refusal_rate", "refusal_ci", "over_refusal_rate", "over_refusal_ci", "refusal_rate_classifier",
            "over_refusal_rate_classifier", "judge_disagreement_rate", "eval_unseen_refusal_rate",
            "eval_unseen_refusal_ci", "eval_unseen_over_refusal_rate", "eval_unseen_over_refusal_ci", "helpfulness",
            "capability", "capability_ci")
    res = {k: v for k, v in run.figures.items() if k not in STAGES}
    res.update(model=name, seed=profile.safety.seed)
    for st in STAGES:
        fig = run.figures[st]
        res[st] = {k: fig.get(k) for k in keys + tuple(k for k in fig if k.startswith("redteam_"))
                   + (("eval_prompts",) if "eval_prompts" in fig else ())}
    res["changes_from_base"] = {st: {k: [round(v["diff"], 4), *(round(x, 4) for x in v["ci"])]
                                     for k, v in stage_change(run.stages, "base", st).items()} for st in FIXES}
    return res


def cmd_sweep(args: argparse.Namespace) -> dict:
    import dataclasses

    from .engine.runs import grid, parse_grid, random_search
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    try:
        spec = parse_grid(args.grid)
    except ValueError as e:
        raise UsageError(f"--grid: {e} (e.g. --grid 'lr=1e-4,3e-4;lora_r=4,16')") from None
    if not spec:
        raise UsageError("--grid is empty: give at least one setting, e.g. --grid 'lr=1e-4,3e-4'")
    fields = sorted(f.name for f in dataclasses.fields(profile.sft))
    if unknown := sorted(set(spec) - set(fields)):  # bad values, by contrast, fail their own run only
        raise UsageError(f"--grid: unknown fine-tuning field(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    points = random_search(spec, args.random, seed=0) if args.random else grid(spec)
    quiet()
    from .engine.runs import compare_table, sweep
    from .lessons.iterate import best_run, sft_run_fn

    runs = sweep(points, sft_run_fn(profile), name=args.name, root=args.root)
    print(compare_table(runs, keys=("heldout_qa_strict", "heldout_qa_accuracy", "format_rate",
                                    "cloze_after_heldout_countries", "train_seconds")), file=sys.stderr)
    brief = lambda res: {k: v for k, v in res.items() if not k.endswith(("_rows", "_qa_countries"))}  # noqa: E731
    out = {"profile": profile.name, "grid": spec,
           "runs": [{"name": r["name"], "status": r["status"], "params": {k: r["config"].get(k) for k in spec},
                     "error": r.get("error"), "results": brief(r["results"]), "folder": r["folder"]} for r in runs]}
    try:
        best = best_run(runs)  # chosen on the dev countries
    except ValueError:  # no run finished
        counts = Counter(r["status"] for r in runs)
        why = ", ".join(f"{n} {'stopped early as hopeless' if s == 'stopped' else s}" for s, n in counts.items())
        return {**out, "best": None, "best_params": None, "best_heldout_qa_strict": None,
                "best_heldout_qa_accuracy": None,
                "reason": f"no run finished ({why}; see the note row of the table): try other settings, e.g. a "
                          "higher lr or more epochs"}
    return {**out, "best": best["name"], "best_params": {k: best["config"].get(k) for k in spec},
            "best_heldout_qa_strict": best["results"]["heldout_qa_strict"],
            "best_heldout_qa_accuracy": best["results"]["heldout_qa_accuracy"], "reason": None}


def cmd_data_validate(args: argparse.Namespace) -> int:
    from .lessons.profiles import get_profile

    files = [input_file(f, "data file") for f in args.file]
    eval_path = input_file(args.eval, "--eval file") if args.eval else None
    profile = get_profile(args.profile)  # a bad name ends here, before the tokenizer is loaded
    from .engine.data import load_file, validate
    from .lessons.artifacts import tokenizer_for

    tok = tokenizer_for(profile)

    def check(path: Path, eval_examples=None):
        examples, report = load_file(path)
        deep = validate(examples, tok, args.max_length, eval_examples)
        report.problems += deep.problems
        report.summary = deep.summary
        return examples, report

    eval_examples, eval_report = check(eval_path) if eval_path else (None, None)
    reports = [(f, "data file", check(f, eval_examples)[1]) for f in files]
    if eval_path:
        reports.append((eval_path, "evaluation file", eval_report))
    several, out = len(reports) > 1, sys.stdout  # written as it goes: a report may have a million lines
    if args.json:
        rows = (row for f, _, r in reports for row in r.rows(**({"file": str(f)} if several else {})))
        for k, row in enumerate(rows):
            out.write(("[\n " if k == 0 else ",\n ") + json.dumps(row))
        out.write("\n]\n" if reports and any(r.problems for _, _, r in reports) else "[]\n")
    else:
        for f, what, r in reports:
            for k, line in enumerate(r.lines()):
                out.write((f"{f} ({what}): {line}" if several and k == 0 else line) + "\n")
    return 1 if any(r.errors for _, _, r in reports) else 0


def whole_number(low: int):
    """An argparse type: a whole number >= `low`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {value}")
        return value
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse in the kit's style: a usage error is one line that says what to do, with exit status 1."""

    def error(self, message: str):
        self.exit(1, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m kit", description="The fine-tuning kit, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="build (or load from the cache) the base model and probe it")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--rebuild", action="store_true", help="pre-train again even if the cache has the model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted build from its last checkpoint")
    p.add_argument("--fresh", action="store_true", help="delete the checkpoints of an interrupted build and start over")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("sft", help="fine-tune a model on chat data and measure it before and after "
                                   "(default: the course's base model and data)")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--model", default=None, help="any causal LM, with --data: 'smollm2' (the default: the real chat "
                                                 "model, offline), a saved folder or a hub id")
    p.add_argument("--data", default=None, help="training chat data, JSONL or CSV (with --model)")
    p.add_argument("--eval", default=None, help="evaluation chat data (with --model): measured before and after")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
    p.add_argument("--epochs", type=positive_number, default=None, help="number of passes over the training data")
    p.add_argument("--lr", type=positive_number, default=None, help="learning rate (of the adapters, with --lora)")
    p.add_argument("--seed", type=whole_number(0), default=None,
                   help="the run's seed (data order, phrasings, replay sample)")
    p.add_argument("--seq-len", type=whole_number(1), default=None,
                   help="tokens per training row (with --data; default 256, or the real model's settings)")
    p.add_argument("--batch-size", type=whole_number(1), default=None,
                   help="rows per step (with --data; default 16, or the real model's settings)")
    p.add_argument("--out", default=None, help="folder to save the model (LoRA: the adapter, merged copy in merged/)")
    p.set_defaults(fn=cmd_sft)

    p = sub.add_parser("safety", help="measure refusals, fix with safety SFT, DPO and a guard, measure again "
                                      "(the real chat model by default)")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--model", default=None, help="the chat model: 'smollm2' (default: the profile's), a folder or a "
                                                 "hub id")
    p.add_argument("--seed", type=whole_number(0), default=None,
                   help="the run's seed (which training and evaluation prompts are drawn, data order, adapters)")
    p.add_argument("--redteam", default=None,
                   help="a red-team JSONL file (notebook 04's widget) to evaluate and train on")
    p.add_argument("--eval-prompts", default=None,
                   help='JSONL of {"prompt": ..., "harmful": true|false, "category": ...}: measured, never trained on')
    p.set_defaults(fn=cmd_safety)

    p = sub.add_parser("sweep", help="fine-tune once per point of a grid, resumably, and compare the runs")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--grid", required=True, help="e.g. 'lr=1e-4,3e-4;lora_r=4,16' (SFTConfig fields)")
    p.add_argument("--random", type=whole_number(0), default=0, help="sample this many points of the grid instead")
    p.add_argument("--name", default="sweep", help="run names start with this (same name: finished runs are kept)")
    p.add_argument("--root", default=None, help="runs folder (default: the cache's runs/)")
    p.set_defaults(fn=cmd_sweep)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    v = data.add_parser("validate", help="check chat data files (JSONL, or CSV); exit 1 if one has errors")
    v.add_argument("file", nargs="+", help="one or more JSONL or CSV files, each with its own report")
    v.add_argument("--max-length", type=whole_number(1), default=None,
                   help="training context length (tokens) to check against")
    v.add_argument("--eval", default=None, help="an evaluation file: checked too, and prompts found in both reported")
    v.add_argument("--json", action="store_true", help="print a JSON list of problems instead of a table")
    v.add_argument("--profile", default=None, help="whose tokenizer and chat template to use")
    v.set_defaults(fn=cmd_data_validate)

    for p in (*sub.choices.values(), v):
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error ends as one line on stderr and exit status 1 (130 when interrupted)."""
    for stream in (sys.stdout, sys.stderr):  # text the terminal cannot show is escaped, never an error
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    try:
        return _run(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    try:
        result = args.fn(args)
        if not isinstance(result, int):  # commands that report through their exit status return it
            print(json.dumps(result))
            result = 0
        sys.stdout.flush()
        return result
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except Exception as e:  # one line for the user; the traceback with --debug
        if getattr(args, "debug", False):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1


def error_line(e: BaseException) -> str:
    """The error as one readable line (several for a config error that lists its problems)."""
    text = str(e) or type(e).__name__
    if isinstance(e, UsageError):
        return text
    if isinstance(e, OSError) and e.filename is not None:
        import errno

        fix = {errno.ENOSPC: "free some disk space", errno.ENOENT: "check the path",
               errno.EACCES: "check the permissions", errno.EPERM: "check the permissions",
               errno.EROFS: "give a folder you may write to"}.get(e.errno, "check the path and its permissions")
        return f"{e.strerror or type(e).__name__}: {e.filename}: {fix} (run again with --debug for the traceback)"
    if isinstance(e, MemoryError):
        return "out of memory: use a smaller profile, model or dataset (run again with --debug for the traceback)"
    known = ("ConfigError", "ModelLoadError", "DataError", "TemplateError", "CheckpointError", "NonFiniteError")
    if type(e).__name__ in known:  # the kit's own errors already say what to do
        return text
    return f"{type(e).__name__}: {text} (run again with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
