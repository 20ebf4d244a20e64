"""The kit's SFT loop against transformers' `Trainer`: same model, same chat data, same batch, same steps.

Both train the profile's model (fresh weights, seed 0) on the same variable-length chat examples,
E examples per optimizer step, for S steps:
  * kit:     the examples packed into rows of `seq_len` (no padding), `kit.engine.train.train`;
  * Trainer: the examples padded to the longest of each batch (the usual collator), `Trainer.train()`.
Throughput counts real tokens only (no padding). Each side runs in its own child process, one after
the other, so each peak RSS is its own; this script starts both and compares them in one run.

Run: `python bench/throughput.py [--profile classroom] [--steps 24] [--per-step 32]`
Prints a table, then one JSON line with `ratio_vs_trainer` (kit tokens/s / Trainer tokens/s).
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


def workload(profile_name: str, steps: int, per_step: int):
    """The model, the tokenizer and the rendered examples both sides train on."""
    from kit.engine.data import sft_rows
    from kit.engine.models import create
    from kit.lessons.artifacts import tokenizer_for
    from kit.lessons.profiles import get_profile
    from kit.world.corpus import chat_splits

    profile = get_profile(profile_name)
    tok = tokenizer_for(profile)
    examples = chat_splits(per_fact=profile.sft.per_fact)["train"]
    need = steps * per_step
    examples = (examples * math.ceil(need / len(examples)))[:need]
    rendered, _ = sft_rows(examples, tok, profile.sft.seq_len)
    model = create(profile.model, len(tok), tokenizer=tok, seed=0)
    return profile, tok, model, rendered


def run_kit(profile, tok, model, rendered, steps: int) -> dict:
    from kit.engine.packing import PackedChat
    from kit.engine.train import train

    rows = PackedChat(rendered, profile.sft.seq_len, tok.pad_token_id, seed=0)
    per_step = len(rows) // steps  # rows per step: the same examples per step as the Trainer, on average
    cfg = profile.sft.train_config(len(rows)).__class__(
        max_steps=steps, batch_size=per_step, seq_len=profile.sft.seq_len, lr=profile.sft.lr, warmup_steps=1,
        weight_decay=0.0, eval_every=0, log_every=steps, seed=0)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[: steps * per_step]
    real = sum(min(len(r.input_ids), rows.seq_len) for i in order.tolist() for r in rows.rows[i])
    t0 = time.perf_counter()
    hist = train(model, rows, cfg)
    seconds = time.perf_counter() - t0
    return {"real_tokens": real, "seconds": seconds, "final_loss": hist.losses[-1],
            "slots": steps * per_step * rows.seq_len, "rows_per_step": per_step}


def run_trainer(profile, tok, model, rendered, steps: int, per_step: int) -> dict:
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
            output_dir=out, per_device_train_batch_size=per_step, max_steps=steps, learning_rate=profile.sft.lr,
            lr_scheduler_type="cosine", warmup_steps=1, weight_decay=0.0, logging_steps=steps, save_strategy="no",
            report_to=[], use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
            dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting)
        t0 = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t0
    return {"real_tokens": seen["real"], "seconds": seconds, "final_loss": result.training_loss,
            "slots": seen["slots"]}


def child(side: str, profile: str, steps: int, per_step: int) -> None:
    prof, tok, model, rendered = workload(profile, steps, per_step)
    out = run_kit(prof, tok, model, rendered, steps) if side == "kit" else \
        run_trainer(prof, tok, model, rendered, steps, per_step)
    out.update(side=side, tokens_per_s=out["real_tokens"] / out["seconds"], fill=out["real_tokens"] / out["slots"],
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, threads=torch.get_num_threads())
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--per-step", type=int, default=32, help="chat examples per optimizer step")
    ap.add_argument("--side", choices=["kit", "trainer"], help=argparse.SUPPRESS)  # the child processes
    args = ap.parse_args()
    if args.side:
        return child(args.side, args.profile, args.steps, args.per_step)
    res = {}
    for side in ("kit", "trainer"):
        cmd = [sys.executable, __file__, "--side", side, "--profile", args.profile, "--steps", str(args.steps),
               "--per-step", str(args.per_step)]
        res[side] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"{'':>8} {'tokens/s':>9} {'seconds':>8} {'real tokens':>11} {'fill':>5} {'peak RSS MB':>11} {'loss':>6}")
    for side, r in res.items():
        print(f"{side:>8} {r['tokens_per_s']:9.0f} {r['seconds']:8.1f} {r['real_tokens']:11d} {r['fill']:5.2f} "
              f"{r['peak_rss_mb']:11.0f} {r['final_loss']:6.3f}")
    ratio = res["kit"]["tokens_per_s"] / res["trainer"]["tokens_per_s"]
    print(f"ratio_vs_trainer = {ratio:.2f}  ({args.steps} steps x {args.per_step} examples, profile {args.profile})")
    print(json.dumps({"profile": args.profile, "steps": args.steps, "examples_per_step": args.per_step,
                      "ratio_vs_trainer": round(ratio, 3),
                      "kit": {k: round(v, 3) if isinstance(v, float) else v for k, v in res["kit"].items()},
                      "trainer": {k: round(v, 3) if isinstance(v, float) else v for k, v in res["trainer"].items()}}))


if __name__ == "__main__":
    main()
