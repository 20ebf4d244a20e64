"""The kit's SFT loop against transformers' `Trainer`: same model, same chat data, same batch, same steps.

Both train the same model (the same weights) on the same variable-length chat examples, E examples per
optimizer step, for S steps:
  * kit:     the examples packed into rows of `seq_len` (no padding), `kit.engine.train.train`, the output
             layer run only where a label is;
  * Trainer: the examples padded to the longest of each batch (the usual collator), `Trainer.train()`.
Throughput counts real tokens only (no padding). Each side runs in its own child process, one after
the other, so each peak RSS is its own; this script starts them and compares them in one run.

Two workloads:
  * `--profile P` (default classroom): the profile's own model, fresh weights, on the course's chats;
  * `--model smollm2`: the real chat model (SmolLM2-135M-Instruct) on real chat data (the word-task chats of
    `datasets/word_tasks_train.jsonl`, under its own chat template), full fine-tuning AND LoRA (every linear
    layer of every block, r=16, on both sides), each compared in the same run.

Run: `python bench/throughput.py [--profile classroom] [--model smollm2] [--steps 24] [--per-step 32]`
Prints a table, then one JSON line with `ratio_vs_trainer` (kit tokens/s / Trainer tokens/s; with --model, one
ratio per mode).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time

import torch


def workload(profile_name: str, steps: int, per_step: int, model_name: str | None = None, lora: bool = False):
    """The settings, the tokenizer, the model and the rendered examples both sides train on."""
    import dataclasses

    from kit.engine.data import load_jsonl, sft_rows
    from kit.engine.models import add_lora, create, load
    from kit.lessons.artifacts import tokenizer_for
    from kit.lessons.profiles import get_profile
    from kit.world.chats import chat_splits
    from kit.world.corpus import DATASETS

    profile = get_profile(profile_name)
    need = steps * per_step
    if model_name is None:
        tok = tokenizer_for(profile)
        examples = chat_splits(per_fact=profile.sft.per_fact)["train"]
        model = create(profile.model, len(tok), tokenizer=tok, seed=0)
        sft = profile.sft
    else:
        model, tok = load(model_name)
        examples, _ = load_jsonl(DATASETS / "word_tasks_train.jsonl")
        sft = dataclasses.replace(profile.real.sft, lora=lora, lr=1e-5, seq_len=256)
        if lora:
            torch.manual_seed(0)
            model = add_lora(model, sft.lora_r, sft.lora_alpha)
    examples = (examples * math.ceil(need / len(examples)))[:need]
    rendered, _ = sft_rows(examples, tok, sft.seq_len)
    return sft, tok, model, rendered


def run_kit(sft, tok, model, rendered, steps: int) -> dict:
    from kit.engine.config import TrainConfig
    from kit.engine.packing import PackedChat
    from kit.engine.train import train

    rows = PackedChat(rendered, sft.seq_len, tok.pad_token_id, seed=0)
    per_step = len(rows) // steps  # rows per step: the same examples per step as the Trainer, on average
    cfg = TrainConfig(max_steps=steps, batch_size=per_step, seq_len=sft.seq_len,
                      lr=sft.lora_lr if sft.lora else sft.lr, warmup_steps=1, weight_decay=0.0, eval_every=0,
                      log_every=steps, seed=0)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[: steps * per_step]
    real = sum(min(len(r.input_ids), rows.seq_len) for i in order.tolist() for r in rows.rows[i])
    t0 = time.perf_counter()
    hist = train(model, rows, cfg)
    seconds = time.perf_counter() - t0
    return {"real_tokens": real, "seconds": seconds, "final_loss": hist.losses[-1],
            "slots": steps * per_step * rows.seq_len, "rows_per_step": per_step}


def run_trainer(sft, tok, model, rendered, steps: int, per_step: int) -> dict:
    from transformers import Trainer, TrainingArguments

    data = [{"input_ids": r.input_ids, "labels": [t if m else -100 for t, m in zip(r.input_ids, r.loss_mask)]}
            for r in rendered]  # labels unshifted: the model shifts them itself

    def collate(items):
        n = max(len(it["input_ids"]) for it in items)
        pad = [n - len(it["input_ids"]) for it in items]
        return {"input_ids": torch.tensor([it["input_ids"] + [tok.pad_token_id] * p for it, p in zip(items, pad)]),
                "labels": torch.tensor([it["labels"] + [-100] * p for it, p in zip(items, pad)]),
                "attention_mask": torch.tensor([[1] * len(it["input_ids"]) + [0] * p for it, p in zip(items, pad)])}

    seen = {"real": 0, "slots": 0}

    def counting(items):
        batch = collate(items)
        seen["real"] += int(batch["attention_mask"].sum())
        seen["slots"] += batch["input_ids"].numel()
        return batch

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=per_step, max_steps=steps,
            learning_rate=sft.lora_lr if sft.lora else sft.lr,
            lr_scheduler_type="cosine", warmup_steps=1, weight_decay=0.0, logging_steps=steps, save_strategy="no",
            report_to=[], use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
            dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    return {"real_tokens": seen["real"], "seconds": seconds, "final_loss": result.training_loss,
            "slots": seen["slots"]}


def child(side: str, profile: str, steps: int, per_step: int, model: str | None, lora: bool) -> None:
    sft, tok, net, rendered = workload(profile, steps, per_step, model, lora)
    out = run_kit(sft, tok, net, rendered, steps) if side == "kit" else \
        run_trainer(sft, tok, net, rendered, steps, per_step)
    out.update(side=side, tokens_per_s=out["real_tokens"] / out["seconds"], fill=out["real_tokens"] / out["slots"],
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, threads=torch.get_num_threads())
    print(json.dumps(out))


def compare(args, lora: bool) -> dict:
    """Both sides of one mode, each in its own process; the table; {"ratio_vs_trainer", "kit", "trainer"}."""
    res = {}
    for side in ("kit", "trainer"):
        cmd = [sys.executable, __file__, "--side", side, "--profile", args.profile, "--steps", str(args.steps),
               "--per-step", str(args.per_step)] + (["--model", args.model] if args.model else []) \
            + (["--lora"] if lora else [])
        res[side] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    mode = f"{args.model or args.profile}, {'LoRA' if lora else 'full'}"
    print(f"{mode:<22} {'tokens/s':>9} {'seconds':>8} {'real tokens':>11} {'fill':>5} {'peak RSS MB':>11} {'loss':>6}")
    for side, r in res.items():
        print(f"{side:>22} {r['tokens_per_s']:9.0f} {r['seconds']:8.1f} {r['real_tokens']:11d} {r['fill']:5.2f} "
              f"{r['peak_rss_mb']:11.0f} {r['final_loss']:6.3f}")
    ratio = res["kit"]["tokens_per_s"] / res["trainer"]["tokens_per_s"]
    print(f"ratio_vs_trainer = {ratio:.2f}  ({args.steps} steps x {args.per_step} examples, {mode})\n")
    return {"ratio_vs_trainer": round(ratio, 3),
            **{side: {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for side, r in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--model", default=None, help="a real model ('smollm2'): full fine-tuning and LoRA on real chats")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 24; 6 with --model)")
    ap.add_argument("--per-step", type=int, default=None, help="chat examples per step (default 32; 16 with --model)")
    ap.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)  # the child processes
    ap.add_argument("--side", choices=["kit", "trainer"], help=argparse.SUPPRESS)  # the child processes
    args = ap.parse_args()
    args.steps = args.steps or (6 if args.model else 24)
    args.per_step = args.per_step or (16 if args.model else 32)
    if args.side:
        return child(args.side, args.profile, args.steps, args.per_step, args.model, args.lora)
    if args.model is None:
        out = {"profile": args.profile, "steps": args.steps, "examples_per_step": args.per_step, **compare(args, False)}
    else:
        modes = {"full": compare(args, False), "lora": compare(args, True)}
        out = {"model": args.model, "steps": args.steps, "examples_per_step": args.per_step,
               "ratio_vs_trainer": {m: r["ratio_vs_trainer"] for m, r in modes.items()}, **modes}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
