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
