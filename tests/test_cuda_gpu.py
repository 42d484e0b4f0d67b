"""The CUDA backend on a GPU, against the CPU backend: the examples, the ops zoo and the library at sizes that
are not multiples of the tiles, both schedules, several worker counts; one binary for every size; a broken
graph that times out and leaves the GPU usable; back-to-back launches; CUDA-graph capture and replay;
CuPy arrays; argument errors; debug checks. Marked ``gpu``: skipped where torch sees no GPU."""
from __future__ import annotations

import time

import numpy as np
import pytest

import evtdsl as evt
from evtdsl.backends.cuda import compiler

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu

BF16 = evt.bf16.np_dtype


def to_gpu(a):
    if not isinstance(a, np.ndarray):
        return a
    if a.dtype == BF16:
        return torch.from_numpy(a.view(np.int16)).cuda().view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def to_host(t) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).cpu().numpy().view(BF16)
    return t.cpu().numpy()


def poison(t) -> None:
    if t.dtype.is_floating_point:
        t.fill_(float("nan"))
    elif t.dtype == torch.bool:
        t.fill_(True)
    else:
        t.fill_(torch.iinfo(t.dtype).min)


def assert_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    if got.dtype.kind in "iub":
        mismatch = np.argwhere(got != want)
        assert not len(mismatch), f"{name}: {len(mismatch)} elements differ, first at {mismatch[:4].tolist()}"
        return
    tol = 1.6e-2 if got.dtype.itemsize == 2 else rtol
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol, err_msg=name)


def run_both(mk, args: dict, outputs, schedule: str = "static", workers=None, rtol: float = 1e-4, **options):
    """Run ``mk`` on the CPU backend and on the GPU (outputs poisoned first unless InOut); compare."""
    cpu = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in args.items()}
    gpu = {k: to_gpu(v) for k, v in args.items()}
    for name in outputs:
        if not mk.ir.param(name).type.inout:
            poison(gpu[name])
    mk.run(*cpu.values(), backend="cpu", workers=3, schedule=schedule)
    run = mk.run(*gpu.values(), backend="cuda", schedule=schedule, workers=workers, **options)
    for name in outputs:
        assert_close(name, to_host(gpu[name]), cpu[name], rtol)
    return run


