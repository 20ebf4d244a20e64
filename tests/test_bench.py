"""The benchmarks still run (smoke sizes) and end with one JSON line; their timings are not checked here."""

import json
import os
import subprocess
import sys


def last_json(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_gpu_bench_runs_on_cpu_in_smoke_mode():
    out = last_json("bench/gpu.py", "--smoke")
    assert [r["mode"] for r in out["results"]] == ["full", "lora"]
    full, lora = out["results"]
    assert lora["trainable"] < full["trainable"] == full["params"]
    assert lora["flops_per_token"] < full["flops_per_token"]


def test_throughput_bench_compares_both_loops_on_the_same_examples():
    out = last_json("bench/throughput.py", "--profile", "smoke", "--steps", "3", "--per-step", "8")
    kit, trainer = out["kit"], out["trainer"]
    assert out["ratio_vs_trainer"] > 0
    assert kit["fill"] > trainer["fill"]  # packing wastes less than padding
    assert abs(kit["real_tokens"] - trainer["real_tokens"]) < 0.25 * trainer["real_tokens"]


def test_generation_bench_compares_batched_with_one_at_a_time_on_the_stand_in():
    out = last_json("bench/generate.py", "--model", "smollm2", "--layers", "2", "--prompts", "6", "--tokens", "4",
                    "--batch-size", "6")
    assert out["prompts"] == 6 and out["ratio"] > 0
    assert 0 <= out["identical_replies"] <= 6
