"""Every environment switch evtdsl reads, in one typed registry with defaults and docstrings.

Values are read from the environment at each use, so a test (or a user) can change one between calls:

>>> import os; os.environ["EVTDSL_WAIT_TIMEOUT_MS"] = "500"
>>> WAIT_TIMEOUT_MS.get()
500
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def _flag(text: str) -> bool:
    """On unless empty or "0" (the rule errors.py applies to EVTDSL_DEBUG)."""
    return text.strip() not in ("", "0")


def _positive_int(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return v


@dataclass(frozen=True)
class Knob(Generic[T]):
    """One environment variable: its name, its default, how its text is parsed, and what it does."""

    env: str
    default: T
    parse: Callable[[str], T]
    doc: str

    def get(self) -> T:
        text = os.environ.get(self.env)
        if text is None or text == "":
            return self.default
        try:
            return self.parse(text)
        except ValueError as e:
            raise ValueError(f"environment variable {self.env}={text!r}: {e}") from None


REGISTRY: dict[str, Knob] = {}


def _knob(env: str, default: T, parse: Callable[[str], T], doc: str) -> Knob[T]:
    k = Knob(env, default, parse, doc)
    REGISTRY[env] = k
    return k


CACHE_DIR: Knob[str] = _knob(
    "EVTDSL_CACHE_DIR", "", str,
    "Folder of the compiled-kernel cache (cubin, .cu and metadata per kernel). Empty: ~/.cache/evtdsl.")
ALWAYS_COMPILE: Knob[bool] = _knob(
    "EVTDSL_ALWAYS_COMPILE", False, _flag,
    "Compile with NVRTC even when the cache holds the kernel (the fresh result replaces the cached one).")
DUMP_IR: Knob[bool] = _knob(
    "EVTDSL_DUMP_IR", False, _flag,
    "Print each program's canonical IR text to stderr when it is compiled for the GPU.")
DUMP_CUDA: Knob[bool] = _knob(
    "EVTDSL_DUMP_CUDA", False, _flag,
    "Print the generated CUDA C++ of each kernel to stderr when it is compiled.")
DEBUG: Knob[bool] = _knob(
    "EVTDSL_DEBUG", False, _flag,
    "Debug builds and errors: `#line` directives that point at the user's Python, device-side bounds checks "
    "of scalar index reads, a check after each GPU run that every event counter reached exactly zero, and "
    "full tracebacks (evtdsl's own frames are kept).")
WAIT_TIMEOUT_MS: Knob[int] = _knob(
    "EVTDSL_WAIT_TIMEOUT_MS", 5000, _positive_int,
    "How long a GPU task waits on an event (or an idle CTA on the ready queue) before the kernel gives up, "
    "records which task waited on which event, and every CTA exits. Read at each launch; no recompile.")
L2_PREFETCH: Knob[bool] = _knob(
    "EVTDSL_L2_PREFETCH", False, _flag,
    "Prefetch while waiting: in the static schedule, a task whose events have not fired brings the read-only "
    "tiles of its first loop (weights) into L2 while it waits, paced at about one CTA's share of the "
    "bandwidth. Off by default: on an H200 it gained nothing on the SwiGLU and GEMV-chain benchmarks (their "
    "phases already keep HBM busy) and cost up to 3%. Part of the kernel's cache key.")
STREAM_WEIGHTS: Knob[bool] = _knob(
    "EVTDSL_STREAM_WEIGHTS", False, _flag,
    "Weights streamed into registers: in a loop that accumulates dot(x_tile, load(w).T) in registers over 16-row "
    "blocks (a GEMV at decode sizes), the read-only w tile goes from global memory into registers with 16-byte "
    "loads on consecutive bytes, iterations ahead, and into mma-fragment order through a per-warp shared-memory "
    "buffer, instead of through a cp.async shared-memory ring. The default of the launch option `stream`. Off by "
    "default: on an H200 it streams the 8B gate/up GEMV at 88-93% of the copy bandwidth against the ring's 80-84% "
    "(benchmarks/results/gemv-diagnose-h200-20261204-015830), but other kernels have not been measured with it; "
    "the SwiGLU variants choose it per config (Config.stream). Part of the kernel's cache key.")
INLINE_TASKS: Knob[bool] = _knob(
    "EVTDSL_INLINE_TASKS", False, _flag,
    "Task bodies inlined into the persistent loop (__forceinline__) instead of called (__noinline__): no call "
    "boundary for the register allocator, so a streamed GEMV loop does not spill around it, at the price of "
    "one register budget and a longer compile for the whole kernel. Part of the kernel's cache key.")
TIMINGS: Knob[bool] = _knob(
    "EVTDSL_TIMINGS", False, _flag,
    "Print the phases of each GPU compile (codegen, NVRTC, module load) to stderr.")


def cache_dir() -> Path:
    """The cache folder: ``$EVTDSL_CACHE_DIR`` or ``~/.cache/evtdsl``."""
    return Path(CACHE_DIR.get() or Path.home() / ".cache" / "evtdsl")

