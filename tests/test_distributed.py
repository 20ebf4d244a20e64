"""`train()` under torchrun: 2 processes (gloo, CPU) give the loss curve of 1 process with the same
global batch, and only rank 0 writes checkpoints and tells the callbacks."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    from safetensors.torch import save_file
    from kit.engine.config import ModelConfig, TrainConfig
    from kit.engine.models import create
    from kit.engine.packing import PackedChat
    from kit.engine.train import TokenRows, train

    out, strategy = sys.argv[1], sys.argv[2]
    rank = int(os.environ.get("RANK", 0))
    tiny = ModelConfig(hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64)
    g = torch.Generator().manual_seed(0)
    rows = TokenRows(torch.randint(0, 40, (40 * 16 + 1,), generator=g), 16)
    cfg = TrainConfig(max_steps=6, batch_size=8, grad_accum=2, seq_len=16, warmup_steps=1, log_every=1,
                      eval_every=3, lr=5e-3, distributed=strategy)

    class Log:
        def on_step(self, ev):
            with open(os.path.join(out, f"events-{rank}.jsonl"), "a") as f:
                f.write(json.dumps(ev) + "\\n")

    model = create(tiny, vocab_size=40, seed=0)
    ckpt = os.path.join(out, "ckpt") if strategy == "ddp" else None
    hist = train(model, rows, cfg, val_data=rows, callbacks=[Log()], checkpoint_dir=ckpt)
    if strategy == "ddp" and rank == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
                  os.path.join(out, "weights.safetensors"))
    with open(os.path.join(out, f"history-{rank}.json"), "w") as f:
        json.dump(hist.to_dict(), f)
''')


def run(tmp_path, name, nproc, strategy="ddp"):
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    proc = subprocess.run([*launcher, str(script), str(out), strategy], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def history(out, rank=0):
    return json.loads((out / f"history-{rank}.json").read_text())


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return run(tmp, "one", 1), run(tmp, "two", 2)


def test_two_processes_give_the_one_process_loss_curve(one_and_two):
    import torch
    from safetensors.torch import load_file

    one, two = one_and_two
    h1, h2 = history(one), history(two)
    assert h1["steps"] == h2["steps"] == [1, 2, 3, 4, 5, 6]
    assert h1["losses"] == pytest.approx(h2["losses"], rel=1e-5)
    assert h1["val_losses"] == pytest.approx(h2["val_losses"], rel=1e-5)
    assert history(two, 1)["losses"] == pytest.approx(h2["losses"], rel=1e-6)  # every rank sees the global loss
    w1, w2 = load_file(one / "weights.safetensors"), load_file(two / "weights.safetensors")
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)


def test_only_rank_zero_logs_and_writes_checkpoints(one_and_two):
    _, two = one_and_two
    assert (two / "events-0.jsonl").exists() and not (two / "events-1.jsonl").exists()
    assert sorted(p.name for p in (two / "ckpt").iterdir()) == ["step-000006"]


def test_fsdp_switch_gives_the_same_curve(one_and_two, tmp_path):
    one, _ = one_and_two
    sharded = run(tmp_path, "fsdp", 2, "fsdp")  # parameters sharded over the 2 ranks
    assert history(sharded)["losses"] == pytest.approx(history(one)["losses"], rel=1e-5)
