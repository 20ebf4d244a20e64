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
import os
import sys
import time
from pathlib import Path

from .cli import Parser, UsageError, error_line, positive_number, quiet, read_examples, whole_number  # noqa: F401
from .commands import add_commands, add_config_flags, cmd_data_validate, cmd_safety, cmd_sweep, load_model


def cmd_pretrain(args: argparse.Namespace) -> dict:
    from .lessons.profiles import get_profile

    if args.resume and args.fresh:
        raise UsageError("--resume continues an interrupted build and --fresh deletes it: give one of them")
    profile = get_profile(args.profile)
    quiet()
    from .engine.callbacks import ProgressBar
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
    from .commands import config_changes
    from .engine.config import SFTConfig
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    changes = _lr_for_lora(config_changes(args, SFTConfig), profile.sft.lora)
    lora = changes.get("lora", profile.sft.lora)
    profile = profile.with_sft(**changes) if changes else profile
    quiet()
    from .engine.callbacks import ProgressBar
    from .engine.runs import runs_root
    from .lessons.artifacts import base_model
    from .lessons.recipe import finetune_recipe

    t0 = time.perf_counter()
    out_dir = args.out or runs_root() / f"sft-{profile.name}-{'lora' if lora else 'full'}" \
        f"{'' if args.seed is None else f'-seed{args.seed}'}"
    result = finetune_recipe(profile, base_model(profile), lora=lora, callbacks=[ProgressBar("fine-tuning")],
                             out_dir=out_dir)
    from .lessons.results import SFT

    for question, answer, expected, ok in result.figures.examples[:6]:
        print(f"  {'ok ' if ok else 'NO '} {question} -> {answer!r} (expected {expected!r})", file=sys.stderr)
    return {**SFT.flat(result.figures, "cli"), "seconds": round(time.perf_counter() - t0, 2), "path": str(result.path)}


def cmd_sft_any(args: argparse.Namespace) -> dict:
    """`sft --model DIR_OR_ID --data FILE`: any causal LM on any chat data, measured before and after."""
    import dataclasses

    from .engine.config import SFTConfig, problems_sft, raise_problems
    from .lessons.profiles import get_profile

    real = get_profile(args.profile).real
    name = args.model or real.model  # default: the profile's real chat model (SmolLM2, offline)
    from .commands import config_changes

    base = real.sft if name == real.model else SFTConfig(seq_len=256)  # the real model: notebook 06's settings
    changes = _lr_for_lora(config_changes(args, SFTConfig), False)
    cfg = dataclasses.replace(base, **{"lora": False, "replay": 0.0, **changes})
    raise_problems(problems_sft(cfg))
    train_examples = read_examples(args.data, "training data")
    if train_examples and "prompt" in train_examples[0]:  # preference pairs: SFT learns the chosen replies
        print(f"note: {args.data} holds preference pairs; sft trains on each prompt with its chosen reply (use "
              "`dpo` to learn from both)", file=sys.stderr)
        train_examples = [{"messages": e["prompt"] + e["chosen"], "_line": e.get("_line")} for e in train_examples]
    eval_examples = read_examples(args.eval, "evaluation data") if args.eval else None
    quiet()
    from .engine.callbacks import ProgressBar
    from .engine.data import validate
    from .engine.sft import finetune

    model, tok, _ = load_model(name, args.profile)
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
    out = args.out or f"runs/sft-{Path(name.rstrip('/')).name}-{'lora' if cfg.lora else 'full'}"
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        run = None
        if args.report_to:  # mirrored to trackio / TensorBoard; the run folder's run.json stays the record
            from .engine.runs import Run

            run = stack.enter_context(Run(Path(out).name, root=Path(out).parent / "tracked", report_to=args.report_to))
        result = finetune(model, tok, train_examples, eval_examples, cfg, callbacks=[ProgressBar("fine-tuning")],
                          out_dir=out, run=run)
    info = result.info
    for s in result.samples[:4]:
        print(f"  {s['prompt']!r}: {s['before']!r} -> {s['after']!r} (expected {s['reference']!r})", file=sys.stderr)
    keys = ("lora", "epochs", "lr", "steps", "train_examples", "eval_examples", "loss_tokens", "trainable_params",
            "train_loss", "eval_loss_before", "eval_loss_after", "exact_match_before", "exact_match_after",
            "exact_match_change", "token_f1_before", "token_f1_after", "rouge_l_before", "rouge_l_after")
    out = {"model": name, **{k: info.get(k) for k in keys}, "seconds": round(time.perf_counter() - t0, 2),
           "saved_to": str(result.path)}
    if args.push_to_hub:  # off by default; needs a network and `huggingface-cli login`
        from .engine.card import push_to_hub

        out["pushed_to"] = push_to_hub(result.path, args.push_to_hub)
    return out


def _lr_for_lora(changes: dict, lora_default: bool) -> dict:
    """`--lr` with LoRA (and no `--lora-lr`) sets the adapters' learning rate, as it always has."""
    if changes.get("lora", lora_default) and "lr" in changes and "lora_lr" not in changes:
        changes = {**changes, "lora_lr": changes.pop("lr")}
    return changes


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-parser per command, in the order `--help` lists them.

    Longer than 60 lines on purpose: it is a table of the commands and their flags, read top to bottom; the
    flags of a config dataclass come from one helper (`commands.config_flags`).
    """
    from .engine.config import SFTConfig

    prog = "ftkit" if Path(sys.argv[0]).name == "ftkit" else "python -m kit"
    parser = Parser(prog=prog, description="The fine-tuning kit, headless.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
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
    p.add_argument("--out", default=None, help="folder to save the model (LoRA: the adapter, merged copy in merged/)")
    p.add_argument("--report-to", default=None, choices=("trackio", "tensorboard", "none"),
                   help="mirror the run's config and metrics to trackio (local) or TensorBoard (with --data)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="upload the saved model to this hub repository (private; needs a network and a login)")
    add_config_flags(p, SFTConfig)  # every field; --lr with --lora sets the adapters' rate (as --lora-lr)
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

    def common(p):
        p.add_argument("--profile", default=None,
                       help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
        p.add_argument("--model", default=None, help="'smollm2' (the default: the real chat model, offline), a saved "
                                                     "folder or a hub id")
    add_commands(sub, common)

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


if __name__ == "__main__":
    sys.exit(main())
