import json

import pytest

import kit.lessons.pretrain
from kit.engine.cache import is_complete, write_entry
from kit.engine.checkpoint import CheckpointError
from kit.lessons.artifacts import base_entry, base_model


@pytest.fixture
def count_builds(monkeypatch):
    calls = []
    real = kit.lessons.pretrain.pretrain

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kit.lessons.pretrain, "pretrain", counting)
    return calls


def test_second_call_hits_the_cache(cache, count_builds, tiny_profile):
    first = base_model(tiny_profile)
    second = base_model(tiny_profile)
    assert len(count_builds) == 1
    assert first.info["cached"] is False and second.info["cached"] is True
    assert second.info["val_loss"] == first.info["val_loss"]
    assert first.path == second.path and first.path.is_relative_to(cache)
    x = second.tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    assert (first.model(x).logits - second.model(x).logits).abs().max() < 1e-5


def test_corrupt_entry_is_rebuilt(cache, count_builds, tiny_profile):
    entry = base_model(tiny_profile).path
    weights = entry / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, as by a killed copy
    assert not is_complete(entry)
    again = base_model(tiny_profile)
    assert len(count_builds) == 2 and again.info["cached"] is False
    assert is_complete(entry)


def test_entry_without_manifest_is_rebuilt(cache, count_builds, tiny_profile):
    entry = base_model(tiny_profile).path
    (entry / "manifest.json").unlink()  # as if the build died before finishing
    base_model(tiny_profile)
    assert len(count_builds) == 2


def test_a_changed_config_gets_its_own_entry(tiny_profile):
    import dataclasses

    other = dataclasses.replace(tiny_profile, pretrain=dataclasses.replace(tiny_profile.pretrain, lr=1e-3))
    assert base_entry(other) != base_entry(tiny_profile)


def test_failed_build_leaves_no_entry(tmp_path):
    entry = tmp_path / "x" / "entry"

    def fill(folder):
        (folder / "half.bin").write_bytes(b"123")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_entry(entry, fill)
    assert not entry.exists() and list((tmp_path / "x").iterdir()) == []


def test_info_is_plain_json(cache, tiny_profile):
    base = base_model(tiny_profile)
    info = json.loads((base.path / "info.json").read_text())
    for key in ("params", "train_tokens", "seconds", "val_loss", "fact_cloze_accuracy"):
        assert key in info


def test_interrupted_build_resumes_to_the_same_model(cache, tiny_profile, tmp_path, monkeypatch):
    import torch

    profile = tiny_profile.with_pretrain(checkpoint_every=2)

    class Kill:
        def on_step(self, ev):
            if ev["step"] == 4:  # after the checkpoint at step 2, before the one at step 4
                raise KeyboardInterrupt  # as if the kernel were interrupted

    with pytest.raises(KeyboardInterrupt):
        base_model(profile, callbacks=[Kill()])
    assert not is_complete(base_entry(profile))
    checkpoints = cache / "checkpoints" / base_entry(profile).name
    assert [p.name for p in checkpoints.iterdir()] == ["step-000002"]
    with pytest.raises(CheckpointError, match=r"step 2\): continue it with --resume .* start over with --fresh"):
        base_model(profile, resume=False)  # as `python -m kit pretrain` without --resume: nothing is deleted
    (checkpoints / "marker").touch()
    with pytest.raises(KeyboardInterrupt):
        base_model(profile, fresh=True, callbacks=[Kill()])  # --fresh: the old checkpoints go, step 0 again
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002"]
    said = []
    listen = type("Listen", (), {"on_message": lambda self, ev: said.append(ev["text"])})()
    resumed = base_model(profile, resume=True, callbacks=[listen])
    assert said == [f"resuming from step 2 ({checkpoints / 'step-000002'})"]
    assert resumed.info["history"]["steps"] == [2, 4, 6]
    monkeypatch.setenv("KIT_CACHE", str(tmp_path / "clean"))
    clean = base_model(profile)
    for a, b in zip(resumed.model.parameters(), clean.model.parameters()):
        assert torch.equal(a, b)
    assert not checkpoints.exists()  # the finished entry replaced them


def test_checkpoint_frequency_does_not_change_the_cache_key(tiny_profile):
    assert base_entry(tiny_profile.with_pretrain(checkpoint_every=7)) == base_entry(tiny_profile)
