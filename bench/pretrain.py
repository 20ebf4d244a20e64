"""Pre-training throughput of the kit's loop for a profile's model (tokens/s, s/step, peak RSS).

Run: `python bench/pretrain.py [--profile classroom] [--steps 30]`. Prints a table, then one JSON line.
Timings are for this machine at this moment: compare ratios measured in one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from kit.engine.models import count_params, create
from kit.engine.train import train
from kit.lessons.pretrain import corpus_rows
from kit.lessons.profiles import get_profile


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    profile = get_profile(args.profile)
    cfg = profile.with_pretrain(max_steps=args.steps, warmup_steps=1, eval_every=0, log_every=args.steps).pretrain
    tok, rows, _ = corpus_rows(profile)
    model = create(profile.model, len(tok), tokenizer=tok)
    t0 = time.perf_counter()
    hist = train(model, rows, cfg)
    seconds = time.perf_counter() - t0
    out = {
        "profile": profile.name, "params": count_params(model), "steps": args.steps,
        "tokens_per_step": cfg.batch_size * cfg.grad_accum * cfg.seq_len,
        "tokens_per_s": round(hist.tokens / seconds, 1), "s_per_step": round(seconds / args.steps, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }
    for k, v in out.items():
        print(f"{k:>16}  {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
