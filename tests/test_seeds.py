"""Seeds: KIT_SEED shifts every seed of a profile; bench/seeds.py turns several runs into spreads and ranges."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from kit.engine.config import ConfigError
from kit.lessons.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("seeds", ROOT / "bench" / "seeds.py")
seeds = importlib.util.module_from_spec(spec)
sys.modules["seeds"] = seeds
spec.loader.exec_module(seeds)


def test_kit_seed_shifts_every_seed_and_so_every_cache_key(monkeypatch):
    from kit.lessons.artifacts import base_entry

    plain = get_profile("smoke")
    monkeypatch.setenv("KIT_SEED", "3")
    moved = get_profile("smoke")
    assert moved.name == "smoke"  # the same ranges apply
    for part in ("pretrain", "sft", "safety", "feedback"):
        assert getattr(moved, part).seed == getattr(plain, part).seed + 3, part
    assert moved.real.sft.seed == plain.real.sft.seed + 3 and moved.corpus == plain.corpus
    assert base_entry(moved) != base_entry(plain)  # another base model
    monkeypatch.setenv("KIT_SEED", "three")
    with pytest.raises(ConfigError, match="KIT_SEED must be a whole number"):
        get_profile("smoke")


def test_ranges_hold_every_seed_with_room_to_spare():
    values = [0.70, 0.74, 0.66, 0.72, 0.69]
    low, high = seeds.range_from(values, [0.6, 0.8])
    assert low < min(values) and high > max(values) and high - low > max(values) - min(values)
    assert seeds.range_from([0.99, 1.0], None)[1] == 1.0  # a rate stays a rate
    assert seeds.range_from([0.0, 0.0], [0, 0]) == [0, 0]  # a figure that never moves keeps its exact check
    low, high = seeds.range_from([913, 920, 905], None)
    assert low < 905 and high > 920
    # seeds too far apart for a range: a floor at half the lowest seed, which a model that learned nothing fails
    assert seeds.range_from([0.92, 0.15, 0.94, 0.95, 0.93], None) == [0.075, 1.0]


def test_apply_writes_the_spread_and_the_range(tmp_path):
    table = {"figures": [{"notebook": "03", "figure": "dev QA", "read": "kernel: x", "ranges": {"p": [0.5, 0.6]}},
                         {"notebook": "05", "figure": "never read", "read": "kernel: y"}]}
    path = tmp_path / "expected.json"
    path.write_text(json.dumps(table))
    results = {str(s): {"figures": {"03 dev QA": v}} for s, v in enumerate([0.61, 0.65, 0.58])}
    lines = seeds.apply(results, "p", path)
    row = json.loads(path.read_text())["figures"][0]
    assert row["spread"]["p"]["values"] == [0.61, 0.65, 0.58] and row["spread"]["p"]["min"] == 0.58
    low, high = row["ranges"]["p"]
    assert low < 0.58 and high > 0.65 and "seeds.py" in row["sources"]["p"]
    assert "left as it was" in lines[1]


def test_the_spread_table_has_a_column_per_seed_and_the_range(tmp_path):
    table = {"figures": [{"notebook": "01", "figure": "probe", "read": "kernel: x", "ranges": {"p": [0.1, 0.9]}},
                         {"notebook": "02", "figure": "count", "read": "kernel: y"}]}
    path = tmp_path / "expected.json"
    path.write_text(json.dumps(table))
    results = {"0": {"figures": {"01 probe": 0.5, "02 count": 913.0}}, "3": {"figures": {"01 probe": 0.7}}}
    lines = seeds.markdown(results, "p", path).splitlines()
    assert lines[0] == "| figure | seed 0 | seed 3 | mean ± sd | range |"
    assert lines[2] == "| 01 probe | 0.500 | 0.700 | 0.600 ± 0.141 | 0.100 – 0.900 |"
    assert lines[3] == "| 02 count | 913 | – | 913 ± 0 | – |"  # a seed without the figure, a row without a range


def test_a_partial_run_replaces_only_its_notebooks_figures():
    old = {"figures": {"01 probe": 0.9, "03 strict": 0.07}, "notebook_seconds": {"01_a": 30, "03_b": 300}, "ok": False}
    new = {"figures": {"03 strict": 0.66}, "notebook_seconds": {"03_b": 280}, "ok": True}
    merged = seeds.merge(old, new, ["03"])
    assert merged["figures"] == {"01 probe": 0.9, "03 strict": 0.66}
    assert merged["notebook_seconds"] == {"01_a": 30, "03_b": 280} and "03 on" in merged["remeasured"][0]
    assert merged["ok"] is False  # the figures kept were out of range once: that still holds
    assert seeds.merge(old, new, None) is new and seeds.merge(None, new, ["03"]) is new
