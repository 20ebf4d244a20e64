import json

import pytest

import kit.pretrain
from kit.artifacts import base_entry, base_model, is_complete, write_entry


@pytest.fixture
def count_builds(monkeypatch):
    calls = []
    real = kit.pretrain.pretrain

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kit.pretrain, "pretrain", counting)
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
