"""What the browser check starts: a JupyterLab server and a headless Chromium, each stopped by its process id.

`make test-browser` sets KIT_BROWSER_TEST=1 and installs Debian's `chromium` and the `browser` extra
(Playwright for Python, which drives that executable). Without KIT_BROWSER_TEST the tests here are
skipped (a plain `make test` needs no browser); with it, anything missing is a failure, not a skip.

The server runs `jupyter lab` from this Python's environment on a free localhost port with a random
token, in a copy of notebooks/ (so the learner's own decisions files are not touched), with the smoke
profile and its own cache (KIT_CACHE, default `.cache/browser`), which is filled once before the
browser opens (`python -m kit pretrain --profile smoke`).

Example:
    KIT_BROWSER_TEST=1 .venv/bin/python -m pytest -q tests/browser   # what `make test-browser` runs
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENABLED = os.environ.get("KIT_BROWSER_TEST") == "1"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("KIT_BROWSER_SHOTS", ROOT / "build" / "browser"))
CACHE = Path(os.environ.get("KIT_BROWSER_CACHE", ROOT / ".cache" / "browser"))
# As root, in a machine without a network: no sandbox, and none of Chromium's own connections.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, name: str, grace: float = 10.0) -> None:
    """End `proc` and everything it started, by process id: TERM to its process group (its pid), then
    KILL to the group and to each descendant seen before (kernels run in process groups of their own)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # jupyter shuts its kernels down; Chromium closes
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            print(f"{name} (pid {proc.pid}) ignored SIGTERM for {grace:.0f} s: SIGKILL")
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in children:
        try:
            if child.is_running():  # the same process (pid and start time), not a reused pid
                child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


def _env() -> dict:
    # A person clicks (no KIT_HEADLESS); runs and artefacts go to the check's own cache (no KIT_WORK).
    env = {k: v for k, v in os.environ.items() if k not in ("KIT_HEADLESS", "KIT_WORK", "JUPYTER_TOKEN")}
    env.update(KIT_PROFILE="smoke", KIT_CACHE=str(CACHE), PYTHONPATH=str(ROOT), MPLBACKEND="Agg",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


@pytest.fixture(scope="session", autouse=True)
def _requirements():
    if not ENABLED:
        pytest.skip("the browser check runs with `make test-browser` (it installs Chromium and Playwright)")
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        problems.append(f"Playwright for Python is missing ({e}): `make test-browser` installs the `browser` extra")
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's `chromium` "
                        "(or set CHROMIUM to its path)")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def shots() -> Path:
    """The screenshots folder (KIT_BROWSER_SHOTS, default build/browser)."""
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    return SHOTS


TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def timings() -> dict:
    """Seconds per part, shown in the summary (budget: the whole target in 6 minutes)."""
    return TIMINGS


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("browser check: seconds per part")
        for part, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f}  {part}")


@pytest.fixture(scope="session")
def lab(_requirements, tmp_path_factory, timings):
    """A running JupyterLab: {"url", "token", "dir" (the notebooks' copy), "api" (GET/DELETE helper)}."""
    # A CI timeout's SIGTERM ends the session through its `finally` blocks (the server and browser stop).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "kit", "pretrain", "--profile", "smoke"], env=_env(), cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)  # the smoke base model, built once into KIT_CACHE
    timings["smoke base model (cache)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tmp = tmp_path_factory.mktemp("lab")
    notebooks = tmp / "notebooks"
    notebooks.mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy(nb, notebooks / nb.name)
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No news or update checks: this machine has no network, and a person would dismiss the prompt.
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                          "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = _env() | {"JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"),
                    "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--notebook-dir={notebooks}"] + (["--allow-root"] if os.getuid() == 0 else [])
    log = tmp / "jupyter.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=notebooks, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def api(path: str, method: str = "GET"):
        req = urllib.request.Request(f"{url}{path}", method=method, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{_tail(log)}", pytrace=False)
            try:
                api("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer on {url} within 120 s:\n{_tail(log)}", pytrace=False)
                time.sleep(0.5)
        timings["jupyter lab start"] = time.perf_counter() - t0
        yield {"url": url, "token": token, "dir": notebooks, "api": api, "log": log}
    finally:
        _stop(proc, "jupyter lab")
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@pytest.fixture(scope="session")
def browser(lab, tmp_path_factory, timings):
    """Headless Chromium (our own process, stopped by its pid), driven by Playwright over CDP."""
    from playwright.sync_api import sync_playwright

    t0 = time.perf_counter()
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = profile.parent / "chromium.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start (exit {proc.poll()}):\n{_tail(log)}", pytrace=False)
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with sync_playwright() as pw:
            b = pw.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
            timings["chromium start"] = time.perf_counter() - t0
            try:
                yield b
            finally:
                b.close()
    finally:
        _stop(proc, "chromium")
