import pytest

from kit.engine.config import ConfigError, TrainConfig, validate
from kit.lessons.profiles import PROFILES, default_profile_name, get_profile, validate_profile


def test_every_profile_is_valid():
    for name in PROFILES:
        validate_profile(get_profile(name))


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
        validate_profile(bad)
    msg = str(e.value)
    assert msg.startswith("3 problems") and "sft.seq_len" in msg and "sft.epochs" in msg and "lora_dropout" in msg


def test_sft_train_config_counts_epochs():
    p = get_profile("classroom").with_sft(epochs=2, batch_size=10)
    cfg = p.sft.train_config(n_rows=100)
    assert cfg.max_steps == 20 and cfg.eval_every == 10 and cfg.lr == p.sft.lr
    assert p.with_sft(lora=True).sft.train_config(100).lr == p.sft.lora_lr


def test_profile_copies_are_validated_with_every_problem():
    p = get_profile("smoke")
    with pytest.raises(ConfigError) as e:
        p.with_sft(epochs=-1, lr=float("inf"), batch_size=0)
    msg = str(e.value)
    assert msg.startswith("3 problems") and "sft.epochs" in msg and "sft.lr" in msg and "sft.batch_size" in msg
    with pytest.raises(ConfigError, match="unknown sft setting: epoch"):
        p.with_sft(epoch=2)
    assert p.with_model(n_layers=1).model.n_layers == 1 and p.with_tokenizer(vocab_size=512).tokenizer.vocab_size == 512


def test_non_finite_and_fractional_settings_are_refused():
    from kit.engine.config import ConfigError, SFTConfig, TrainConfig, validate

    with pytest.raises(ConfigError) as e:
        validate(TrainConfig(lr=float("inf"), batch_size=8.5, max_steps=float("nan")))
    text = str(e.value)
    for words in ("train.lr must be a finite positive number, got inf", "train.batch_size must be a whole number",
                  "train.max_steps must be a finite positive number, got nan"):
        assert words in text
    with pytest.raises(ConfigError, match="sft.lr must be a finite positive number"):
        get_profile("smoke").with_sft(lr=float("inf"))
    with pytest.raises(ConfigError, match="sft.lora_r must be a whole number, got 4.5"):
        validate(SFTConfig(lora_r=4.5))
