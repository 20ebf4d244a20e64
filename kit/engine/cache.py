"""The cache: folders written whole or not at all, checked by a manifest before they are trusted.

An entry is written into a temporary folder and renamed into place only when complete, with a
`manifest.json` listing the size and SHA-256 of each file; an entry whose manifest is missing or
does not match its files (a killed build, a truncated copy) counts as absent, never as loaded
half-way. Checkpoints and the course's build-on-demand artefacts use the same two functions.

The cache folder is `$KIT_CACHE` if set, else `.cache/` in the project checkout (git-ignored).
A class can share one pre-built cache, read-only: entries are only read when complete, their
files are readable by everyone who can read the folder, and what a learner writes while working
(run records) goes to `work_root()`, which is the cache itself when writable, else a folder of
the learner's own.

Example:
    >>> entry_key({"lr": 1e-3}, "v1") == entry_key({"lr": 1e-3}, "v1")
    True
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """`$KIT_CACHE`, or `.cache/` beside `kit/` in a checkout, or `~/.cache/fine-tuning-kit`."""
    if os.environ.get("KIT_CACHE"):
        return Path(os.environ["KIT_CACHE"]).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and os.access(checkout, os.W_OK):
        return checkout / ".cache"
    return Path.home() / ".cache" / "fine-tuning-kit"


def is_writable(path: Path) -> bool:
    """True when `path` (or, if it does not exist yet, its nearest existing parent) can be written."""
    path = Path(path)
    existing = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    return existing is not None and os.access(existing, os.W_OK)


def work_root() -> Path:
    """Where the kit writes what a learner makes (run records): `$KIT_WORK`, else the cache if it is
    writable, else `~/.cache/fine-tuning-kit` (a shared read-only cache leaves each learner their own)."""
    if os.environ.get("KIT_WORK"):
        return Path(os.environ["KIT_WORK"]).expanduser()
    root = cache_root()
    return root if is_writable(root) else Path.home() / ".cache" / "fine-tuning-kit"


def read_only_message(entry: Path, build: str) -> str:
    """What to say when a needed entry is missing from a cache this user cannot write."""
    return (f"the cache {entry.parent.parent} is read-only and has no complete {entry.parent.name} entry "
            f"{entry.name} that this account can read: ask whoever shares it to build it there (`{build}`; "
            f"`chmod -R a+rX {entry.parent.parent}` if it exists but is unreadable), or set KIT_CACHE to a folder "
            "you can write, and the kit builds it for you")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_key(*parts) -> str:
    """A short stable hash of JSON-able parts (configs, file hashes, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def read_manifest(entry: Path) -> dict | None:
    """The `{relative path: {"size", "sha256"}}` table of `entry/manifest.json`, or None when the manifest is
    missing or malformed (not a table of files inside the entry with an integer size and a hex digest)."""
    try:
        files = json.loads((Path(entry) / "manifest.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not isinstance(files, dict) or not files:
        return None
    for rel, meta in files.items():
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts or not isinstance(meta, dict):
            return None
        if type(meta.get("size")) is not int or not isinstance(meta.get("sha256"), str):
            return None
    return files


def is_complete(entry: Path, required: tuple[str, ...] = ()) -> bool:
    """True when `entry/manifest.json` is well formed, lists the `required` files, and every file it lists
    has its recorded size and hash. A missing, cut-off or malformed manifest means "incomplete"."""
    files = read_manifest(entry)
    if files is None or any(r not in files for r in required):
        return False
    try:
        for rel, meta in files.items():
            f = Path(entry) / rel
            if f.stat().st_size != meta["size"] or sha256(f) != meta["sha256"]:
                return False
        return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    if os.name != "posix":  # no harmless signal 0 elsewhere: count the writer as alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path, pattern: str | None = None) -> list[Path]:
    """Remove the temporary files or folders (`.NAME.tmp-PID`) that an atomic write of `path` left behind
    when its process was killed; a write still running (its process alive) is left alone.

    `pattern` (a glob in `path`'s folder) widens the search, e.g. ".step-*.tmp-*" for every checkpoint.
    """
    path = Path(path)
    found = []
    for p in path.parent.glob(pattern or f".{glob.escape(path.name)}.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:  # a shared, read-only cache: nothing to clean for this account
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError:
            continue
        found.append(p)
    return found


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file atomically: a temporary file in the same folder, synced, then renamed over the
    old one (a crash leaves the old file whole, and the temporary file is removed). Temporary files that
    a killed write left beside `path` are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), else 0o022's usual reading."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def readable(folder: Path) -> None:
    """Give everything under `folder` the read permissions the user's umask allows (safetensors writes its files
    0600), so that a cache built by one account can be read by the others who share it."""
    mask = _umask()
    for p in [folder, *folder.rglob("*")]:
        bits = (0o555 if p.is_dir() else 0o444) & ~mask
        mode = p.stat().st_mode
        if mode & bits != bits:
            p.chmod(mode | bits)


def write_entry(entry: Path, fill: Callable[[Path], None]) -> None:
    """Run `fill(tmp_folder)`, write the manifest, then atomically rename the folder to `entry`."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(entry)
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        readable(tmp)
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps({"files": files}, indent=1))
        if entry.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
