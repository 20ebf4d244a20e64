"""`make doctor` (or `python -m kit.doctor`): is this machine ready for the course? Every problem comes with its fix.

It checks, without importing anything heavy until it needs to: the Python version; torch and the
device it finds (CUDA GPU, Apple GPU, or CPU and its threads); the kit's main packages;
JupyterLab and the ipywidgets front-end extension (without it the control panels show as text); the real
chat model's package (its file whole, converted in the cache or not yet);
cores, load, memory and free disk; a writable cache (or a read-only shared one and where runs go
instead); and offline mode. Exit status 1 when something must be fixed, 0 otherwise (notes and
warnings alone: 0).

Example:
    $ python -m kit.doctor
    [ ok ] Python 3.11.7
    [ ok ] torch 2.13.0: no GPU, the CPU with 2 threads (profile classroom)
    ...
    doctor: ready (0 problems, 1 warning)
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 10)
PACKAGES = ("transformers", "tokenizers", "peft", "evaluate", "datasets", "safetensors", "ipywidgets", "matplotlib")
WIDGETS_EXTENSION = Path("@jupyter-widgets") / "jupyterlab-manager"
MIN_MEMORY_GB, MIN_DISK_GB = 3.0, 1.0
INSTALL = "run `make install` in the kit's folder (it installs everything into .venv)"


@dataclass
class Finding:
    """One line of the report: level is "ok", "note", "warn" or "FAIL"; `fix` says what to do about it."""

    level: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"[{self.level:^4}] {self.what}"
        return line + (f"\n       fix: {self.fix}" if self.fix else "")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python(version=sys.version_info) -> Finding:
    text = ".".join(map(str, version[:3]))
    if tuple(version[:2]) < MIN_PYTHON:
        return Finding("FAIL", f"Python {text}: the kit needs {'.'.join(map(str, MIN_PYTHON))} or newer",
                       "install a newer Python (python.org or your package manager), then "
                       "`make install PYTHON=python3.11`")
    return Finding("ok", f"Python {text}")


def check_torch() -> Finding:
    if importlib.util.find_spec("torch") is None:
        return Finding("FAIL", "torch is not installed", INSTALL)
    import torch

    profile = os.environ.get("KIT_PROFILE") or ("gpu" if torch.cuda.is_available() else "classroom")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return Finding("ok", f"torch {torch.__version__}: CUDA GPU {p.name} with {p.total_memory / 2**30:.0f} GB "
                             f"(profile {profile})")
    where = f"no GPU, the CPU with {torch.get_num_threads()} threads (profile {profile})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        where = f"an Apple GPU (mps) is present, but the kit trains on the CPU with {torch.get_num_threads()} threads"
    return Finding("ok", f"torch {torch.__version__}: {where}")


def check_packages(names=PACKAGES) -> Finding:
    missing = [n for n in names if _version(n) is None]
    if missing:
        return Finding("FAIL", f"missing packages: {', '.join(missing)}", INSTALL)
    return Finding("ok", "packages: " + ", ".join(f"{n} {_version(n)}" for n in names[:3]) + ", ...")


def labextension_dirs() -> list[Path]:
    """Where JupyterLab looks for pre-built front-end extensions (jupyter_core's search path)."""
    try:
        from jupyter_core.paths import jupyter_path

        return [Path(p) for p in jupyter_path("labextensions")]
    except ImportError:
        return [Path(sys.prefix) / "share" / "jupyter" / "labextensions"]


def check_jupyterlab() -> Finding:
    version = _version("jupyterlab")
    if version is None:
        return Finding("FAIL", "JupyterLab is not installed: `make lab` cannot open the notebooks", INSTALL)
    if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (4, 2):
        return Finding("warn", f"JupyterLab {version} is older than the 4.2 the course was tested with",
                       "`.venv/bin/pip install -c constraints.txt jupyterlab`")
    return Finding("ok", f"JupyterLab {version}")


def check_widgets_extension(dirs: list[Path] | None = None) -> Finding:
    """ipywidgets needs its JupyterLab front-end (the `jupyterlab_widgets` package and its labextension)."""
    dirs = labextension_dirs() if dirs is None else dirs
    fix = ("`.venv/bin/pip install -c constraints.txt jupyterlab_widgets ipywidgets` (or `make install`), then "
           "restart JupyterLab and reload the page")
    if _version("ipywidgets") is None:
        return Finding("FAIL", "ipywidgets is not installed: the control panels cannot run", fix)
    found = [d / WIDGETS_EXTENSION for d in dirs if (d / WIDGETS_EXTENSION / "package.json").is_file()]
    if _version("jupyterlab_widgets") is None or not found:
        return Finding("FAIL", "the ipywidgets front-end extension (@jupyter-widgets/jupyterlab-manager) is not "
                               "installed: panels and sliders would show as plain text such as 'VBox(children=...)' "
                               f"(looked in: {', '.join(map(str, dirs)) or 'nowhere'})", fix)
    return Finding("ok", f"ipywidgets {_version('ipywidgets')} with its JupyterLab extension "
                         f"(jupyterlab_widgets {_version('jupyterlab_widgets')})")


def check_cores() -> Finding:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    what = f"{cores} CPU cores, load {load:.1f}"
    if cores < 2:
        return Finding("warn", what + ": the classroom profile is timed on 2 cores",
                       "use `KIT_PROFILE=smoke make lab` on this machine, or a machine with more cores")
    if load > 1.5 * cores:
        return Finding("warn", what + ": other programs keep the cores busy, so training will be slower",
                       "close other programs (or wait for the running job) before class; timings taken now mislead")
    return Finding("ok", what)


def memory_gb() -> tuple[float | None, float | None]:
    """(total, available) memory in GB; None where this system does not say."""
    total = available = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return total, available


def check_memory(total: float | None = None, available: float | None = None) -> Finding:
    if total is None and available is None:
        total, available = memory_gb()
    have = available if available is not None else total
    what = f"memory: {total:.1f} GB" if total is not None else "memory: unknown"
    what += f", {available:.1f} GB available" if available is not None else ""
    if have is not None and have < MIN_MEMORY_GB:
        return Finding("warn", what + f": the classroom notebooks want about {MIN_MEMORY_GB:.0f} GB",
                       "close other programs, or use `KIT_PROFILE=smoke` on this machine")
    return Finding("ok", what)


def check_cache() -> list[Finding]:
    """The cache: writable, or a read-only shared one (then runs are written elsewhere); and its free disk."""
    from kit.engine.cache import cache_root, is_writable, work_root

    root = cache_root()
    where = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(where).free / 1e9
    out = []
    if is_writable(root):
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root):
                pass
            out.append(Finding("ok", f"cache {root} is writable"))
        except OSError as e:
            out.append(Finding("FAIL", f"cache {root} cannot be written: {e}",
                               "set KIT_CACHE to a folder you can write, e.g. `export KIT_CACHE=$HOME/kit-cache`"))
    else:
        work = work_root()
        level = "note" if is_writable(work) else "FAIL"
        out.append(Finding(level, f"cache {root} is read-only (a shared, pre-built cache?): models are read from it, "
                                  f"runs are written to {work}",
                           "" if level == "note" else "set KIT_WORK (or KIT_CACHE) to a folder you can write"))
    enough = free >= MIN_DISK_GB
    out.append(Finding("ok" if enough else "warn", f"free disk at {where}: {free:.1f} GB",
                       "" if enough else f"free at least {MIN_DISK_GB:.0f} GB, or point KIT_CACHE elsewhere"))
    return out


