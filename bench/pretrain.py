"""Pre-training throughput of the kit's loop for a profile's model, and how close it runs to the CPU's limit.

Run: `python bench/pretrain.py [--profile classroom] [--steps 30] [--compile]`. Prints a table, then one JSON line.
`--model smollm2` measures the real chat model instead: every weight trained (full fine-tuning, fp32) on the
kit's corpus as plain text, rows of 128 tokens, 8 a step.

`cpu_mfu` is the training FLOP/s of the loop divided by the FLOP/s this CPU reaches on a dense fp32
matmul of the model's own width (measured in the same run, with the same threads): how far the loop
is from what the machine can do. Training FLOPs per token: 6N (forward + backward through every
weight, the tied output layer included) plus 12 * layers * width * seq_len for attention scores.
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


def matmul_flops(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """FLOP/s of a dense fp32 (m, k) @ (k, n) matmul, repeated for about `seconds` after a warm-up."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0)


def real_workload(name: str, steps: int, compile: bool):
    """A real model, fully trained on the kit's corpus as plain text: (model, TrainConfig, rows, (layers, width,
    intermediate))."""
    from kit.engine.config import TrainConfig
    from kit.engine.models import load
    from kit.engine.tokenizer import document_start
    from kit.engine.train import TokenRows
    from kit.world.corpus import CorpusConfig, build_corpus

    model, tok = load(name)
    docs = build_corpus(CorpusConfig(bios_per_country=1, qa_per_country=0, stories=100)).train
    ids = [t for d in tok(docs, add_special_tokens=False)["input_ids"] for t in [*document_start(tok), *d,
                                                                              tok.eos_token_id]]
    cfg = TrainConfig(max_steps=steps, batch_size=8, seq_len=128, lr=1e-5, warmup_steps=1, eval_every=0,
                      log_every=steps, compile=compile)
    c = model.config
    return model, cfg, TokenRows(ids, cfg.seq_len), (c.num_hidden_layers, c.hidden_size, c.intermediate_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="classroom")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (TrainConfig.compile)")
    ap.add_argument("--model", default=None, help="a real model ('smollm2') instead of the profile's own")
    args = ap.parse_args()
    profile = get_profile(args.profile)
    if args.model:
        model, cfg, rows, shape = real_workload(args.model, args.steps, args.compile)
    else:
        cfg = profile.with_pretrain(max_steps=args.steps, warmup_steps=1, eval_every=0, log_every=args.steps,
                                    compile=args.compile).pretrain
        tok, rows, _ = corpus_rows(profile)
        model = create(profile.model, len(tok), tokenizer=tok)
        m = profile.model
        shape = (m.n_layers, m.hidden_size, m.intermediate_size)
    t0 = time.perf_counter()
    hist = train(model, rows, cfg)
    seconds = time.perf_counter() - t0
    layers, width, inner = shape
    flops_per_token = 6 * count_params(model) + 12 * layers * width * cfg.seq_len
    train_flops = flops_per_token * hist.tokens / seconds
    tokens = cfg.batch_size * cfg.seq_len  # one micro-batch's rows x width, as the model's matmuls see them
    peak = matmul_flops(tokens, width, inner)
    out = {
        "profile": profile.name, "model": args.model or profile.name, "params": count_params(model),
        "steps": args.steps, "compile": args.compile,
        "tokens_per_step": cfg.batch_size * cfg.grad_accum * cfg.seq_len,
        "tokens_per_s": round(hist.tokens / seconds, 1), "s_per_step": round(seconds / args.steps, 4),
        "train_gflops": round(train_flops / 1e9, 2), "matmul_gflops": round(peak / 1e9, 2),
        "cpu_mfu": round(train_flops / peak, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
    }
    for k, v in out.items():
        print(f"{k:>16}  {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
