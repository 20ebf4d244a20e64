import pytest

from kit.config import PROFILES, ConfigError, TrainConfig, default_profile_name, get_profile, validate


def test_every_profile_is_valid():
    for name in PROFILES:
        validate(get_profile(name))


def test_one_error_lists_every_problem():
    with pytest.raises(ConfigError) as e:
        validate(TrainConfig(lr=-1.0, batch_size=0, device="tpu", min_lr_ratio=2.0))
    msg = str(e.value)
    assert msg.startswith("4 problems")
    for field in ("train.lr", "train.batch_size", "train.device", "train.min_lr_ratio"):
        assert field in msg


def test_kit_profile_env_picks_profile(monkeypatch):
    monkeypatch.setenv("KIT_PROFILE", "smoke")
    assert default_profile_name() == "smoke"
    assert get_profile().name == "smoke"


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(ConfigError, match="smoke, classroom, gpu"):
        get_profile("huge")


def test_sft_settings_are_checked_with_the_model():
    import dataclasses

    p = get_profile("smoke")
    bad = dataclasses.replace(p, sft=dataclasses.replace(p.sft, seq_len=10_000, epochs=0, lora_dropout=1.5))
    with pytest.raises(ConfigError) as e:
        validate(bad)
    msg = str(e.value)
    assert msg.startswith("3 problems") and "sft.seq_len" in msg and "sft.epochs" in msg and "lora_dropout" in msg


def test_sft_train_config_counts_epochs():
    p = get_profile("classroom").with_sft(epochs=2, batch_size=10)
    cfg = p.sft.train_config(n_rows=100)
    assert cfg.max_steps == 20 and cfg.eval_every == 10 and cfg.lr == p.sft.lr
    assert p.with_sft(lora=True).sft.train_config(100).lr == p.sft.lora_lr
