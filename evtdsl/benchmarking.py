"""Measuring on a GPU: copy and read bandwidth ceilings, and CUDA-graph timing of a callable.

Each ceiling is measured in the same run as the numbers it judges (PERF.md): a large device-to-device copy
(bytes read + written), and a read-only streaming reduction.
"""
import contextlib
import os
import statistics


def _torch():
    import torch

    return torch


def copy_bandwidth(nbytes: int = 2 << 30, repeats: int = 20) -> float:
    """Device-to-device copy, bytes read plus written per second."""
    torch = _torch()
    src = torch.empty(nbytes // 2, dtype=torch.int16, device="cuda").random_()
    dst = torch.empty_like(src)
    t = time_callable(lambda: dst.copy_(src), repeats=repeats)
    return 2 * nbytes / t


def read_bandwidth(nbytes: int = 2 << 30, repeats: int = 20) -> float:
    """Read-only streaming (a sum over a large buffer), bytes read per second."""
    torch = _torch()
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    out = torch.empty((), device="cuda")
    t = time_callable(lambda: torch.sum(src, dim=0, out=out), repeats=repeats)
    return nbytes / t


def time_callable(fn, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn()`` timed with CUDA events (eager launches)."""
    torch = _torch()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(times)


def time_graph(fns: list, repeats: int = 20, warmup: int = 2, min_seconds: float = 1e-3) -> float:
    """Median seconds per call when the calls ``fns`` (e.g. one per rotated weight copy) are captured in one
    CUDA graph and replayed back to back; each replay runs every fn once.

    Each timed sample replays the graph enough times (at least ``min_seconds`` of GPU work) that the host's
    submission of one replay overlaps the execution of the previous one: what is measured is the calls'
    cost in a busy stream, as inside a serving engine's step, not the latency of submitting a graph."""
    torch = _torch()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            for f in fns:
                f()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    g.replay()
    torch.cuda.synchronize()

    def sample(n: int) -> float:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            g.replay()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) * 1e-3 / n

    inner = max(1, min(1000, int(min_seconds / max(sample(1), 1e-7))))
    times = [sample(inner) / len(fns) for _ in range(repeats)]
    return statistics.median(times)


@contextlib.contextmanager
def env(name: str, value: str):
    """Set the environment variable ``name`` (an evtdsl knob, say) to ``value`` inside the block, then restore it."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
