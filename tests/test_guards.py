"""The loop's guards: a non-finite loss stops the run (or skips the step) and keeps the last good
checkpoint; an out-of-memory error halves the micro-batch and keeps the effective batch."""

import pytest
import torch

from kit.engine import checkpoint
from kit.engine.config import ModelConfig, TrainConfig
from kit.engine.losses import causal_lm_loss
from kit.engine.models import create
from kit.engine.train import NonFiniteError, TokenRows, train

TINY = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64)
CFG = TrainConfig(max_steps=14, batch_size=4, seq_len=16, warmup_steps=2, log_every=1, eval_every=0,
                  checkpoint_every=4, lr=5e-3)


def rows(n_rows=24):
    g = torch.Generator().manual_seed(0)
    return TokenRows(torch.randint(0, 40, (n_rows * 16 + 1,), generator=g), 16)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def nan_on_call(k):
    """The objective, with the loss of its k-th call (k-th micro-batch) turned into NaN."""
    calls = {"n": 0}

    def objective(model, batch):
        calls["n"] += 1
        loss, n = causal_lm_loss(model, batch)
        return (loss * float("nan") if calls["n"] == k else loss), n
    return objective


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    model = create(TINY, vocab_size=40, seed=0)
    with pytest.raises(NonFiniteError, match=r"step 10.*step-000008"):
        train(model, rows(), CFG, objective=nan_on_call(10), checkpoint_dir=tmp_path)
    assert checkpoint.latest(tmp_path).name == "step-000008"  # nothing written after the NaN
    assert torch.isfinite(weights(model)).all()  # the broken step was never applied
    # the kept checkpoint is good: resuming from it (with healthy data) ends where a clean run ends
    clean = create(TINY, vocab_size=40, seed=0)
    train(clean, rows(), CFG)
    resumed = create(TINY, vocab_size=40, seed=3)
    train(resumed, rows(), CFG, checkpoint_dir=tmp_path, resume=True)
    assert torch.equal(weights(resumed), weights(clean))


def test_nan_step_is_skipped_and_counted_when_asked():
    model = create(TINY, vocab_size=40, seed=0)
    cfg = TrainConfig(**{**CFG.__dict__, "nonfinite": "skip"})
    with pytest.warns(UserWarning, match="step skipped"):
        hist = train(model, rows(), cfg, objective=nan_on_call(5))
    assert hist.skipped == 1 and len(hist.notes) == 1
    assert hist.steps[-1] == 14 and all(x == x for x in hist.losses)  # finished, no NaN in the curve
    assert torch.isfinite(weights(model)).all()


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_update():
    def small_memory(model, batch):  # as if only 2 rows fit on the device
        if batch["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return causal_lm_loss(model, batch)

    cfg = TrainConfig(**{**CFG.__dict__, "batch_size": 8, "max_steps": 5, "checkpoint_every": 0})
    plain = create(TINY, vocab_size=40, seed=0)
    train(plain, rows(), cfg)
    backed_off = create(TINY, vocab_size=40, seed=0)
    with pytest.warns(UserWarning, match="out of memory"):
        hist = train(backed_off, rows(), cfg, objective=small_memory)
    assert len(hist.notes) == 2 and "batch_size=2, grad_accum=4" in hist.notes[-1]  # 8 -> 4 -> 2 rows
    assert torch.allclose(weights(plain), weights(backed_off), atol=1e-5)
