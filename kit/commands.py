"""The CLI's model commands (`chat`, `eval`, `dpo`) and the flags that every config field gets.

Each config dataclass field becomes a flag with the field's own comment as its help text
(`SFTConfig.lora_r` -> `--lora-r`), so no field is missing from the CLI; a flag not given keeps the
default of the model (the real chat model's settings, or the config's).

Example:
    $ ftkit chat --model smollm2 --prompt "What is the capital of France?"
    The capital of France is Paris.
    {"model": "smollm2", "prompt": "What is the capital of France?", "reply": "...", ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import sys
import time
import tokenize
import typing
from collections import Counter
from pathlib import Path

from .cli import UsageError, input_file, non_negative_number, positive_number, quiet, read_examples, whole_number

POSITIVE = {"lr", "lora_lr", "epochs", "beta"}          # floats that must be > 0
AT_LEAST_ONE = {"seq_len", "batch_size", "lora_r", "lora_alpha", "log_every"}  # counts that must be >= 1


def field_help(cls) -> dict[str, str]:
    """Each field's help text: the comment written beside it in the class (and on the comment-only lines
    right below it)."""
    src = inspect.getsource(cls)
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    out: dict[str, str] = {}
    current = None
    for n, text in enumerate(src.splitlines(), 1):
        m = re.match(r"\s+(\w+)\s*:", text)
        if m and n in comments and not text.strip().startswith("#"):
            current = m[1]
            out[current] = comments[n]
        elif current and text.strip().startswith("#") and n in comments:
            out[current] += " " + comments[n]
        else:
            current = None
    return out


def _flag_type(kind: type, name: str):
    """The argparse type of a config field: the CLI's own number checks, with the field's lower bound."""
    if kind is int:
        return whole_number(1 if name in AT_LEAST_ONE else 0)
    return positive_number if name in POSITIVE else non_negative_number


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass `cls` (`--field-name`), default None (= not given)."""
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} fields (not given: the model's settings)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, kind, text = "--" + f.name.replace("_", "-"), hints[f.name], helps.get(f.name, "")
        text = f"{text} (default {f.default!r})".strip() if text else f"default {f.default!r}"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind in (int, float):
            group.add_argument(flag, dest=f.name, type=_flag_type(kind, f.name), default=None, help=text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()),
                               default=None, help=text + " (comma-separated)")
        else:
            group.add_argument(flag, dest=f.name, default=None, help=text)


