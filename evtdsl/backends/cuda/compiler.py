"""Compile a Program to a cubin with NVRTC (through CuPy's binding), with the disk cache in front.

No GPU is needed: the target is a parameter (``arch="sm_90a"``, exactly one ``--gpu-architecture`` flag),
and the headers come from the pip-installed ``nvidia`` wheels and the package's own ``include`` folder.

>>> k = compile_program(mk.ir, arch="sm_90a")      # doctest: +SKIP
>>> k.cubin[:4], k.timings                          # doctest: +SKIP
(b'\\x7fELF', {'codegen': 0.004, 'nvrtc': 0.41})
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ... import knobs
from ...errors import EvtError, SourceLoc
from ...ir import nodes as N
from ...ir.printer import print_program
from . import cache
from .codegen import KernelSource, arch_number, generate

INCLUDE_DIR = Path(__file__).resolve().parent / "include"
DEFAULT_ARCH = "sm_90a"

# NVRTC compiles done by this process (tests assert that a cache hit does none).
nvrtc_compiles = 0


class CudaCompileError(EvtError):
    """NVRTC rejected the generated code; the message holds its log, and the location is the user's line
    that produced the failing code."""


@dataclass
class CompiledKernel:
    """A cubin and what launching it needs."""

    name: str
    cubin: bytes
    arch: str
    smem_bytes: int
    num_threads: int
    key: str
    path: Path
    index_sites: list[tuple[SourceLoc | None, str]]
    timings: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=1)
def include_dirs() -> tuple[str, ...]:
    """The package's headers, and the CUDA headers (cuda_bf16.h and friends) of the nvidia pip wheels."""
    dirs = [str(INCLUDE_DIR)]
    try:
        import nvidia

        roots = [Path(p) for p in nvidia.__path__]
    except ImportError:
        roots = []
    found = sorted(h.parent for r in roots for h in r.glob("*/include/cuda_bf16.h"))
    if not found:
        raise CudaCompileError("cuda_bf16.h was not found in any pip-installed `nvidia` package; install the "
                               "CUDA headers with `pip install nvidia-cuda-runtime nvidia-cuda-nvrtc`")
    return (*dirs, str(found[-1]))


def nvrtc_version() -> tuple[int, int]:
    from cupy_backends.cuda.libs import nvrtc

    return tuple(nvrtc.getVersion())


def nvrtc_options(arch: str) -> list[str]:
    return [f"--gpu-architecture={arch}", "-std=c++17", "--generate-line-info", *(f"-I{d}" for d in include_dirs())]


def nvrtc_compile(src: KernelSource, arch: str) -> bytes:
    """NVRTC: generated source -> cubin. Errors name the user's line that produced the failing code."""
    global nvrtc_compiles
    from cupy_backends.cuda.libs import nvrtc

    nvrtc_compiles += 1
    prog = nvrtc.createProgram(src.text, src.filename, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, nvrtc_options(arch))
        except nvrtc.NVRTCError:
            log = nvrtc.getProgramLog(prog)
            raise _compile_error(src, arch, log) from None
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)


_ERROR_LINE = re.compile(r"^(.*?)\((\d+)\): (?:catastrophic )?error", re.M)
_INSTANTIATED = re.compile(r"line (\d+) of (\S+)")


def _compile_error(src: KernelSource, arch: str, log: str) -> CudaCompileError:
    loc = None
    for m in _ERROR_LINE.finditer(log):
        file, line = m.group(1), int(m.group(2))
        if Path(file).name == src.filename:
            loc = src.loc_of_line(line)
        elif file.endswith(".py"):
            loc = SourceLoc(file, line)
        if loc is not None:
            break
    if loc is None:
        for m in _INSTANTIATED.finditer(log):
            if Path(m.group(2)).name == src.filename:
                loc = src.loc_of_line(int(m.group(1)))
                break
    errors = [ln for ln in log.splitlines() if ln.strip()]
    shown = "\n".join(errors[:40]) + ("\n..." if len(errors) > 40 else "")
    return CudaCompileError(f"NVRTC could not compile the generated kernel {src.name} for {arch}; set "
                            f"EVTDSL_DUMP_CUDA=1 to see the source. NVRTC says:\n{shown}", loc)


def compile_program(program: N.Program, *, arch: str | None = None, num_threads: int = 256, min_blocks: int = 2,
                    debug: bool | None = None, prefetch: bool | None = None,
                    stream: bool | None = None, inline_tasks: bool | None = None) -> CompiledKernel:
    """The cubin of ``program``'s persistent kernel: from the disk cache when it holds the same key, otherwise
    generated and compiled with NVRTC, then cached."""
    arch = arch or DEFAULT_ARCH
    arch_number(arch)
    debug = knobs.DEBUG.get() if debug is None else debug
    prefetch = knobs.L2_PREFETCH.get() if prefetch is None else prefetch
    stream = knobs.STREAM_WEIGHTS.get() if stream is None else stream
    inline_tasks = knobs.INLINE_TASKS.get() if inline_tasks is None else inline_tasks
    options: dict[str, Any] = {"num_threads": num_threads, "min_blocks": min_blocks, "debug": debug,
                               "prefetch": prefetch, "stream": stream, "inline_tasks": inline_tasks}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    key = cache.kernel_key(program, arch=arch, nvrtc_version=nvrtc_version(), options=options)
    timings["key"] = time.perf_counter() - t0
    if knobs.DUMP_IR.get():
        print(f"// evtdsl IR of {program.name}\n{print_program(program)}", file=sys.stderr)
    if not knobs.ALWAYS_COMPILE.get():
        t0 = time.perf_counter()
        hit = cache.load(key)
        timings["cache_read"] = time.perf_counter() - t0
        if hit is not None:
            cubin, meta = hit
            sites = [(SourceLoc(*s[:3]) if s[0] else None, s[3]) for s in meta["index_sites"]]
            k = CompiledKernel(meta["name"], cubin, arch, meta["smem_bytes"], meta["num_threads"], key,
                               cache.entry_paths(key)["cubin"], sites, timings)
            _report(program, k, hit=True)
            return k
    t0 = time.perf_counter()
    src = generate(program, arch=arch, num_threads=num_threads, min_blocks=min_blocks, debug=debug,
                   prefetch=prefetch, stream=stream, inline_tasks=inline_tasks)
    timings["codegen"] = time.perf_counter() - t0
    if knobs.DUMP_CUDA.get():
        print(src.text, file=sys.stderr)
    t0 = time.perf_counter()
    cubin = nvrtc_compile(src, arch)
    timings["nvrtc"] = time.perf_counter() - t0
    sites = [([loc.file, loc.line, loc.col] if loc else [None, 0, 0]) + [t] for loc, t in src.index_sites]
    meta = {"name": src.name, "smem_bytes": src.smem_bytes, "num_threads": src.num_threads, "arch": arch,
            "program": program.name, "index_sites": sites}
    t0 = time.perf_counter()
    path = cache.store(key, cubin, src.text, meta)
    timings["cache_write"] = time.perf_counter() - t0
    k = CompiledKernel(src.name, cubin, arch, src.smem_bytes, src.num_threads, key, path, src.index_sites, timings)
    _report(program, k, hit=False)
    return k


def _report(program: N.Program, k: CompiledKernel, hit: bool) -> None:
    if knobs.TIMINGS.get():
        phases = ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in k.timings.items())
        print(f"evtdsl: {program.name} for {k.arch}: {'cache hit' if hit else 'compiled'} ({phases}) -> {k.path}",
              file=sys.stderr)
