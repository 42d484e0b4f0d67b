"""Generated kernels, run on the host: the generated CUDA C++ with the real runtime headers, compiled by g++
against the host emulation of the PTX instructions (evtdsl/backends/cuda/emulate: one CTA of std::threads,
warp-collective ldmatrix/mma per the PTX fragment layouts, cp.async deferred to its wait), launched with
the real task tables and parameter packing, and compared with the CPU backend. No GPU needed.

Each case runs in a subprocess (a wrong barrier would hang a thread pool, not pytest).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evtdsl as evt
from evtdsl.backends.cpu.runner import index_tensors, bind_sizes
from evtdsl.backends.cuda import codegen, launch
from evtdsl.backends.cuda import tables as TB
from evtdsl.errors import DeviceTimeoutError, EvtError
from evtdsl.ir.passes.graph import build_graph, index_loader
from evtdsl.ir.types import ScalarType, TensorType

EMULATE = Path(codegen.__file__).parent / "emulate"
INCLUDE = Path(codegen.__file__).parent / "include"
NT = 128  # threads per emulated CTA: four warps
HARNESS = """
extern "C" int evt_emu_launch(const void* params, int nt, long smem_bytes) {
  Params p;
  std::memcpy(&p, params, sizeof(Params));
  return evt_emu::run_block(nt, smem_bytes, [&] { %s(p); });
}
extern "C" long evt_emu_prefetches(unsigned long long* out, long cap) {
  const long n = static_cast<long>(evt_emu::prefetched.size());
  for (long i = 0; i < n && i < cap; ++i) {
    out[2 * i] = evt_emu::prefetched[i].first;
    out[2 * i + 1] = evt_emu::prefetched[i].second;
  }
  return n;
}
"""

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ with C++20")


# ---------------------------------------------------------------------------------------------
# Building and launching


def build(program, debug: bool = False, nt: int = NT, stream: bool = True):
    """(ctypes library, KernelSource) of ``program``'s kernel compiled for the host."""
    src = codegen.generate(program, arch="sm_90a", num_threads=nt, debug=debug, prefetch=True, stream=stream)
    # every instance that waits runs all its L2-prefetch parts (one emulated CTA never has to wait)
    text = '#define EVT_PREFETCH_ALWAYS 1\n#include "evt_emu.h"\n' + src.text + HARNESS % src.name
    h = hashlib.sha256(text.encode())
    for f in sorted([*EMULATE.iterdir(), *INCLUDE.iterdir()]):
        h.update(f.read_bytes())
    out = Path(os.environ.get("EVTDSL_EMU_BUILD", "/tmp/evtdsl-emu")) / f"{src.name}_{h.hexdigest()[:16]}.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cpp = out.with_suffix(".cpp")
        cpp.write_text(text)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-w", f"-I{EMULATE}",
                        f"-I{INCLUDE}", "-o", str(tmp), str(cpp)], check=True)
        os.replace(tmp, out)
    lib = ctypes.CDLL(str(out))
    lib.evt_emu_launch.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_long]
    lib.evt_emu_launch.restype = ctypes.c_int
    lib.evt_emu_prefetches.argtypes = [ctypes.c_void_p, ctypes.c_long]
    lib.evt_emu_prefetches.restype = ctypes.c_long
    return lib, src


