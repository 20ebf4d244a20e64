"""GPU throughput of the kit's SFT loop: tokens/s, MFU and peak memory, full fine-tuning and LoRA.

For a lent GPU (a few minutes): the `gpu` profile's model (fresh weights; speed does not depend on
them) trains on packed chat rows, bf16 autocast, fused AdamW, SDPA attention.
MFU = achieved FLOP/s / the card's dense bf16 peak, with FLOPs per token
  full:  6 N + 12 L d T     (N parameters, L layers, width d, context T: the attention scores)
  LoRA:  4 N + 6 N_lora + 12 L d T   (frozen weights need no weight gradient: 2N of the 6N is saved)
Real tokens only (padding excluded).

Run:   python bench/gpu.py [--steps 30] [--compile] [--peak-tflops 989]
Check: python bench/gpu.py --smoke   (the smoke profile on CPU, 3 steps: proves the script runs)
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0}  # dense, no sparsity (vendor data sheets; H100 SXM)


def peak_flops(override: float | None) -> float | None:
    if override:
        return override * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v * 1e12 for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(profile, tok, rows, lora: bool, steps: int, warmup: int, compile_: bool) -> dict:
    from kit.engine.models import add_lora, count_params, create
    from kit.engine.train import train

    model = create(profile.model, len(tok), tokenizer=tok, seed=0)
    n_params = count_params(model)
    if lora:
        model = add_lora(model, profile.sft.lora_r, profile.sft.lora_alpha)
    n_train = count_params(model, trainable_only=True)
    cfg = profile.sft.train_config(len(rows), profile.pretrain.device).__class__(
        max_steps=warmup + steps, batch_size=profile.sft.batch_size, seq_len=profile.sft.seq_len,
        lr=profile.sft.lora_lr if lora else profile.sft.lr, warmup_steps=1, eval_every=0,
        log_every=warmup + steps, compile=compile_, device=profile.pretrain.device)
    marks = {}

    class Clock:  # time the steps after the warm-up (compilation, allocator growth, cuDNN choices)
        def on_step(self, ev):
            marks[ev["step"]] = time.perf_counter()

    cfg_warm = cfg.__class__(**{**cfg.__dict__, "log_every": warmup})
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train(model, rows, cfg_warm, callbacks=[Clock()])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = marks[warmup + steps] - marks[warmup]
    real = rows.fill_rate() * profile.sft.seq_len * profile.sft.batch_size * steps  # expected real tokens
    m, T = profile.model, profile.sft.seq_len
    attn = 12 * m.n_layers * m.hidden_size * T
    per_token = (4 * n_params + 6 * n_train + attn) if lora else (6 * n_params + attn)
    return {"mode": "lora" if lora else "full", "params": n_params, "trainable": n_train,
            "tokens_per_s": real / seconds, "s_per_step": seconds / steps, "flops_per_token": per_token,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, if not known here")
    ap.add_argument("--smoke", action="store_true", help="smoke profile on CPU, 3 steps")
    args = ap.parse_args()

    from kit.engine.packing import PackedChat
    from kit.lessons.artifacts import tokenizer_for
    from kit.lessons.profiles import get_profile
    from kit.world.chats import chat_splits

    profile = get_profile("smoke" if args.smoke else "gpu")
    if args.smoke:
        args.steps, args.warmup = 3, 1
        profile = profile.with_pretrain(device="cpu")
    elif not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU (use --smoke to check the script on a CPU)")
    t0 = time.perf_counter()
    tok = tokenizer_for(profile)
    examples = chat_splits(per_fact=profile.sft.per_fact)["train"]
    rows = PackedChat.from_examples(examples * 4, tok, profile.sft.seq_len)
    peak = peak_flops(args.peak_tflops)
    results = [measure(profile, tok, rows, lora, args.steps, args.warmup, args.compile) for lora in (False, True)]
    for r in results:
        r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak if peak else None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{device}, profile {profile.name}, batch {profile.sft.batch_size} x {profile.sft.seq_len}, "
          f"compile={args.compile}")
    print(f"{'mode':>5} {'params':>11} {'trainable':>11} {'tokens/s':>10} {'s/step':>7} {'MFU':>6} {'peak GB':>8}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gb']:.2f}" if r["peak_mem_gb"] is not None else "n/a"
        print(f"{r['mode']:>5} {r['params']:11,d} {r['trainable']:11,d} {r['tokens_per_s']:10.0f} "
              f"{r['s_per_step']:7.3f} {mfu:>6} {mem:>8}")
    print(json.dumps({"device": device, "profile": profile.name, "compile": args.compile,
                      "peak_tflops": peak / 1e12 if peak else None, "seconds": round(time.perf_counter() - t0, 1),
                      "results": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                                  for r in results]}))


if __name__ == "__main__":
    main()
