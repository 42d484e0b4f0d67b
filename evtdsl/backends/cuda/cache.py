"""The on-disk kernel cache: one folder per user (``$EVTDSL_CACHE_DIR`` or ``~/.cache/evtdsl``), one entry
per kernel key, written atomically (a temporary file, then ``os.replace``).

An entry is ``kernels/<key[:2]>/<key>.cubin`` with ``<key>.cu`` (the generated source, for debugging) and
``<key>.json`` (what a launch needs without re-running codegen: kernel name, shared memory, threads).
The key is the sha256 of the program's text (``ir.printer``), the target arch, the NVRTC version, the compile
options, the hash of the runtime headers and of the code generator's own source, and evtdsl's version.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from ... import knobs
from ...ir import nodes as N
from ...ir.printer import print_program

_HERE = Path(__file__).resolve().parent
# Files whose content shapes the generated code or its meaning: a change to any of them changes every key.
_BACKEND_SOURCES = ("codegen.py", "layout.py")


@lru_cache(maxsize=1)
def runtime_hash() -> str:
    """sha256 of the runtime headers and the code generator's sources (read once per process)."""
    h = hashlib.sha256()
    files = sorted((_HERE / "include").glob("*.cuh")) + [_HERE / f for f in _BACKEND_SOURCES]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def kernel_key(program: N.Program, *, arch: str, nvrtc_version: tuple[int, int], options: dict[str, Any]) -> str:
    import evtdsl

    h = hashlib.sha256()
    # debug builds carry #line directives, so their source locations are part of the kernel
    for part in (print_program(program, locs=bool(options.get("debug"))), arch,
                 ".".join(map(str, nvrtc_version)), json.dumps(options, sort_keys=True), runtime_hash(),
                 evtdsl.__version__):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def entry_paths(key: str) -> dict[str, Path]:
    base = knobs.cache_dir() / "kernels" / key[:2] / key
    return {ext: base.with_suffix("." + ext) for ext in ("cubin", "cu", "json")}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def store(key: str, cubin: bytes, source: str, meta: dict[str, Any]) -> Path:
    """Write an entry; the cubin goes last, so a reader that finds it finds the rest."""
    paths = entry_paths(key)
    _write_atomic(paths["cu"], source.encode())
    _write_atomic(paths["json"], json.dumps(meta, indent=1, sort_keys=True).encode())
    _write_atomic(paths["cubin"], cubin)
    return paths["cubin"]


def load(key: str) -> tuple[bytes, dict[str, Any]] | None:
    """(cubin, metadata) of a cached kernel, or None."""
    paths = entry_paths(key)
    try:
        cubin = paths["cubin"].read_bytes()
        meta = json.loads(paths["json"].read_text())
    except (OSError, ValueError):
        return None
    return cubin, meta
