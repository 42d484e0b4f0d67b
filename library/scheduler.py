"""The SwiGLU kernel scheduler: which variant runs, per (GPU, K, N, dtype, M bucket).

Profiles are measured (``tune``) and kept on disk as JSON: the ones shipped in ``library/profiles/`` and the
user's own under the evtdsl cache folder, which win. A shape with no profile on a GPU runs the plain torch
path, so an untuned shape is never slower than torch; on the CPU the fused DSL kernel runs (the NumPy
backend, for tests and debugging).
"""
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Union

from evtdsl import knobs

from .swiglu import Config

M_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TORCH = "torch"
# A DSL variant replaces the torch path only when it is at least this much faster: back-to-back H200 runs of
# the same kernels differ by up to 3-5% (torch's 8B SwiGLU at M = 1: 91.3 to 96.0 us), and a win inside that
# could be a loss on the next run.
MARGIN = 0.03
Choice = Union[Config, str]

DEFAULT_CONFIGS = (
    Config("fused", bm=16, bn=64), Config("fused", bm=16, bn=32), Config("fused", bm=32, bn=64),
    Config("fused", bm=64, bn=64), Config("two_phase", bm=16, bn=64, chunk=8),
    Config("two_phase", bm=64, bn=64, chunk=8), Config("two_phase", bm=128, bn=64, chunk=8),
    # 256-byte weight rows per pipeline stage and large down tiles (128 rows x 2048 columns): fewer, longer
    # tasks, whose fixed cost (tables, pipeline fill and drain) weighs less
    Config("fused", bm=16, bn=32, bk=128), Config("two_phase", bm=16, bn=32, bk=128, bc=128, chunk=64),
    Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32),
    Config("two_phase", bm=32, bn=32, bk=128, bc=128, chunk=64),
    # more, smaller tasks for the shapes whose weights are few rows (1B) or few columns (70B TP-8 shard)
    Config("two_phase", bm=16, bn=16, bk=128, bc=64, chunk=64), Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=64),
    Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=32),
    # weights streamed into registers (spill-free since the staged streamed loops: the 8B gate/up GEMV at 88-93%
    # of copy against the ring's 80-84%); the 8B sweeps (benchmarks/results/gemv-diagnose-h200-20261204-0208*,
    # -0211*) found down tiles of 64 hidden columns over chunks of 3584-4096 intermediate columns best
    Config("two_phase", bm=16, bn=64, bk=128, bc=64, chunk=56, stream=1),
    Config("two_phase", bm=16, bn=64, bk=128, bc=64, chunk=64, stream=1),
    Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32, stream=1),
    Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=64, stream=1),
    Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=32, stream=1),
    Config("two_phase", bm=16, bn=16, bk=128, bc=64, chunk=64, stream=1),
    # 32-row blocks streamed (the weights cross HBM once per 32 rows of x instead of per 16)
    Config("two_phase", bm=32, bn=32, bk=128, bc=64, chunk=64, stream=1),
    # down tiles that reduce whole rows of w_down (chunk=0: no partials, no reduce tasks), 128-byte or longer
    # runs per row (gemv-diagnose-h200-20261204-032407: 98.8 us at the 8B shape, M = 1, against 101.6 us for
    # the chunked tiles); per shape, enough gate/up tiles (N / bn) and down tiles (K / bc) for the 264 CTAs
    Config("two_phase", bm=16, bn=64, bk=128, bc=16, chunk=0, stream=1, bkd=512),
    Config("two_phase", bm=16, bn=32, bk=256, bc=16, chunk=0, stream=1, bkd=512),
    Config("two_phase", bm=16, bn=32, bk=256, bc=32, chunk=0, stream=1, bkd=256),
    Config("two_phase", bm=16, bn=16, bk=512, bc=32, chunk=0, stream=1, bkd=256),
    # 8-row down tiles for the 1B shape: K / 8 = 256 down tiles for the 264 CTAs, where 16 rows leave half of
    # them idle in the down phase (128 tiles)
    Config("two_phase", bm=16, bn=32, bk=256, bc=8, chunk=0, stream=1, bkd=512),
    # and over 32 / 64 rows of x: each warp's weight pieces serve every 16-row block of the tile, so the weights
    # cross HBM once per 32 / 64 rows
    Config("two_phase", bm=32, bn=64, bk=128, bc=16, chunk=0, stream=1, bkd=512),
    Config("two_phase", bm=32, bn=32, bk=256, bc=32, chunk=0, stream=1, bkd=256),
    Config("two_phase", bm=64, bn=64, bk=128, bc=16, chunk=0, stream=1, bkd=512),
)
CPU_DEFAULT = Config("fused", bm=16, bn=64)

_SHIPPED = Path(__file__).resolve().parent / "profiles" / "swiglu.json"


def user_profile_path() -> Path:
    return knobs.cache_dir() / "profiles" / "swiglu.json"


def bucket(m: int) -> int:
    """The smallest tuned M at least ``m`` (the largest bucket beyond that): ``bucket(5) == 8``."""
    if m < 1:
        raise ValueError(f"M must be at least 1, got {m}")
    return next((b for b in M_BUCKETS if b >= m), M_BUCKETS[-1])


def key(gpu: str, k: int, n: int, dtype: str, m_bucket: int) -> str:
    return f"{gpu}|K={k}|N={n}|{dtype}|M={m_bucket}"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["entries"]
    except FileNotFoundError:
        return {}


def load_profiles() -> dict:
    return {**_read(_SHIPPED), **_read(user_profile_path())}