def check_real_model(name: str = "smollm2") -> Finding:
    """The packaged real chat model: its distribution installed, its file as pip recorded it, converted or not."""
    try:
        from .engine import packaged
    except ImportError as e:
        return Finding("FAIL", f"the kit cannot be imported ({e})", INSTALL)
    p = packaged.PACKAGED[name]
    try:
        path = packaged.model_file(name)
    except packaged.PackageMissing as e:
        return Finding("FAIL", f"the real chat model is missing: {e}", f"{INSTALL}, or `{packaged.install_command(p)}`")
    want, got = packaged.recorded_sha256(name), packaged.file_sha256(path)
    if want is not None and want != got:
        return Finding("FAIL", f"the real chat model's file {path} is damaged (its SHA-256 differs from pip's record)",
                       f"`{packaged.install_command(p).replace('install', 'install --force-reinstall', 1)}`")
    from .engine.cache import is_complete

    if is_complete(packaged.entry(name)):
        return Finding("ok", f"real chat model {name}: {p.distribution} {_version(p.distribution)}, converted in the "
                             "cache")
    return Finding("note", f"real chat model {name}: {p.distribution} {_version(p.distribution)} installed, not "
                           "converted yet (the first notebook that loads it takes about half a minute more)",
                   f"`.venv/bin/python -c \"import kit; kit.load('{name}')\"` converts it now")


def check_offline() -> Finding:
    if os.environ.get("HF_HUB_OFFLINE", "").strip() in ("1", "true", "True", "yes"):
        return Finding("ok", "offline mode on (HF_HUB_OFFLINE=1): nothing is downloaded")
    return Finding("note", "offline mode off: the course downloads nothing, but a hub model id given in a cell "
                           "would go to the network",
                   "`export HF_HUB_OFFLINE=1` in a room without internet (`make test` sets it)")


def run() -> list[Finding]:
    findings = [check_python(), check_torch(), check_packages(), check_jupyterlab(), check_widgets_extension(),
                check_cores(), check_memory()]
    try:
        findings += check_cache()
        findings.append(check_real_model())
    except ImportError as e:
        findings.append(Finding("FAIL", f"the kit cannot be imported ({e})", "run from the kit's folder, or "
                                                                              + INSTALL))
    findings.append(check_offline())
    return findings


def main() -> int:
    findings = run()
    for f in findings:
        print(f)
    fails = sum(f.level == "FAIL" for f in findings)
    warns = sum(f.level == "warn" for f in findings)
    verdict = "ready" if not fails else "NOT ready: fix the FAIL lines above"
    print(f"doctor: {verdict} ({fails} problem{'s' * (fails != 1)}, {warns} warning{'s' * (warns != 1)})")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