def run_emulated(mk, args: list, schedule: str = "static", debug: bool = False, verify_counts: bool = True,
                 nt: int = NT, stream: bool = True, trace: np.ndarray | None = None):
    """Launch ``mk`` on host arrays (written in place) as one CTA of ``nt`` threads; returns (tables, final
    state) and raises the error the kernel recorded, as the GPU launch does. ``trace``: int64 zeros, 4 per
    task instance, that the kernel fills with its task timeline."""
    program = mk.ir
    lib, src = build(program, debug, nt, stream)
    arrays = {p.name: a for p, a in zip(program.params, args) if isinstance(p.type, TensorType)}
    scalars = {p.name: a for p, a in zip(program.params, args) if isinstance(p.type, ScalarType)}
    env = bind_sizes(program, arrays, lambda a: a.shape, scalars)
    index = {n: arrays[n] for n in index_tensors(program)}
    graph = build_graph(program, env, index_loader(program, index), verify_counts=verify_counts)
    tables = TB.build_tables(graph, workers=1)
    state = tables.init_state.copy()
    ptrs = {n: a.ctypes.data for n, a in tables.arrays.items()}
    tensors = {n: (a.ctypes.data, a.shape, tuple(s // a.itemsize for s in a.strides)) for n, a in arrays.items()}
    packed = launch.kernel_params(program, tensors, scalars, env, tables, ptrs, state.ctypes.data,
                                  schedule == "dynamic", 0 if trace is None else trace.ctypes.data)
    problems = lib.evt_emu_launch(packed, nt, src.smem_bytes)
    assert problems == 0, f"{problems} emulation check(s) failed (see stderr)"
    check_prefetches(lib, arrays)
    if state[TB.CTL_ERROR]:
        raise launch.device_error(state, tables, src.index_sites, schedule)
    launch.check_counters(state, tables)
    assert tables.done(state).all()
    return tables, state


PREFETCHED: list[list[tuple[int, int]]] = []  # (address, bytes) of the L2 prefetches of each emulated launch


def check_prefetches(lib, arrays: dict[str, np.ndarray]) -> None:
    """Every L2 prefetch range the kernel issued lies inside the memory of a tensor argument."""
    n = lib.evt_emu_prefetches(None, 0)
    buf = np.zeros(2 * max(n, 1), np.uint64)
    lib.evt_emu_prefetches(buf.ctypes.data, n)
    bounds = [np.lib.array_utils.byte_bounds(a) for a in arrays.values()]
    ranges = [tuple(r) for r in buf[:2 * n].reshape(-1, 2).tolist()]
    for a, nbytes in ranges:
        assert nbytes > 0 and a % 16 == 0 and nbytes % 16 == 0, (a, nbytes)
        assert any(lo <= a and a + nbytes <= hi for lo, hi in bounds), \
            f"prefetch of {nbytes} bytes at {a:#x} lies outside every argument"
    PREFETCHED.append(ranges)


def poison(a: np.ndarray) -> None:
    if a.dtype.kind in "iu":
        a[...] = np.iinfo(a.dtype).min
    elif a.dtype.kind == "b":
        a[...] = True
    else:
        a[...] = np.nan


def compare(mk, args: dict, outputs: tuple[str, ...], schedule: str = "static", rtol: float = 1e-4, nt: int = NT,
            stream: bool = True):
    """Run on the CPU backend and emulated; outputs (poisoned first, unless InOut) must agree. Inputs are
    shared as they are (views keep their strides). ``stream``: weights may stream into registers."""
    cpu = {k: args[k].copy() if k in outputs else v for k, v in args.items()}
    emu = {k: args[k].copy() if k in outputs else v for k, v in args.items()}
    for name in outputs:
        if not mk.ir.param(name).type.inout:
            poison(emu[name])
    mk.run(*cpu.values(), backend="cpu", workers=2, schedule=schedule)
    run_emulated(mk, list(emu.values()), schedule, nt=nt, stream=stream)
    for name in outputs:
        a, b = emu[name], cpu[name]
        if a.dtype.kind in "iub":
            assert np.array_equal(a, b), f"{name}: {np.argwhere(a != b)[:5].tolist()} differ"
        else:
            tol = {2: 1.6e-2, 4: rtol}.get(a.dtype.itemsize, rtol)
            np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol,
                                       err_msg=name)


# ---------------------------------------------------------------------------------------------
# Cases (each runs in its own process)


def case_rowsum(schedule: str) -> None:
    from evtdsl.examples import rowsum

    rng = np.random.default_rng(1)
    m, k = 37, 300
    args = {"x": rng.standard_normal((m, k)).astype(np.float32), "part": np.empty((m, 5), np.float32),
            "y": np.empty(m, np.float32)}
    compare(rowsum.rowsum, args, ("part", "y"), schedule)
    # a strided view: no 16-byte vector applies, every chunk takes the element-wise path
    args["x"] = rng.standard_normal((m, 2 * k)).astype(np.float32)[:, ::2]
    compare(rowsum.rowsum, args, ("part", "y"), schedule)


def case_trace(schedule: str) -> None:
    """A traced launch: every task's take, start and end times in order, each task after the one before it
    on the CTA, a waiting task after the tasks that notified its events, and the CTA / SM word."""
    from evtdsl.examples import rowsum

    rng = np.random.default_rng(4)
    m, k = 37, 300
    args = [rng.standard_normal((m, k)).astype(np.float32), np.empty((m, 5), np.float32), np.empty(m, np.float32)]
    program = rowsum.rowsum.ir
    env = bind_sizes(program, {"x": args[0], "part": args[1], "y": args[2]}, lambda a: a.shape, {})
    n = len(build_graph(program, env, index_loader(program, {})).instances)
    trace = np.zeros(4 * n, np.int64)
    tables, _ = run_emulated(rowsum.rowsum, args, schedule, trace=trace)
    t = trace.reshape(-1, 4)
    assert (t[:, 0] > 0).all() and (t[:, 0] <= t[:, 1]).all() and (t[:, 1] <= t[:, 2]).all(), t
    assert (t[:, 3] == 0).all()  # CTA 0 on SM 0
    ordered = t[np.argsort(t[:, 0])]
    assert (ordered[1:, 0] >= ordered[:-1, 2]).all(), "a task was taken before the one before it had ended"
    g = tables.graph
    for i, preds in enumerate(g.preds):
        assert all(t[i, 1] >= t[p, 2] for p in preds), f"{g.instances[i].label} started before its notifiers ended"
    np.testing.assert_allclose(args[2], args[0].sum(axis=1), rtol=1e-4)


def case_gemm_chain(schedule: str) -> None:
    from evtdsl.examples import gemm_chain

    rng = np.random.default_rng(2)
    m, k, n, p = 21, 72, 100, 40
    bf = evt.bf16.np_dtype
    args = {"x": rng.standard_normal((m, k)).astype(bf), "w1": (rng.standard_normal((n, k)) / 8).astype(bf),
            "w2": (rng.standard_normal((p, n)) / 10).astype(bf), "g": np.empty((m, n), np.float32),
            "h": np.empty((m, n), bf), "y": np.empty((m, p), np.float32)}
    compare(gemm_chain.mlp_chain, args, ("g", "h", "y"), schedule, rtol=2e-3)
    compare(gemm_chain.mlp_chain, args, ("g", "h", "y"), schedule, rtol=2e-3, nt=256)  # 8 warps: split-K
    # weights through the cp.async ring instead of streamed into registers
    compare(gemm_chain.mlp_chain, args, ("g", "h", "y"), schedule, rtol=2e-3, stream=False)
    args["w1"] = (rng.standard_normal((n, k + 3)) / 8).astype(bf)[:, 3:]  # rows not 16-byte aligned
    compare(gemm_chain.mlp_chain, args, ("g", "h", "y"), schedule, rtol=2e-3)
    # a transposed view: column stride 200, every streamed piece is read element by element
    args["w1"] = np.ascontiguousarray((rng.standard_normal((k, n)) / 8).astype(bf)).T
    compare(gemm_chain.mlp_chain, args, ("g", "h", "y"), schedule, rtol=2e-3)


def case_routing(schedule: str) -> None:
    from evtdsl.examples import routing

    rng = np.random.default_rng(3)
    t, d, ne = 45, 64, 6
    expert_of = rng.integers(0, ne, t).astype(np.int32)
    pos, counts, tile_ptr = routing.route(expert_of, ne)
    n_pad = int(tile_ptr[-1]) * routing.BM
    args = {"x": rng.standard_normal((t, d)).astype(np.float32), "expert_of": expert_of, "pos": pos,
            "counts": counts, "tile_ptr": tile_ptr,
            "w": (rng.standard_normal((ne, d, d)) / 8).astype(np.float32),
            "xs": np.zeros((n_pad, d), np.float32), "ys": np.empty((n_pad, d), np.float32),
            "y": np.empty((t, d), np.float32)}
    compare(routing.moe_route, args, ("xs", "ys", "y"), schedule)


def case_zoo(schedule: str) -> None:
    from test_cuda_kernels import OUTPUTS, zoo, zoo_inputs

    compare(zoo, zoo_inputs(36, 80), OUTPUTS, schedule, rtol=1e-3)
    compare(zoo, zoo_inputs(20, 50, seed=1), OUTPUTS, schedule, rtol=1e-3, nt=256)  # the default CTA size


def swiglu_inputs(cfg, dtype, m: int, k: int, n: int, seed: int = 5) -> dict:
    """Arguments of the library's SwiGLU megakernel for ``cfg``: x, w_gate_up, w_down, workspaces, res, y."""
    from evtdsl.library import swiglu

    rng = np.random.default_rng(seed)
    d = dtype.np_dtype
    args = {"x": rng.standard_normal((m, k)).astype(d),
            "w_gu": (rng.standard_normal((2 * n, k)) / np.sqrt(k)).astype(d),
            "w_d": (rng.standard_normal((k, n)) / np.sqrt(n)).astype(d)}
    for w, (shape, kind) in enumerate(swiglu.workspace_shapes(cfg, m, k, n)):
        args[f"ws{w}"] = np.empty(shape, np.float32 if kind == "f32" else d)
    args["res"] = rng.standard_normal((m, k)).astype(d)
    args["y"] = np.empty((m, k), d)
    return args


def case_swiglu(schedule: str) -> None:
    from evtdsl.library import swiglu

    # the last: 16-column gate/up tiles are 2 mma blocks for 4 warps, so each block is split-K over 2 warps
    for cfg, dtype in ((swiglu.Config("fused", bm=16, bn=64), evt.bf16),
                       (swiglu.Config("two_phase", bm=16, bn=64, chunk=2), evt.f16),
                       (swiglu.Config("two_phase", bm=16, bn=16, bk=64, bc=64, chunk=4), evt.bf16)):
        mk = swiglu.megakernel_for(cfg, dtype)
        args = swiglu_inputs(cfg, dtype, m=5, k=200, n=150)
        compare(mk, args, ("y",), schedule)
        if cfg.bn == 16:
            compare(mk, args, ("y",), schedule, stream=False)
        if schedule == "static" and cfg.bn == 64 and cfg.strategy == "two_phase":
            # down(i, q, c) waits on chunk q of h, so it prefetches its slice of w_down (rows c*256 ..., columns
            # q*128 ... q*128 + 127), 64 columns per part (a part is 32 KB over a 256-row tile), each row's range
            # trimmed to 16-byte boundaries; nothing else is prefetched
            w = args["w_d"]
            lo, hi = np.lib.array_utils.byte_bounds(w)
            assert all(lo <= a < a + nb <= hi for a, nb in PREFETCHED[-1]), "prefetched outside w_down"

            def trimmed(a: int, b: int) -> int:
                return max(0, b // 16 * 16 - (a + 15) // 16 * 16)

            parts = [(0, 64), (64, 128), (128, 150)]  # q = 0: two parts; q = 1: the last 22 columns
            want = sum(trimmed(w.ctypes.data + r * w.strides[0] + 2 * c0, w.ctypes.data + r * w.strides[0] + 2 * c1)
                       for r in range(w.shape[0]) for c0, c1 in parts)
            assert sum(nb for _, nb in PREFETCHED[-1]) == want > 0, (sum(nb for _, nb in PREFETCHED[-1]), want)
    # 8 warps and 256-wide k tiles: each warp streams 16 rows x 128 columns of a weight (split-K over 2 warps),
    # two rows per load instruction; K = 600 leaves a partial last tile
    wide = swiglu.Config("two_phase", bm=16, bn=64, bk=256, bc=64, chunk=4)
    compare(swiglu.megakernel_for(wide, evt.bf16), swiglu_inputs(wide, evt.bf16, m=5, k=600, n=200), ("y",),
            schedule, nt=256)
    # K and N multiples of the tiles: the gate/up loop's weight and x tiles are in bounds at every k, so it runs
    # the in-bounds version of the streamed loop (vector loads only, x rows past M still masked)
    full = swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=64, chunk=2)
    mk = swiglu.megakernel_for(full, evt.bf16)
    assert "allfast" in codegen.generate(mk.ir, arch="sm_90a", num_threads=256, stream=True).text
    compare(mk, swiglu_inputs(full, evt.bf16, m=5, k=256, n=256), ("y",), schedule, nt=256)
    # 32- and 64-row blocks: each warp's column job serves every mma row block of the tile (the weight pieces
    # loaded and staged once, each row block with its own rows of x and h, several jobs per warp at 64 rows);
    # M = 37 / 50 leave a partial last tile, M = 20 rows past M in the first one
    tall = swiglu.Config("two_phase", bm=32, bn=32, bk=128, bc=64, chunk=4)
    text = codegen.generate(swiglu.megakernel_for(tall, evt.bf16).ir, arch="sm_90a", num_threads=256, stream=True).text
    assert "evt::StreamCursor<32, 32, 128," in text and "evt::StreamCursor<32, 64, 128," in text
    for m in (20, 37):
        compare(swiglu.megakernel_for(tall, evt.bf16), swiglu_inputs(tall, evt.bf16, m=m, k=256, n=256), ("y",),
                schedule, nt=256)
    taller = swiglu.Config("two_phase", bm=64, bn=64, bk=128, bc=16, chunk=0, bkd=256)
    text = codegen.generate(swiglu.megakernel_for(taller, evt.bf16).ir, arch="sm_90a", num_threads=256, stream=True).text
    assert "evt::StreamCursor<64, 64, 128," in text and "evt::StreamCursor<64, 16, 256," in text
    assert "float evt_frag4[4][2][4];" in text  # 4 row blocks x one column job per warp
    compare(swiglu.megakernel_for(taller, evt.bf16), swiglu_inputs(taller, evt.bf16, m=50, k=256, n=256), ("y",),
            schedule, nt=256)
    # down tiles of their own step (bkd): 16 rows of w_down x 512 columns of h per iteration, streamed (split-K
    # over 8 warps), while the gate/up tiles step by 128; chunk=0: one event for all of h, each down tile
    # reduces whole rows and writes y
    rows = swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=16, chunk=0, bkd=512)
    text = codegen.generate(swiglu.megakernel_for(rows, evt.bf16).ir, arch="sm_90a", num_threads=256, stream=True).text
    assert "evt::StreamCursor<16, 16, 512," in text and "evt::StreamCursor<16, 64, 128," in text
    compare(swiglu.megakernel_for(rows, evt.bf16), swiglu_inputs(rows, evt.bf16, m=5, k=256, n=512), ("y",),
            schedule, nt=256)
    # 8-row down tiles: one n8 column block of w_down, split-K over the 8 warps
    rows8 = swiglu.Config("two_phase", bm=16, bn=32, bk=256, bc=8, chunk=0, bkd=512)
    text = codegen.generate(swiglu.megakernel_for(rows8, evt.bf16).ir, arch="sm_90a", num_threads=256, stream=True).text
    assert "evt::StreamCursor<16, 8, 512, 256, 1, 8," in text
    compare(swiglu.megakernel_for(rows8, evt.bf16), swiglu_inputs(rows8, evt.bf16, m=5, k=256, n=512), ("y",),
            schedule, nt=256)


def case_shared_a(schedule: str) -> None:
    from test_cuda_kernels import scaled_gemv

    # the dot's A operand is computed (2 x), so it is read from shared memory (SharedA) while w streams into
    # registers; x comes through the cp.async ring. K = 192 in whole 64-wide tiles and N = 96 in whole 32-row
    # tiles; then N = 70 and K = 200 leave partial tiles (the general loads)
    text = codegen.generate(scaled_gemv.ir, arch="sm_90a", num_threads=NT, stream=True).text
    assert "evt::SharedA<" in text and "evt::stream_load_fast<" in text and "cp.async pipeline" in text
    rng = np.random.default_rng(6)
    bf = evt.bf16.np_dtype
    for m, k, n in ((5, 192, 96), (21, 200, 70)):
        args = {"x": rng.standard_normal((m, k)).astype(bf), "w": (rng.standard_normal((n, k)) / 8).astype(bf),
                "y": np.empty((m, n), np.float32)}
        compare(scaled_gemv, args, ("y",), schedule, rtol=2e-3)


def case_timeout(schedule: str) -> None:
    from test_cuda_kernels import rowsum_counts

    rng = np.random.default_rng(4)
    m, k = 50, 200
    x = rng.standard_normal((m, k)).astype(np.float32)
    counts = np.full(4, 4, np.int32)
    counts[2] = 5  # E[2] waits for one notification more than its four partials send
    args = [x, np.empty((m, 4), np.float32), np.empty(m, np.float32), counts]
    try:
        run_emulated(rowsum_counts, args, schedule, verify_counts=False)
    except DeviceTimeoutError as e:
        msg = str(e)
        assert "final(i=2)" in msg and "E[2]" in msg and "still usable" in msg, msg
        assert "all 4 task(s) that notify it ran" in msg, msg
    else:
        raise AssertionError("the broken graph did not time out")
    counts[2] = 4
    run_emulated(rowsum_counts, args, schedule)
    np.testing.assert_allclose(args[2], x.astype(np.float64).sum(1), rtol=1e-4, atol=1e-3)


def case_debug_index() -> None:
    from test_cuda_kernels import gather_rows

    idx = np.array([0, 3, 9, 1], np.int32)  # 9 is outside src's 6 rows
    args = [np.arange(24, dtype=np.float32).reshape(6, 4), idx, np.empty((4, 4), np.float32)]
    try:
        run_emulated(gather_rows, args, debug=True)
    except EvtError as e:
        assert "out of bounds" in str(e) and e.loc is not None and e.loc.file.endswith("test_cuda_kernels.py"), e
    else:
        raise AssertionError("the out-of-bounds index was not reported")


CASES = {"rowsum": case_rowsum, "gemm_chain": case_gemm_chain, "routing": case_routing, "zoo": case_zoo,
         "swiglu": case_swiglu, "timeout": case_timeout, "shared_a": case_shared_a, "trace": case_trace}


def _isolated(*argv: str, tmp_root: Path) -> None:
    env = {**os.environ, "EVTDSL_EMU_BUILD": str(tmp_root), "EVTDSL_WAIT_TIMEOUT_MS": "300",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(evt.__file__).parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"emulated case {argv} failed:\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"


@pytest.fixture(scope="module")
def emu_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("emu")


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_emulated_matches_cpu(case, schedule, emu_root):
    _isolated(case, schedule, tmp_root=emu_root)


def test_emulated_debug_index_check(emu_root):
    _isolated("debug_index", tmp_root=emu_root)


if __name__ == "__main__":
    name, *rest = sys.argv[1:]
    (case_debug_index if name == "debug_index" else CASES[name])(*rest)
