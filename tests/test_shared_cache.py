"""A class shares one pre-built cache, read-only: models load from it, runs go elsewhere, nothing in it changes."""

import os
import stat
from pathlib import Path

import pytest

from kit.engine import cache as cache_mod
from kit.engine.cache import work_root, write_entry
from kit.engine.runs import Run, runs_root
from kit.lessons.artifacts import base_model, sft_model


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def set_writable(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_cache_files_get_the_read_permissions_of_the_umask(tmp_path):
    """safetensors writes its files 0600: another account sharing the cache could not read the model."""
    def fill(tmp: Path) -> None:
        (tmp / "model").mkdir()
        f = tmp / "model" / "weights.bin"
        f.write_bytes(b"0" * 10)
        f.chmod(0o600)

    write_entry(tmp_path / "base" / "x", fill)
    mask = cache_mod._umask()
    mode = (tmp_path / "base" / "x" / "model" / "weights.bin").stat().st_mode & 0o777
    assert mode & (0o444 & ~mask) == 0o444 & ~mask, oct(mode)
    assert cache_mod.is_complete(tmp_path / "base" / "x")


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only for this test; root ignores file modes, so the kit's own check is told as well."""
    made = []

    def apply(root: Path) -> None:
        set_writable(root, False)
        made.append(root)
        if os.geteuid() == 0:
            real = cache_mod.is_writable
            monkeypatch.setattr(cache_mod, "is_writable", lambda p: not Path(p).resolve().is_relative_to(
                root.resolve()) and real(p))
            import kit.lessons.artifacts as artifacts

            monkeypatch.setattr(artifacts, "is_writable", cache_mod.is_writable)

    yield apply
    for root in made:
        set_writable(root, True)


def test_a_read_only_cache_serves_models_and_runs_go_to_the_learners_folder(tiny_profile, tmp_path, monkeypatch,
                                                                            read_only):
    cache = tmp_path / "shared"
    monkeypatch.setenv("KIT_CACHE", str(cache))
    built = base_model(tiny_profile)
    assert built.info["cached"] is False
    monkeypatch.setenv("HOME", str(tmp_path / "learner"))
    read_only(cache)
    before = tree(cache)

    loaded = base_model(tiny_profile)
    assert loaded.info["cached"] is True and loaded.path == built.path
    assert work_root() == tmp_path / "learner" / ".cache" / "fine-tuning-kit"
    with Run("a-run", config={"lr": 1e-3}) as run:
        run.log_results({"accuracy": 0.5})
    assert (runs_root() / "a-run" / "run.json").is_file() and not runs_root().is_relative_to(cache)
    with pytest.raises(PermissionError, match=r"read-only and has no complete sft entry .*make class-ready"):
        sft_model(tiny_profile)  # not pre-built: the message says who builds it, and the other way out
    assert tree(cache) == before  # nothing in the shared cache changed


def test_kit_work_overrides_where_runs_go(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_WORK", str(tmp_path / "work"))
    assert runs_root() == tmp_path / "work" / "runs"