def config_changes(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def load_model(name: str | None, profile: str | None):
    """(model, tokenizer, the model's name) for --model: the profile's real chat model by default."""
    from .lessons.profiles import get_profile

    real = get_profile(profile).real
    name = name or real.model
    from . import _quiet_transformers
    from .engine.models import load

    _quiet_transformers()
    model, tok = load(name, layers=real.layers) if name == real.model else load(name)
    return model, tok, name


def cmd_chat(args: argparse.Namespace) -> dict:
    """`chat --model M [--prompt P]`: one reply, or a conversation read line by line from stdin."""
    from .engine.generate import chat_replies

    model, tok, name = load_model(args.model, args.profile)
    history = [{"role": "system", "content": args.system}] if args.system else []
    prompts = [args.prompt] if args.prompt is not None else None
    turns, t0 = [], time.perf_counter()
    interactive = prompts is None
    if interactive:
        print("type a message and press Enter; an empty line or Ctrl-D ends the chat", file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line.strip():
                break
            text = line.rstrip("\n")
        elif prompts:
            text = prompts.pop()
        else:
            break
        history.append({"role": "user", "content": text})
        reply, _ = chat_replies(model, tok, [history], max_new_tokens=args.max_new_tokens)[0]
        history.append({"role": "assistant", "content": reply})
        print(reply if not interactive else f"model> {reply}", file=sys.stderr if not interactive else sys.stdout)
        turns.append({"prompt": text, "reply": reply})
    out = {"model": name, "turns": len(turns), "seconds": round(time.perf_counter() - t0, 2)}
    if len(turns) == 1 and not interactive:
        out.update(turns[0])
    return out


def cmd_eval(args: argparse.Namespace) -> dict:
    """`eval --model M --data EVAL`: loss on the replies, and greedy replies scored against them."""
    from .engine.evaluation import evaluate_chat

    examples = read_examples(args.data, "evaluation data")
    model, tok, name = load_model(args.model, args.profile)
    t0 = time.perf_counter()
    res = evaluate_chat(model, tok, examples, args.seq_len, max_new_tokens=args.max_new_tokens)
    for p, ref, got in list(zip(res.get("prompts", []), res.get("references", []), res.get("replies", [])))[:4]:
        print(f"  {p!r}: {got!r} (expected {ref!r})", file=sys.stderr)
    keys = ("eval_loss", "eval_perplexity", "exact_match", "token_f1", "rouge_l")
    return {"model": name, "examples": len(examples), **{k: res.get(k) for k in keys},
            "seconds": round(time.perf_counter() - t0, 2)}


def cmd_dpo(args: argparse.Namespace) -> dict:
    """`dpo --model M --data PAIRS`: preference tuning (LoRA) on chosen / rejected pairs; saves the merged model."""
    from .engine.callbacks import ProgressBar
    from .engine.config import DPOConfig
    from .engine.data import validate
    from .engine.dpo import dpo
    from .engine.models import merge_lora
    from .engine.sft import save

    pairs = read_examples(args.data, "preference pairs")
    if any("prompt" not in p for p in pairs):
        raise UsageError(f"{args.data} holds chat examples, not preference pairs: DPO needs prompt / chosen / "
                         "rejected rows (or chosen / rejected conversations); fine-tune on chat data with `sft`")
    cfg = dataclasses.replace(DPOConfig(), **config_changes(args, DPOConfig))
    model, tok, name = load_model(args.model, args.profile)
    report = validate(pairs, tok, args.seq_len)
    if report.errors:
        print(report, file=sys.stderr)
        raise UsageError(f"preference pairs {args.data} have {len(report.errors)} error(s) with this model's chat "
                         "template (listed above with their lines)")
    t0 = time.perf_counter()
    policy, hist = dpo(model, tok, pairs, cfg, max_len=args.seq_len, callbacks=[ProgressBar("DPO")])
    merged = merge_lora(policy)
    out = args.out or f"runs/dpo-{name.rstrip('/').split('/')[-1]}"
    info = {"base_model": name, "lora": False, "method": "DPO (LoRA adapters, merged)", "train_examples": len(pairs),
            "epochs": cfg.epochs, "lr": cfg.lr, "steps": hist.steps[-1] if hist.steps else 0,
            "config": dataclasses.asdict(cfg), "history": hist.to_dict()}
    path = save(merged, tok, out, info)
    metrics = hist.metrics[-1] if hist.metrics else {}
    losses = hist.losses or [None]
    return {"model": name, "pairs": len(pairs), "steps": info["steps"], "loss_first": losses[0],
            "loss_last": losses[-1],
            **{k: metrics.get(k) for k in ("reward_accuracy", "reward_margin") if k in metrics},
            "seconds": round(time.perf_counter() - t0, 2), "saved_to": str(path)}


def add_commands(sub, common) -> None:
    """Register `chat`, `eval` and `dpo` on the CLI's subparsers; `common(p)` adds --profile and --model."""
    from .engine.config import DPOConfig

    p = sub.add_parser("chat", help="chat with a model: one reply to --prompt, or line by line from stdin")
    common(p)
    p.add_argument("--prompt", default=None, help="one message; without it, read messages from stdin")
    p.add_argument("--system", default=None, help="a system message")
    p.add_argument("--max-new-tokens", type=whole_number(1), default=128, help="reply length limit")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("eval", help="measure a model on chat data: loss on the replies, exact match, token F1")
    common(p)
    p.add_argument("--data", required=True, help="evaluation data (JSONL or CSV, any shape `data validate` reads)")
    p.add_argument("--seq-len", type=whole_number(1), default=256, help="tokens per row")
    p.add_argument("--max-new-tokens", type=whole_number(1), default=None,
                   help="reply length limit (default: the longest reference, plus a margin)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("dpo", help="preference-tune a model on chosen / rejected pairs and save it")
    common(p)
    p.add_argument("--data", required=True, help="preference pairs (prompt / chosen / rejected, or chosen / "
                                                 "rejected conversations)")
    p.add_argument("--seq-len", type=whole_number(1), default=256, help="tokens per pair")
    p.add_argument("--out", default=None, help="folder to save the merged model")
    add_config_flags(p, DPOConfig)
    p.set_defaults(fn=cmd_dpo)


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
    from .lessons.results import STAGE
    from .lessons.safety_run import FIXES, STAGES, run_safety, stage_change
    from .lessons.safety_tables import change_table, interval_table, summary_table, targets_table

    real = profile.real
    name = args.model or real.model
    model, tok = load(name, layers=real.layers) if name == real.model else load(name)
    run = run_safety(profile, model=model, tok=tok, redteam_path=args.redteam, eval_prompts_path=args.eval_prompts,
                     log=lambda m: print(m, file=sys.stderr))
    for text in (summary_table(run.stages), interval_table(run.stages), change_table(run.stages, "base", FIXES),
                 targets_table(run.stages)):
        print(text, file=sys.stderr)
    res = {k: v for k, v in run.figures.items() if k not in STAGES}
    res.update(model=name, seed=profile.safety.seed)
    res.update({st: STAGE.flat(run.stages[st].figures, "cli") for st in STAGES})
    res["changes_from_base"] = {st: {k: [round(v["diff"], 4), *(round(x, 4) for x in v["ci"])]
                                     for k, v in stage_change(run.stages, "base", st).items()} for st in FIXES}
    return res


def cmd_sweep(args: argparse.Namespace) -> dict:
    import dataclasses

    from .engine.sweeps import grid, parse_grid, random_search
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
    from .engine.runs import compare_table
    from .engine.sweeps import sweep
    from .lessons.iterate import best_run, sft_run_fn
    from .lessons.results import SFT

    runs = sweep(points, sft_run_fn(profile), name=args.name, root=args.root)
    print(compare_table(runs, keys=SFT.names("brief")), file=sys.stderr)
    best_keys = {f"best_{SFT.name(path)}": path for path in ("qa.strict", "qa.lenient")}  # best_heldout_qa_strict, ...
    brief = lambda res: {k: v for k, v in res.items() if not k.endswith(("_rows", "_qa_countries"))}  # noqa: E731
    out = {"profile": profile.name, "grid": spec,
           "runs": [{"name": r["name"], "status": r["status"], "params": {k: r["config"].get(k) for k in spec},
                     "error": r.get("error"), "results": brief(r["results"]), "folder": r["folder"]} for r in runs]}
    try:
        best = best_run(runs)  # chosen on the dev countries
    except ValueError:  # no run finished
        counts = Counter(r["status"] for r in runs)
        why = ", ".join(f"{n} {'stopped early as hopeless' if s == 'stopped' else s}" for s, n in counts.items())
        return {**out, "best": None, "best_params": None, **dict.fromkeys(best_keys),
                "reason": f"no run finished ({why}; see the note row of the table): try other settings, e.g. a "
                          "higher lr or more epochs"}
    return {**out, "best": best["name"], "best_params": {k: best["config"].get(k) for k in spec},
            **{key: SFT.read(best["results"], path) for key, path in best_keys.items()}, "reason": None}


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
