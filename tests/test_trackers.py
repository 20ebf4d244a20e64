"""report_to="trackio" | "tensorboard": a run mirrored to the tracker, read back by the tracker's own
reader (trackio's CLI, TensorBoard's event reader); a tracker that is not installed is an error naming
the extra, never silence."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from kit.engine import runs, trackers
from kit.engine.runs import Run

SCRIPT = textwrap.dedent("""
    import sys
    from kit.engine.runs import Run
    with Run("demo", config={"lr": 0.001, "lora": True}, root=sys.argv[1], report_to=sys.argv[2]) as run:
        for step, loss in enumerate([3.0, 2.5, 2.0], start=1):
            run.on_step({"step": step, "loss": loss, "lr": 0.001, "max_steps": 3})
        run.on_eval({"step": 3, "val_loss": 2.2})
        run.log_results({"exact_match_after": 0.5})
""")


def run_script(tmp_path, report_to):
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "runs"), report_to], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


@pytest.mark.skipif(not trackers._installed("tensorboard"), reason="the track extra is not installed")
def test_tensorboard_events_are_read_by_tensorboard(tmp_path):
    run_script(tmp_path, "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "runs" / "demo" / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [3.0, 2.5, 2.0]
    assert [e.step for e in acc.Scalars("val/loss")] == [3]
    assert acc.Scalars("results/exact_match_after")[0].value == 0.5
    assert json.loads((tmp_path / "runs" / "demo" / "run.json").read_text())["status"] == "finished"


@pytest.mark.skipif(not trackers._installed("trackio"), reason="the track extra is not installed")
def test_trackio_run_is_listed_and_read_by_trackio(tmp_path):
    env = run_script(tmp_path, "trackio")
    cli = [sys.executable, "-m", "trackio.cli"]
    runs = subprocess.run([*cli, "list", "runs", "--project", trackers.PROJECT, "--json"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert runs.returncode == 0 and "demo" in runs.stdout, runs.stdout + runs.stderr
    read = textwrap.dedent(f"""
        from trackio.sqlite_storage import SQLiteStorage
        logs = SQLiteStorage.get_logs({trackers.PROJECT!r}, "demo")
        print([l["train/loss"] for l in logs if "train/loss" in l])
    """)
    out = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "[3.0, 2.5, 2.0]", out.stderr[-2000:]


def test_a_missing_tracker_is_an_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(trackers, "_installed", lambda name: False)
    for name in ("trackio", "tensorboard"):
        with pytest.raises(trackers.TrackerMissing, match=r"fine-tuning-kit\[track\]"):
            Run("x", root=tmp_path, report_to=name)
    with pytest.raises(trackers.TrackerMissing):
        Run("y", root=tmp_path, tensorboard=True)  # the older spelling is no longer silent
    with pytest.raises(ValueError, match="unknown tracker"):
        Run("z", root=tmp_path, report_to="wandb")
    assert trackers.tracker_names(None) == [] and trackers.tracker_names("none") == []


@pytest.mark.skipif(not trackers._installed("tensorboard"), reason="the track extra is not installed")
def test_a_finished_run_is_mirrored_afterwards(tmp_path):
    with Run("done", config={"lr": 0.01}, root=tmp_path) as run:
        for step, loss in enumerate([2.0, 1.0], start=1):
            run.on_step({"step": step, "loss": loss, "lr": 0.01, "max_steps": 2})
        run.log_results({"exact_match_after": 0.25})
    command = runs.mirror(tmp_path / "done", "tensorboard")
    assert command == f"tensorboard --logdir {tmp_path / 'done' / 'tensorboard'}"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "done" / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [2.0, 1.0]