def rowsum_args(m: int, k: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((m, k)).astype(np.float32), "part": np.empty((m, -(-k // 64)), np.float32),
            "y": np.empty(m, np.float32)}


def gemm_chain_args(m=21, k=72, n=100, p=40, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((m, k)).astype(BF16), "w1": (rng.standard_normal((n, k)) / 8).astype(BF16),
            "w2": (rng.standard_normal((p, n)) / 10).astype(BF16), "g": np.empty((m, n), np.float32),
            "h": np.empty((m, n), BF16), "y": np.empty((m, p), np.float32)}


def routing_args(t=45, d=64, ne=6, seed=0) -> dict:
    from evtdsl.examples import routing

    rng = np.random.default_rng(seed)
    expert_of = rng.integers(0, ne, t).astype(np.int32)
    pos, counts, tile_ptr = routing.route(expert_of, ne)
    n_pad = int(tile_ptr[-1]) * routing.BM
    return {"x": rng.standard_normal((t, d)).astype(np.float32), "expert_of": expert_of, "pos": pos,
            "counts": counts, "tile_ptr": tile_ptr, "w": (rng.standard_normal((ne, d, d)) / 8).astype(np.float32),
            "xs": np.zeros((n_pad, d), np.float32), "ys": np.empty((n_pad, d), np.float32),
            "y": np.empty((t, d), np.float32)}


def _examples():
    from evtdsl.examples import gemm_chain, routing, rowsum

    return {"rowsum": (rowsum.rowsum, lambda: rowsum_args(37, 300), ("part", "y"), 1e-4),
            "gemm_chain": (gemm_chain.mlp_chain, gemm_chain_args, ("g", "h", "y"), 2e-3),
            "routing": (routing.moe_route, routing_args, ("xs", "ys", "y"), 1e-4)}


@pytest.mark.parametrize("workers", [1, 3, None])
@pytest.mark.parametrize("schedule", ["static", "dynamic"])
@pytest.mark.parametrize("example", ["rowsum", "gemm_chain", "routing"])
def test_examples_match_cpu(example, schedule, workers):
    mk, make, outputs, rtol = _examples()[example]
    run_both(mk, make(), outputs, schedule, workers, rtol)


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_zoo_matches_cpu(schedule):
    from test_cuda_kernels import OUTPUTS, zoo, zoo_inputs

    run_both(zoo, zoo_inputs(100, 250), OUTPUTS, schedule, rtol=1e-3)


@pytest.mark.parametrize("inline,min_blocks", [("0", 2), ("1", 2), ("1", 1)])
@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_streamed_dots_match_cpu(schedule, inline, min_blocks, monkeypatch):
    """Weights streamed into registers (EVTDSL_STREAM_WEIGHTS): the GEMM chain (A read from global memory) and
    scaled_gemv (A computed, read from shared memory), in whole tiles (the in-bounds loop versions) and with
    partial ones, task bodies called or inlined, registers bounded for two CTAs per SM or one (min_blocks; one
    keeps more iterations in flight)."""
    from test_cuda_kernels import scaled_gemv

    monkeypatch.setenv("EVTDSL_STREAM_WEIGHTS", "1")
    monkeypatch.setenv("EVTDSL_INLINE_TASKS", inline)
    run_both(_examples()["gemm_chain"][0], gemm_chain_args(m=7, k=256, n=128, p=64, seed=3), ("g", "h", "y"),
             schedule, rtol=2e-3, min_blocks=min_blocks)
    run_both(_examples()["gemm_chain"][0], gemm_chain_args(seed=4), ("g", "h", "y"), schedule, rtol=2e-3,
             min_blocks=min_blocks)
    rng = np.random.default_rng(7)
    for m, k, n in ((5, 192, 96), (21, 200, 70)):
        args = {"x": rng.standard_normal((m, k)).astype(BF16), "w": (rng.standard_normal((n, k)) / 8).astype(BF16),
                "y": np.empty((m, n), np.float32)}
        run_both(scaled_gemv, args, ("y",), schedule, rtol=2e-3, min_blocks=min_blocks)


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("strategy,dtype,stream,bm", [("fused", "bf16", 0, 16), ("two_phase", "f16", 0, 16),
                                                      ("two_phase", "bf16", 0, 16), ("two_phase", "bf16", 1, 16),
                                                      ("two_phase", "bf16", 1, 32)])
def test_library_swiglu_matches_cpu(strategy, dtype, stream, bm, m):
    from evtdsl.library import mlp, swiglu
    from test_cuda_emulate import swiglu_inputs

    cfg = swiglu.Config(strategy, bm=bm, chunk=2, stream=stream)
    d = getattr(evt, dtype)
    run_both(swiglu.megakernel_for(cfg, d), swiglu_inputs(cfg, d, m=m, k=200, n=330), ("y",), "dynamic",
             rtol=2e-3, **mlp.codegen_options(cfg))


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_worker_count_follows_the_kernel(schedule):
    """One program launched as kernels of different occupancy (num_threads here; min_blocks and the code
    switches do the same): the task tables, cached per shape, are sized for the kernel that runs them. (Reused
    tables for more CTAs than fit once deadlocked a static schedule.)"""
    from evtdsl.backends.cuda import launch
    from evtdsl.examples import rowsum

    args = rowsum_args(6000, 300, seed=5)  # 2250 tasks, more than the CTAs that fit
    capacities = []
    for nt in (128, 512, 128):
        run = run_both(rowsum.rowsum, args, ("y",), schedule, num_threads=nt)
        device = launch.device_info(0)
        capacity = launch._load(run.kernel, device).blocks_per_sm * device.num_sms
        assert len(run.graph.instances) > capacity
        assert run.workers == capacity, (nt, run.workers, capacity)
        capacities.append(capacity)
    assert capacities[0] != capacities[1], capacities  # the two kernels differ in occupancy


def test_symbolic_sizes_share_one_binary():
    from evtdsl.examples import rowsum

    before = compiler.nvrtc_compiles
    keys = {run_both(rowsum.rowsum, rowsum_args(m, 130, seed=m), ("y",)).kernel.key for m in (1, 7, 64, 300)}
    assert len(keys) == 1
    assert compiler.nvrtc_compiles - before <= 1


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_broken_graph_times_out_and_the_gpu_stays_usable(schedule, monkeypatch):
    from test_cuda_kernels import rowsum_counts

    monkeypatch.setenv("EVTDSL_WAIT_TIMEOUT_MS", "500")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 200)).astype(np.float32)
    counts = np.full(4, 4, np.int32)
    counts[2] = 5  # E[2] expects one notification more than its partials send
    args = [to_gpu(x), torch.empty(50, 4, device="cuda"), torch.empty(50, device="cuda"), to_gpu(counts)]
    t0 = time.perf_counter()
    with pytest.raises(evt.DeviceTimeoutError) as info:
        rowsum_counts.run(*args, backend="cuda", schedule=schedule, verify_counts=False)
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "final(i=2)" in msg and "E[2]" in msg and "still usable" in msg
    args[3] = to_gpu(np.full(4, 4, np.int32))
    rowsum_counts.run(*args, backend="cuda", schedule=schedule)
    np.testing.assert_allclose(to_host(args[2]), x.astype(np.float64).sum(1), rtol=1e-4, atol=1e-3)


def test_back_to_back_launches_without_sync():
    from evtdsl.examples import gemm_chain

    mk = gemm_chain.mlp_chain
    base = gemm_chain_args()
    gpu = {k: to_gpu(v) for k, v in base.items()}
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(base["x"].shape).astype(BF16) for _ in range(8)]
    outs = []
    for x in xs:
        gpu["x"].copy_(to_gpu(x))
        mk.run(*gpu.values(), backend="cuda", sync=False)
        outs.append(gpu["y"].clone())
    torch.cuda.synchronize()
    for x, y in zip(xs, outs):
        cpu = {**{k: v.copy() for k, v in base.items()}, "x": x}
        mk.run(*cpu.values(), backend="cpu")
        assert_close("y", to_host(y), cpu["y"], 2e-3)


