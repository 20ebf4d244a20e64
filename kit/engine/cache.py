"""The cache: folders written whole or not at all, checked by a manifest before they are trusted.

An entry is written into a temporary folder and renamed into place only when complete, with a
`manifest.json` listing the size and SHA-256 of each file; an entry whose manifest is missing or
does not match its files (a killed build, a truncated copy) counts as absent, never as loaded
half-way. Checkpoints and the course's build-on-demand artefacts use the same two functions.

The cache folder is `$KIT_CACHE` if set, else `.cache/` in the project checkout (git-ignored).

Example:
    >>> entry_key({"lr": 1e-3}, "v1") == entry_key({"lr": 1e-3}, "v1")
    True
"""

from __future__ import annotations

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


def is_complete(entry: Path) -> bool:
    """True when `entry/manifest.json` exists and every file it lists has its recorded size and hash."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        for rel, meta in manifest["files"].items():
            f = entry / rel
            if f.stat().st_size != meta["size"] or sha256(f) != meta["sha256"]:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_entry(entry: Path, fill: Callable[[Path], None]) -> None:
    """Run `fill(tmp_folder)`, write the manifest, then atomically rename the folder to `entry`."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps({"files": files}, indent=1))
        if entry.exists():  # a stale or corrupt entry: replace it
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
