"""Evaluation replies: batched generation with a KV cache against one prompt at a time, on the real chat model.

The kit's `chat_replies` sorts the prompts by length, left-pads each batch, and lets `generate` keep every
layer's keys and values from step to step (the KV cache), so each new token costs one position, not the
whole text again. The baseline answers the same prompts one at a time (batch size 1, still with the cache).
Both are greedy: the replies must come out the same, and the script checks that they do.

Run: `python bench/generate.py [--model smollm2] [--prompts 64] [--tokens 24] [--batch-size 64]`.
Prints a table, then one JSON line with `ratio` (one-at-a-time seconds / batched seconds).
Timings are for this machine at this moment: compare the ratio of one run, not seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2", help="'smollm2', a folder or a hub id")
    ap.add_argument("--layers", type=int, default=None, help="packaged model: its first blocks only (a stand-in)")
    ap.add_argument("--prompts", type=int, default=64, help="evaluation prompts (the safety eval set's first ones)")
    ap.add_argument("--tokens", type=int, default=24, help="new tokens per reply (at most)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import kit
    from kit.engine.generate import chat_replies
    from kit.world.safety import safety_prompts

    kit._quiet_transformers()
    model, tok = kit.load(args.model, layers=args.layers) if args.layers else kit.load(args.model)
    prompts = [p.text for p in safety_prompts("eval", 1)][: args.prompts]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    chat_replies(model, tok, convs[:2], max_new_tokens=2)  # warm-up
    timing = {}
    replies = {}
    for name, bs in (("batched", args.batch_size), ("one at a time", 1)):
        t0 = time.perf_counter()
        replies[name] = chat_replies(model, tok, convs, max_new_tokens=args.tokens, batch_size=bs)
        timing[name] = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(replies["batched"], replies["one at a time"]))
    ratio = timing["one at a time"] / timing["batched"]
    print(f"{'':>14} {'seconds':>8} {'prompts/s':>10}")
    for name, s in timing.items():
        print(f"{name:>14} {s:8.1f} {len(prompts) / s:10.2f}")
    print(f"ratio = {ratio:.2f}; identical replies: {same} of {len(prompts)}")
    print(json.dumps({"model": args.model, "prompts": len(prompts), "max_new_tokens": args.tokens,
                      "batch_size": args.batch_size, "batched_seconds": round(timing["batched"], 2),
                      "one_at_a_time_seconds": round(timing["one at a time"], 2), "ratio": round(ratio, 2),
                      "identical_replies": same, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