def _decode(choice: str) -> Choice:
    if choice == TORCH:
        return TORCH
    fields = dict(kv.split("=") for kv in choice.split(","))
    return Config(fields.pop("strategy"), **{k: int(v) for k, v in fields.items()})


def encode(c: Choice) -> str:
    if c == TORCH:
        return TORCH
    return ",".join(f"{k}={v}" for k, v in asdict(c).items())


class Scheduler:
    """Picks a variant at call time from the profiles (read once; ``reload`` after tuning)."""

    def __init__(self):
        self.entries = load_profiles()

    def reload(self):
        self.entries = load_profiles()

    def pick(self, device: str, k: int, n: int, dtype: str, m: int) -> Choice:
        if device == "cpu":
            return CPU_DEFAULT
        # the profile of the nearest tuned bucket at or above m
        for b in M_BUCKETS[M_BUCKETS.index(bucket(m)):]:
            entry = self.entries.get(key(device, k, n, dtype, b))
            if entry:
                return _decode(entry["choice"])
        return TORCH


def measure(fn: Callable[[], None], sync: Callable[[], None], repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``repeats`` timed calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose(times: dict[str, float | None]) -> str:
    """The encoded choice among measured ``times`` (None: ruled out): the fastest DSL variant if it beats the
    torch path by MARGIN, else torch (also when torch is the only valid time)."""
    dsl = {c: t for c, t in times.items() if c != TORCH and t is not None}
    best = min(dsl, key=dsl.get, default=None)
    torch_t = times.get(TORCH)
    if best is not None and (torch_t is None or dsl[best] <= (1 - MARGIN) * torch_t):
        return best
    if torch_t is None:
        raise ValueError("choose: no valid time (the torch path and every variant were ruled out)")
    return TORCH


def tune(gpu: str, k: int, n: int, dtype: str, time_variant: Callable[[Choice, int], float],
         configs: Iterable[Config] = DEFAULT_CONFIGS, m_buckets: Iterable[int] = M_BUCKETS[:8],
         progress: bool = True, path: Path | None = None) -> dict:
    """Time the torch path and every config at every M bucket with ``time_variant(choice, m)`` (seconds;
    it raises to rule a variant out) and store each bucket's choice (``choose``) in the user's profile."""
    from tqdm.auto import tqdm

    configs, m_buckets = list(configs), list(m_buckets)
    choices: list[Choice] = [TORCH, *configs]
    results = {}
    bar = tqdm(total=len(choices) * len(m_buckets), desc=f"tune swiglu K={k} N={n}", disable=not progress)
    for m in m_buckets:
        times = {}
        for c in choices:
            bar.set_postfix_str(f"M={m} {encode(c) if c != TORCH else TORCH}"[:60])
            try:
                times[encode(c)] = time_variant(c, m)
            except Exception as e:  # noqa: BLE001 - a variant that fails to build or run is skipped
                times[encode(c)] = None
                bar.write(f"M={m} {encode(c)}: skipped ({type(e).__name__}: {e})")
            bar.update()
        results[key(gpu, k, n, dtype, m)] = {"choice": choose(times),
                                              "us": {c: (t * 1e6 if t else None) for c, t in times.items()}}
    bar.close()
    path = path or user_profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {**_read(path), **results}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entries": entries}, indent=1, sort_keys=True))
    tmp.replace(path)
    return results


def tune_on_gpu(k: int, n: int, dtype: str = "bf16", configs: Iterable[Config] = DEFAULT_CONFIGS,
                m_buckets: Iterable[int] = M_BUCKETS[:8], progress: bool = True) -> dict:
    """Measure every variant on the current GPU (CUDA-graph replays, weights rotated beyond the L2) and
    store the winners in the user's profile."""
    import math

    import torch

    from evtdsl import benchmarking as B

    from .mlp import run_variant, torch_swiglu

    tdt = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    copies = max(2, math.ceil(3 * l2 / (3 * k * n * 2)))
    gen = torch.Generator(device="cuda").manual_seed(0)
    ws = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).to(tdt),
           (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).to(tdt)) for _ in range(copies)]

    def time_variant(choice: Choice, m: int) -> float:
        x = torch.randn(m, k, device="cuda", generator=gen).to(tdt)
        if choice == TORCH:
            return B.time_graph([lambda w=w: torch_swiglu(x, *w) for w in ws])
        res = torch.zeros_like(x)
        y = run_variant(choice, x, *ws[0], res)
        ref = torch_swiglu(x, *ws[0])
        err = float((y.float() - ref.float()).norm() / ref.float().norm())
        if not err < 2e-2:
            raise ArithmeticError(f"relative error {err:.2e} against torch")
        return B.time_graph([lambda w=w: run_variant(choice, x, *w, res, sync=False) for w in ws])

    return tune(torch.cuda.get_device_name(), k, n, dtype, time_variant, configs, m_buckets, progress)


def entries_from_benchmark(result: dict) -> dict:
    """Profile entries from a ``benchmarks/swiglu.py`` result: per shape and M, the choice (``choose``)
    between the torch path (CUDA graph) and the variants that matched torch."""
    out = {}
    for row in result["rows"]:
        us = {TORCH: row["torch_graph_us"]}
        for name, v in row["variants"].items():
            if "us" in v and v["rel_err"] < 2e-2:
                cfg = next(c for c in DEFAULT_CONFIGS if c.name == name)
                us[encode(cfg)] = v["us"]
        out[key(result["device"], row["K"], row["N"], "bf16", bucket(row["M"]))] = {"choice": choose(us), "us": us}
    return out