def test_cuda_graph_capture_and_replay():
    from evtdsl.examples import gemm_chain

    mk = gemm_chain.mlp_chain
    base = gemm_chain_args()
    gpu = {k: to_gpu(v) for k, v in base.items()}
    mk.run(*gpu.values(), backend="cuda")  # warm-up: compile, load, tables for this shape
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mk.run(*gpu.values(), backend="cuda", sync=False)
    rng = np.random.default_rng(9)
    for _ in range(3):
        x = rng.standard_normal(base["x"].shape).astype(BF16)
        gpu["x"].copy_(to_gpu(x))
        poison(gpu["y"])
        graph.replay()
        torch.cuda.synchronize()
        cpu = {**{k: v.copy() for k, v in base.items()}, "x": x}
        mk.run(*cpu.values(), backend="cpu")
        assert_close("y", to_host(gpu["y"]), cpu["y"], 2e-3)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    from evtdsl.examples import rowsum

    args = rowsum_args(40, 150)
    dev = [cupy.asarray(a) for a in args.values()]
    rowsum.rowsum.run(*dev, backend="cuda", schedule="dynamic")
    np.testing.assert_allclose(cupy.asnumpy(dev[2]), args["x"].astype(np.float64).sum(1), rtol=1e-4, atol=1e-3)


def test_strided_inputs():
    from evtdsl.examples import rowsum

    rng = np.random.default_rng(3)
    big = rng.standard_normal((37, 600)).astype(np.float32)
    x = torch.from_numpy(big).cuda()[:, ::2]  # a column stride of 2
    part, y = torch.empty(37, 5, device="cuda"), torch.empty(37, device="cuda")
    rowsum.rowsum.run(x, part, y, backend="cuda")
    np.testing.assert_allclose(to_host(y), big[:, ::2].astype(np.float64).sum(1), rtol=1e-4, atol=1e-3)


