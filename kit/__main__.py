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
import json
import sys
import time
from pathlib import Path


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 1."""


def cmd_pretrain(args: argparse.Namespace) -> dict:
    from .engine.train import ProgressBar
    from .lessons.artifacts import base_model
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    base = base_model(profile, rebuild=args.rebuild, resume=args.resume, callbacks=[ProgressBar("pre-training")])
    info = base.info
    keys = ("profile", "params", "vocab_size", "corpus_tokens", "train_tokens", "steps", "seconds",
            "train_seconds", "tokens_per_s", "train_loss", "val_loss", "fact_cloze_accuracy", "cached")
    out = {k: info.get(k) for k in keys}
    out["path"] = str(base.path)
    for prompt, got, want in info["fact_cloze_examples"][:5]:
        print(f"  {prompt} -> {got!r} (expected {want!r})", file=sys.stderr)
    return out


def cmd_sft(args: argparse.Namespace) -> dict:
    if args.model is not None or args.data is not None:
        return cmd_sft_any(args)
    from .engine.cache import cache_root
    from .engine.train import ProgressBar
    from .lessons.artifacts import base_model
    from .lessons.profiles import get_profile
    from .lessons.sft import finetune_recipe

    profile = get_profile(args.profile)
    lora = args.lora or profile.sft.lora
    changes = {k: v for k, v in (("epochs", args.epochs), ("lora_lr" if lora else "lr", args.lr), ("seed", args.seed))
               if v is not None}
    profile = profile.with_sft(**changes) if changes else profile
    t0 = time.perf_counter()
    out_dir = args.out or cache_root() / "runs" / f"sft-{profile.name}-{'lora' if lora else 'full'}" \
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

    from .engine.config import SFTConfig
    from .engine.models import load
    from .engine.sft import finetune
    from .engine.train import ProgressBar

    if args.model is None or args.data is None:
        raise UsageError("give both --model DIR_OR_ID and --data TRAIN.jsonl (or neither, for the course's recipe)")
    train_examples = read_examples(args.data, "training data")
    eval_examples = read_examples(args.eval, "evaluation data") if args.eval else None
    model, tok = load(args.model)
    limit = getattr(model.config, "max_position_embeddings", None) or args.seq_len
    cfg = SFTConfig(lora=args.lora, seq_len=min(args.seq_len, limit), batch_size=args.batch_size, replay=0.0)
    changes = {k: v for k, v in (("epochs", args.epochs), ("lora_lr" if args.lora else "lr", args.lr)) if v is not None}
    cfg = dataclasses.replace(cfg, **changes)
    out = args.out or f"runs/sft-{Path(args.model.rstrip('/')).name}-{'lora' if args.lora else 'full'}"
    t0 = time.perf_counter()
    result = finetune(model, tok, train_examples, eval_examples, cfg, callbacks=[ProgressBar("fine-tuning")],
                      out_dir=out)
    info = result.info
    for s in result.samples[:4]:
        print(f"  {s['prompt']!r}: {s['before']!r} -> {s['after']!r} (expected {s['reference']!r})", file=sys.stderr)
    keys = ("lora", "epochs", "lr", "steps", "train_examples", "eval_examples", "loss_tokens", "trainable_params",
            "train_loss", "eval_loss_before", "eval_loss_after", "exact_match_before", "exact_match_after",
            "token_f1_before", "token_f1_after", "rouge_l_before", "rouge_l_after")
    return {"model": args.model, **{k: info.get(k) for k in keys}, "seconds": round(time.perf_counter() - t0, 2),
            "saved_to": str(result.path)}


def read_examples(path: str, what: str) -> list[dict]:
    """Chat examples from a JSONL or CSV file; any error in it ends the command with its report."""
    from .engine.data import load_csv, load_jsonl

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what}: {'is a folder, not a file' if p.is_dir() else 'no such file'}: {path}")
    examples, report = (load_csv if p.suffix.lower() == ".csv" else load_jsonl)(p)
    if report.errors:
        print(report, file=sys.stderr)
        raise UsageError(f"{what} {path} has {len(report.errors)} error(s) (listed above with their lines): "
                         f"fix them, or check with `python -m kit data validate {path}`")
    if not examples:
        raise UsageError(f"{what} {path} holds no example")
    return examples


def cmd_safety(args: argparse.Namespace) -> dict:
    from .lessons.profiles import get_profile
    from .lessons.safety_run import STAGES, change_table, run_safety, stage_change, summary_table, to_json

    profile = get_profile(args.profile)
    out = run_safety(profile, redteam_path=args.redteam, log=lambda m: print(m, file=sys.stderr))
    print(summary_table(out), file=sys.stderr)
    print(change_table(out, "sft", STAGES[2:]), file=sys.stderr)
    keys = ("refusal_rate", "over_refusal_rate", "heldout_qa_strict", "heldout_qa_accuracy", "refusal_rate_classifier",
            "over_refusal_rate_classifier", "judge_disagreement_rate", "eval_unseen_refusal_rate",
            "eval_unseen_over_refusal_rate")
    changes = {st: {k: [round(v["diff"], 4), *(round(x, 4) for x in v["ci"])] for k, v in
                    stage_change(out["sft"], out[st]).items()} for st in STAGES[2:]}
    res = to_json(out)
    res["changes_from_sft"] = changes  # [change, 95% interval low, high] per figure
    for st in STAGES:
        res[st] = {k: res[st][k] for k in keys + tuple(k for k in res[st] if k.startswith("redteam_"))}
    return res


def cmd_sweep(args: argparse.Namespace) -> dict:
    from .engine.runs import compare_table, grid, parse_grid, random_search, sweep
    from .lessons.iterate import best_run, sft_run_fn
    from .lessons.profiles import get_profile

    profile = get_profile(args.profile)
    spec = parse_grid(args.grid)
    points = random_search(spec, args.random, seed=0) if args.random else grid(spec)
    runs = sweep(points, sft_run_fn(profile), name=args.name, root=args.root)
    print(compare_table(runs, keys=("heldout_qa_strict", "heldout_qa_accuracy", "format_rate",
                                    "cloze_after_heldout_countries", "train_seconds")), file=sys.stderr)
    best = best_run(runs)  # chosen on the dev countries
    brief = lambda res: {k: v for k, v in res.items() if not k.endswith(("_rows", "_qa_countries"))}  # noqa: E731
    return {"profile": profile.name, "grid": spec,
            "runs": [{"name": r["name"], "status": r["status"], "params": {k: r["config"].get(k) for k in spec},
                      "results": brief(r["results"]), "folder": r["folder"]} for r in runs],
            "best": best["name"], "best_params": {k: best["config"].get(k) for k in spec},
            "best_heldout_qa_strict": best["results"]["heldout_qa_strict"],
            "best_heldout_qa_accuracy": best["results"]["heldout_qa_accuracy"]}


def cmd_data_validate(args: argparse.Namespace) -> int:
    from .engine.data import load_jsonl, validate_file
    from .lessons.artifacts import tokenizer_for

    tok = tokenizer_for(args.profile)
    eval_examples = load_jsonl(args.eval)[0] if args.eval else None
    report = validate_file(args.file, tok, args.max_length, eval_examples=eval_examples)
    print(report.to_json() if args.json else report)
    return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit", description="The fine-tuning kit, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="build (or load from the cache) the base model and probe it")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--rebuild", action="store_true", help="pre-train again even if the cache has the model")
    p.add_argument("--resume", action="store_true", help="continue an interrupted build from its last checkpoint")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("sft", help="fine-tune a model on chat data and measure it before and after "
                                   "(default: the course's base model and data)")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--model", default=None, help="any causal LM: a saved folder or a hub id (with --data)")
    p.add_argument("--data", default=None, help="training chat data, JSONL or CSV (with --model)")
    p.add_argument("--eval", default=None, help="evaluation chat data (with --model): measured before and after")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
    p.add_argument("--epochs", type=float, default=None, help="number of passes over the training data")
    p.add_argument("--lr", type=float, default=None, help="learning rate (of the adapters, with --lora)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (data order, phrasings, replay sample)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per training row (with --model)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per step (with --model)")
    p.add_argument("--out", default=None, help="folder to save the model (LoRA: the adapter, merged copy in merged/)")
    p.set_defaults(fn=cmd_sft)

    p = sub.add_parser("safety", help="measure refusals, fix with safety SFT, DPO and a guard, measure again")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--redteam", default=None,
                   help="a red-team JSONL file (notebook 04's widget) to evaluate and train on")
    p.set_defaults(fn=cmd_safety)

    p = sub.add_parser("sweep", help="fine-tune once per point of a grid, resumably, and compare the runs")
    p.add_argument("--profile", default=None, help="smoke | classroom | gpu (default: $KIT_PROFILE, else by device)")
    p.add_argument("--grid", required=True, help="e.g. 'lr=1e-4,3e-4;lora_r=4,16' (SFTConfig fields)")
    p.add_argument("--random", type=int, default=0, help="sample this many points of the grid instead of all")
    p.add_argument("--name", default="sweep", help="run names start with this (same name: finished runs are kept)")
    p.add_argument("--root", default=None, help="runs folder (default: the cache's runs/)")
    p.set_defaults(fn=cmd_sweep)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    v = data.add_parser("validate", help="check a chat JSONL file; exit 1 if it has errors")
    v.add_argument("file")
    v.add_argument("--max-length", type=int, default=None, help="training context length to check against")
    v.add_argument("--eval", default=None, help="an evaluation JSONL file: report prompts found in both")
    v.add_argument("--json", action="store_true", help="print a JSON list of problems instead of a table")
    v.add_argument("--profile", default=None, help="whose tokenizer and chat template to use")
    v.set_defaults(fn=cmd_data_validate)

    for p in (*sub.choices.values(), v):
        p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    args = parser.parse_args(argv)
    try:
        from . import _quiet_transformers

        _quiet_transformers()
        result = args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; the traceback with --debug
        if getattr(args, "debug", False):
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    if isinstance(result, int):  # commands that report through their exit status
        return result
    print(json.dumps(result))
    return 0


def error_line(e: BaseException) -> str:
    """The error as one readable line (several for a config error that lists its problems)."""
    text = str(e) or type(e).__name__
    if isinstance(e, UsageError):
        return text
    known = ("ConfigError", "ModelLoadError", "DataError", "TemplateError", "CheckpointError", "NonFiniteError")
    prefix = "" if type(e).__name__ in known else f"{type(e).__name__}: "
    return prefix + text + " (run again with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
