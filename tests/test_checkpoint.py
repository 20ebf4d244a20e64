import threading

import pytest
import torch

from kit.engine import checkpoint
from kit.engine.config import ModelConfig, TrainConfig
from kit.engine.models import create
from kit.engine.train import TokenRows, train

TINY = ModelConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64)
CFG = TrainConfig(max_steps=14, batch_size=4, seq_len=16, warmup_steps=2, log_every=1, eval_every=0,
                  checkpoint_every=4, lr=5e-3)


def rows():
    g = torch.Generator().manual_seed(0)
    return TokenRows(torch.randint(0, 40, (22 * 16 + 1,), generator=g), 16)  # 22 rows: 5 batches an epoch


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def stopped_at(step, run_dir):
    stop = threading.Event()

    class StopAt:
        def on_step(self, ev):
            if ev["step"] == step:
                stop.set()

    model = create(TINY, vocab_size=40, seed=0)
    hist = train(model, rows(), CFG, callbacks=[StopAt()], stop=stop, checkpoint_dir=run_dir)
    assert hist.stopped and hist.steps[-1] == step
    return model


def test_stop_then_resume_is_bit_identical(tmp_path):
    full = create(TINY, vocab_size=40, seed=0)
    full_hist = train(full, rows(), CFG, checkpoint_dir=tmp_path / "full")
    stopped_at(7, tmp_path / "run")  # mid-epoch (5 batches an epoch), between two periodic checkpoints
    assert checkpoint.latest(tmp_path / "run").name == "step-000007"
    again = create(TINY, vocab_size=40, seed=1)  # a different start: everything must come from the checkpoint
    hist = train(again, rows(), CFG, checkpoint_dir=tmp_path / "run", resume=True)
    assert torch.equal(weights(again), weights(full))
    assert hist.losses == full_hist.losses and hist.steps == full_hist.steps


def test_truncated_checkpoint_is_refused_and_the_previous_one_used(tmp_path):
    full = create(TINY, vocab_size=40, seed=0)
    train(full, rows(), CFG)
    stopped_at(10, tmp_path / "run")  # checkpoints at 8 (periodic) and 10 (on stop)
    newest = tmp_path / "run" / "step-000010"
    blob = newest / "model.safetensors"
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])  # as if killed mid-write
    model = create(TINY, vocab_size=40, seed=0)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(checkpoint.CheckpointError, match="step-000010"):
        checkpoint.load(newest, model, opt, sched)
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint"):
        assert checkpoint.latest(tmp_path / "run").name == "step-000008"
    resumed = create(TINY, vocab_size=40, seed=0)
    with pytest.warns(UserWarning):
        train(resumed, rows(), CFG, checkpoint_dir=tmp_path / "run", resume=True)
    assert torch.equal(weights(resumed), weights(full))


def test_steps_sort_as_numbers_and_old_ones_are_pruned(tmp_path):
    train(create(TINY, vocab_size=40, seed=0), rows(), CFG.__class__(**{**CFG.__dict__, "checkpoint_every": 1}),
          checkpoint_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-000013", "step-000014"]  # keep=2
    (tmp_path / "step-000100").mkdir()  # an empty, incomplete folder with a bigger number
    with pytest.warns(UserWarning):
        assert checkpoint.latest(tmp_path).name == "step-000014"


def test_no_pickle_in_a_checkpoint(tmp_path):
    stopped_at(3, tmp_path)
    files = sorted(p.name for p in checkpoint.latest(tmp_path).iterdir())
    assert files == ["manifest.json", "model.safetensors", "optimizer.safetensors", "state.json"]


@pytest.mark.parametrize("manifest", ['{"files": []}', '{"files": {}}', "null", "[1]", '{"files": {"../x": {}}}',
                                      '{"files": {"state.json": {"size": "1", "sha256": 2}}}', '{"fil', ""])
def test_malformed_manifest_means_incomplete_and_resume_falls_back(tmp_path, manifest):
    stopped_at(10, tmp_path / "run")  # checkpoints at 8 and 10
    (tmp_path / "run" / "step-000010" / "manifest.json").write_text(manifest)
    assert not checkpoint.usable(tmp_path / "run" / "step-000010")
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint"):
        assert checkpoint.latest(tmp_path / "run").name == "step-000008"
    said = []

    class Listen:
        def on_message(self, ev):
            said.append(ev["text"])

    model = create(TINY, vocab_size=40, seed=0)
    with pytest.warns(UserWarning):
        train(model, rows(), CFG, checkpoint_dir=tmp_path / "run", resume=True, callbacks=[Listen()])
    assert said[0] == f"resuming from step 8 ({tmp_path / 'run' / 'step-000008'})"


def test_resume_with_nothing_to_resume_says_so_and_stale_temp_folders_go(tmp_path):
    run = tmp_path / "run"
    (run / f".step-000004.tmp-{2**22 + 11}").mkdir(parents=True)  # a checkpoint write that was killed
    said = []

    class Listen:
        def on_message(self, ev):
            said.append(ev["text"])

    train(create(TINY, vocab_size=40, seed=0), rows(), CFG, checkpoint_dir=run, resume=True, callbacks=[Listen()])
    assert said[0] == f"nothing to resume, starting fresh (no complete checkpoint in {run})"
    assert not any(p.name.startswith(".step-") for p in run.iterdir())