def test_argument_errors():
    from evtdsl.examples import rowsum

    x, part, y = torch.zeros(37, 300, device="cuda"), torch.zeros(37, 5, device="cuda"), torch.zeros(37, device="cuda")
    with pytest.raises(evt.ArgumentError, match="argument x: expected dtype f32, got f16"):
        rowsum.rowsum.run(x.half(), part, y, backend="cuda")
    with pytest.raises(evt.ArgumentError, match="argument part: .*CUDA tensors, got one on cpu"):
        rowsum.rowsum.run(x, part.cpu(), y, backend="cuda")
    with pytest.raises(evt.ArgumentError, match="argument part: axis 1 must be"):
        rowsum.rowsum.run(x, torch.zeros(37, 4, device="cuda"), y, backend="cuda")
    with pytest.raises(evt.ArgumentError, match="workers=100000"):
        rowsum.rowsum.run(x, part, y, backend="cuda", workers=100000)
    with pytest.raises(evt.ArgumentError, match="unknown option"):
        rowsum.rowsum.run(x, part, y, backend="cuda", seed=3)
    with pytest.raises(evt.ArgumentError, match=r"min_blocks .* must be an int in 1..32, got 0"):
        rowsum.rowsum.run(x, part, y, backend="cuda", min_blocks=0)
    with pytest.raises(evt.ArgumentError, match=r"stream .* must be a bool or None, got 'yes'"):
        rowsum.rowsum.run(x, part, y, backend="cuda", stream="yes")
    with pytest.raises(evt.ArgumentError, match=r"trace .* must be a bool, got 1"):
        rowsum.rowsum.run(x, part, y, backend="cuda", trace=1)
    with pytest.raises(evt.ArgumentError, match="not traced; launch it with trace=True"):
        rowsum.rowsum.run(x, part, y, backend="cuda").timeline()


def test_code_switches_as_launch_options(monkeypatch):
    """stream / inline_tasks as launch options: the kernel is built with them whatever the knobs say, and
    computes the same as the CPU backend."""
    monkeypatch.setenv("EVTDSL_STREAM_WEIGHTS", "0")
    monkeypatch.setenv("EVTDSL_INLINE_TASKS", "0")
    mk = _examples()["gemm_chain"][0]
    streamed = run_both(mk, gemm_chain_args(seed=5), ("g", "h", "y"), "static", rtol=2e-3, stream=True,
                        inline_tasks=True)
    plain = run_both(mk, gemm_chain_args(seed=5), ("g", "h", "y"), "static", rtol=2e-3)
    assert "evt::stream_stage<" in streamed.kernel.path.with_suffix(".cu").read_text()
    assert "stream_stage" not in plain.kernel.path.with_suffix(".cu").read_text()


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_traced_launch_gives_every_task_in_order(schedule):
    """trace=True: each task's take, start and end on its CTA and SM, a CTA's tasks one after another, a task's
    body after the bodies of the tasks that notified its events, and the results unchanged."""
    mk, make, outputs, rtol = _examples()["gemm_chain"]
    args = make()
    run = run_both(mk, args, outputs, schedule, rtol=rtol, trace=True)
    spans = run.timeline()
    g = run.graph
    assert sorted(t.instance for t in spans) == list(range(len(g.instances)))
    assert all(0 <= t.taken <= t.start <= t.end for t in spans) and min(t.taken for t in spans) == 0
    assert all(0 <= t.worker < run.workers and 0 <= t.sm < 1024 for t in spans)
    by_cta: dict[int, list] = {}
    for t in sorted(spans, key=lambda t: t.taken):
        by_cta.setdefault(t.worker, []).append(t)
    for tasks in by_cta.values():
        assert all(b.taken >= a.end for a, b in zip(tasks, tasks[1:]))
    at = {t.instance: t for t in spans}
    for i, preds in enumerate(g.preds):
        assert all(at[i].start >= at[p].start for p in preds), g.instances[i].label
    assert {t.launch for t in spans} == {L.label for L in g.program.launches}
    import matplotlib

    matplotlib.use("Agg")
    assert run.plot_timeline() is not None


def test_debug_builds_check_indices_and_counters(monkeypatch):
    from test_cuda_kernels import gather_rows

    monkeypatch.setenv("EVTDSL_DEBUG", "1")
    src = torch.arange(24, dtype=torch.float32, device="cuda").reshape(6, 4)
    out = torch.empty(4, 4, device="cuda")
    gather_rows.run(src, to_gpu(np.array([5, 0, 2, 1], np.int32)), out, backend="cuda")
    assert torch.equal(out, src[[5, 0, 2, 1]])
    with pytest.raises(evt.EvtError, match="out of bounds") as info:
        gather_rows.run(src, to_gpu(np.array([0, 3, 9, 1], np.int32)), out, backend="cuda")
    assert info.value.loc is not None and info.value.loc.file.endswith("test_cuda_kernels.py")


def test_compile_phases_are_timed():
    from evtdsl.examples import rowsum

    run = run_both(rowsum.rowsum, rowsum_args(20, 100), ("y",))
    assert "load" in run.kernel.timings and run.kernel.timings["load"] >= 0
