"""Pick a backend for a megakernel call: CUDA when the arrays live on a GPU, CPU otherwise."""
from __future__ import annotations

from ..errors import ArgumentError


def _on_gpu(a) -> bool:
    dev = getattr(a, "device", None)
    if getattr(dev, "type", None) == "cuda":
        return True
    return type(a).__module__.startswith("cupy")


def run(mk, args, backend: str | None, options: dict):
    if backend is None:
        backend = "cuda" if any(_on_gpu(a) for a in args) else "cpu"
    if backend == "cpu":
        from .cpu.runner import run_cpu

        return run_cpu(mk.ir, args, **options)
    if backend == "cuda":
        from .cuda.launch import run_cuda

        return run_cuda(mk, args, **options)
    raise ArgumentError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
