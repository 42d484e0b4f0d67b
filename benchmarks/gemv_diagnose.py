"""The streamed-weight path (EVTDSL_STREAM_WEIGHTS) under the code-generation choices that decide its register
budget, against the best hand-written kernel of gemv_paths.py and torch, in one run:

- ``called``: task bodies are called (``__noinline__``), one loop version;
- ``inlined``: task bodies inlined into the persistent loop (EVTDSL_INLINE_TASKS), one loop version;
- ``inlined+versioned``: and a streamed loop whose tiles are all in bounds runs a version with vector loads only
  (codegen._STREAM_VERSIONED);
- ``... 1cta``: registers bounded for one CTA per SM (the launch option ``min_blocks=1``: up to 255 a thread,
  no spills, twice the pieces in flight per thread) instead of two;
- ``...-ahead1``: weights one iteration ahead, instead of the distance the code generator picks per loop (about
  eight 16-byte pieces per thread in flight, codegen._STREAM_TARGET_PIECES);
- ``... 4x128`` / ``3x128``: four (three) CTAs of 128 threads per SM instead of two of 256 (the launch options
  num_threads and min_blocks), so that a CTA between two tasks leaves more of the SM's warps streaming.

Workloads: the 8B gate/up GEMV ([28672, 4096] bf16, M = 1) per tile shape; the GEMV -> silu -> GEMV chain of
benchmarks/runtime.py at the 8B MLP size (M = 1 and 16, static and dynamic schedules); that chain with a barrier
between its phases against fine-grained hand-off (runtime.make_gemv_chain_split) at the 8B and 70B MLP sizes;
the 8B SwiGLU MLP (M = 1 and 16). Weights rotate among copies that exceed the L2; every time is a
CUDA-graph replay. The ring path (stream off) is measured too, as the default it would replace.

    python benchmarks/gemv_diagnose.py [--out DIR] [--parts gemv,chain,split,swiglu] [--variants a,b,...]

Writes JSON (device, copy bandwidth, every configuration) after each part, and a plot at the end.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import gemv_paths  # noqa: E402
import gemv_streaming  # noqa: E402
import runtime  # noqa: E402

import evtdsl as evt  # noqa: E402
from evtdsl import benchmarking as B  # noqa: E402
from evtdsl.backends.cuda import codegen, launch  # noqa: E402
from evtdsl.library import mlp, swiglu  # noqa: E402

TILES = [(64, 128), (128, 64), (64, 64), (64, 256), (32, 256)]
CHAINS = {"up64x128_down16x512": (64, 128, 16, 512), "up128x64_down16x512": (128, 64, 16, 512),
          "up64x128_down32x256": (64, 128, 32, 256), "up32x256_down16x512": (32, 256, 16, 512),
          "up16x512_down16x512": (16, 512, 16, 512)}
# name: (EVTDSL_STREAM_WEIGHTS, EVTDSL_INLINE_TASKS, versioned loops, iterations ahead or None for the default,
# the launch options min_blocks (registers bounded for that many CTAs per SM) and num_threads[, the pieces in
# flight per thread the code generator aims for, codegen._STREAM_TARGET_PIECES, 8 if not given[, the runtime
# headers' macros, codegen._RUNTIME_DEFINES: how waits poll]]); "4x128" is four
# CTAs of 128 threads per SM instead of two of 256: the same warps, but a CTA between tasks (tables, pipeline
# fill, notify) leaves three others streaming instead of one
VARIANTS = {"ring": ("0", "0", True, None, 2, 256), "called+versioned": ("1", "0", True, None, 2, 256),
            "inlined+versioned-ahead1": ("1", "1", True, 1, 2, 256), "inlined+versioned": ("1", "1", True, None, 2, 256),
            "inlined+versioned 1cta": ("1", "1", True, None, 1, 256),
            "ring 4x128": ("0", "0", True, None, 4, 128), "inlined+versioned 4x128": ("1", "1", True, None, 4, 128),
            "ring 3x128": ("0", "0", True, None, 3, 128), "inlined+versioned 3x128": ("1", "1", True, None, 3, 128),
            "inlined+versioned target12": ("1", "1", True, None, 2, 256, 12),
            "inlined+versioned target16": ("1", "1", True, None, 2, 256, 16),
            # how waits poll (evt_sched.cuh): acquire loads, as before the relaxed polls became the default, and
            # back-off caps (-031834: relaxed polls 3% faster than acquire ones, caps of 512 / 1024 ns no better)
            "inlined+versioned acquire": ("1", "1", True, None, 2, 256, 8, {"EVT_SPIN_RELAXED": 0}),
            "inlined+versioned acquire spin1024": ("1", "1", True, None, 2, 256, 8,
                                                   {"EVT_SPIN_RELAXED": 0, "EVT_SPIN_MAX_NS": 1024}),
            "inlined+versioned spin512": ("1", "1", True, None, 2, 256, 8, {"EVT_SPIN_MAX_NS": 512})}
# the variants each part measures (--variants overrides)
GEMV_VARIANTS = ["ring", "inlined+versioned", "inlined+versioned-ahead1", "called+versioned"]
SWIGLU = [swiglu.Config("two_phase", bm=16, bn=64, bk=64, bc=64, chunk=32),
          swiglu.Config("two_phase", bm=16, bn=64, bk=64, bc=128, chunk=32),
          swiglu.Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=64),
          swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32)]
FEW = list(GEMV_VARIANTS)  # for the chain and the MLP
# the chain with a barrier between the phases against fine-grained hand-off (runtime.make_gemv_chain_split:
# (bn_up, bk_up, bn_down, bk_down, chunk)), at the 8B and the 70B MLP sizes (K, N)
SPLIT_SIZES = {"8B": (4096, 14336), "70B": (8192, 28672)}
SPLIT_CHAINS = {"barrier up64x128_down16x512": (64, 128, 16, 512, None),
                "split up64x128_down16x512_ch56": (64, 128, 16, 512, 56),
                "split up64x128_down32x256_ch56": (64, 128, 32, 256, 56),
                "split up64x128_down16x512_ch112": (64, 128, 16, 512, 112)}
SPLIT_VARIANTS = ["inlined+versioned", "ring 4x128"]
OPTS: dict = {}  # launch options of the current variant


def use_variant(name: str) -> None:
    stream, inline, versioned, ahead, min_blocks, num_threads, *rest = VARIANTS[name]
    OPTS["min_blocks"], OPTS["num_threads"] = min_blocks, num_threads
    os.environ["EVTDSL_STREAM_WEIGHTS"] = stream
    os.environ["EVTDSL_INLINE_TASKS"] = inline
    # code-generator constants, not in the cache key: each variant has its own cache folder
    codegen._STREAM_VERSIONED, codegen._STREAM_AHEAD = versioned, ahead
    codegen._STREAM_TARGET_PIECES = rest[0] if rest else 8
    codegen._RUNTIME_DEFINES = rest[1] if len(rest) > 1 else {}
    os.environ["EVTDSL_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"evtdsl-diag-{name}")
    launch._MODULES.clear()
    swiglu._BUILT.clear()


def hand_launcher(x, n: int, k: int):
    """The best hand-written kernel of gemv_paths.py for y = x W^T, W [n, k]: (go(w), y, grid, module); go
    launches on torch's current stream, so that a CUDA-graph capture records it."""
    mod, fn, smem, per_sm, _ = gemv_paths.build(1, 2, 128, 2)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tiles = n // (8 * 2 * 4)
    grid = min(tiles, sms * per_sm)
    y = torch.empty(1, n, device="cuda", dtype=torch.float32)

    def go(w):
        stream = launch._cupy_stream(torch.cuda.current_stream().cuda_stream)
        fn((grid,), (256,), (np.uint64(w.data_ptr()), np.uint64(x.data_ptr()), np.uint64(y.data_ptr()),
                             np.int32(n), np.int32(k), np.int32(1), np.int32(tiles)), shared_mem=smem, stream=stream)

    return go, y, grid, mod


def hand_gemv(x, ws, n, k, graph: bool = False) -> tuple[float, float]:
    """(seconds, relative error) of the best hand-written kernel of gemv_paths.py, plain back-to-back launches
    or (graph) CUDA-graph replays. The error is taken first: the timed launches leave y holding the product
    with the last weight copy, not ws[0]."""
    go, y, _, mod = hand_launcher(x, n, k)
    go(ws[0])
    torch.cuda.synchronize()
    ref = x.float() @ ws[0].float().T
    err = float((y - ref).norm() / ref.norm())
    if graph:
        t = B.time_graph([lambda w=w: go(w) for w in ws])
    else:
        t = B.time_callable(lambda: [go(ws[i % len(ws)]) for i in range(30)], repeats=7) / 30
    del mod
    return t, err


def gemv_inputs(gen, k=4096, n=28672):
    """A GEMV at M = 1, by default the 8B gate/up one: (K, N, x, three weight copies beyond the L2, float32
    reference, bytes)."""
    x = torch.randn(1, k, device="cuda", generator=gen).bfloat16()
    ws = [(torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16() for _ in range(3)]
    return k, n, x, ws, x.float() @ ws[0].float().T, n * k * 2


def part_gemv(res, copy_bw, gen):
    k, n, x, ws, ref, nbytes = gemv_inputs(gen)
    out = res["gemv"] = {"N": n, "K": k, "rows": []}
    t = B.time_graph([lambda w=w: torch.matmul(x, w.T) for w in ws])
    out["torch_graph_us"] = t * 1e6
    print(f"GEMV torch graph {t * 1e6:.1f} us ({nbytes / t / copy_bw:.0%})", flush=True)
    t, err = hand_gemv(x, ws, n, k)
    out["hand_us"] = t * 1e6
    print(f"GEMV hand-written {t * 1e6:.1f} us ({nbytes / t / copy_bw:.0%}), err {err:.1e}", flush=True)
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    for variant in GEMV_VARIANTS:
        use_variant(variant)
        for bn, bk in TILES:
            mk = gemv_streaming.make_gemv(bn, bk)
            for sched in ("static", "dynamic"):
                y.fill_(float("nan"))
                mk.run(x, ws[0], y, schedule=sched, **OPTS)
                err = float((y.float() - ref).norm() / ref.norm())
                t = B.time_graph([lambda w=w: mk.run(x, w, y, sync=False, schedule=sched, **OPTS) for w in ws])
                out["rows"].append({"variant": variant, "bn": bn, "bk": bk, "schedule": sched, "us": t * 1e6,
                                    "frac": nbytes / t / copy_bw, "rel_err": err})
                print(f"GEMV {variant:24s} {bn:3d}x{bk:<3d} {sched:7s}: {t * 1e6:6.1f} us ({nbytes / t / copy_bw:4.0%}) "
                      f"err {err:.1e}", flush=True)


# --parts down: the 8B down projection as a plain GEMV (W [4096, 14336]: rows of 28 KB) per tile shape, each task
# walking whole rows, so that the shape of the weight and the length of the tasks show apart from the SwiGLU's
# split over chunks of h
DOWN_TILES = [(64, 128), (32, 256), (16, 512)]


def part_down(res, copy_bw, gen):
    k, n, x, ws, ref, nbytes = gemv_inputs(gen, k=14336, n=4096)
    out = res["down"] = {"N": n, "K": k, "rows": []}

    def row(name, t, err):
        out["rows"].append({"variant": name, "us": t * 1e6, "frac": nbytes / t / copy_bw, "rel_err": err})
        print(f"down GEMV {name:40s}: {t * 1e6:6.1f} us ({nbytes / t / copy_bw:4.0%}) err {err:.1e}", flush=True)

    row("torch graph", B.time_graph([lambda w=w: torch.matmul(x, w.T) for w in ws]), 0.0)
    # (gemv-diagnose-h200-20261204-030747 took this row's error after the timed replays, against ws[0]'s product:
    # its 1.4 is the sqrt(2) of two unrelated vectors of equal norm, not a wrong kernel)
    row("hand-written, graph", *hand_gemv(x, ws, n, k, graph=True))
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    for variant in GEMV_VARIANTS:
        use_variant(variant)
        for bn, bk in DOWN_TILES:
            mk = gemv_streaming.make_gemv(bn, bk)
            y.fill_(float("nan"))
            mk.run(x, ws[0], y, **OPTS)
            err = float((y.float() - ref).norm() / ref.norm())
            row(f"{variant} {bn}x{bk}", B.time_graph([lambda w=w: mk.run(x, w, y, sync=False, **OPTS) for w in ws]), err)


def make_gemv_tiles(bn: int, bk: int, tasks: int):
    """The GEMV of make_gemv with one task per CTA: task p computes the tiles p, p + tasks, ... of bn rows of W
    in turn, so the runtime's per-task costs (tables, waits, notifies, the persistent loop) are paid once per
    CTA; what remains is the tile loop itself, as in the hand-written kernel. M <= 16."""
    M, K, N = gemv_streaming.M, gemv_streaming.K, gemv_streaming.N

    @evt.task(grid=(tasks,))
    def gemv_p(p, x: evt.Tensor[M, K, evt.bf16], w: evt.Tensor[N, K, evt.bf16], y: evt.Tensor[M, N, evt.bf16]):
        for jt in range(p, evt.cdiv(N, bn), tasks):
            acc = evt.zeros((16, bn), evt.f32)
            for k in range(0, K, bk):
                acc += evt.dot(evt.load(x, (0, k), (16, bk)), evt.load(w, (jt * bn, k), (bn, bk)).T)
            evt.store(y, (0, jt * bn), acc)

    @evt.megakernel
    def gemv_tiles(x: evt.Tensor[M, K, evt.bf16], w: evt.Tensor[N, K, evt.bf16], y: evt.Tensor[M, N, evt.bf16]):
        gemv_p(x, w, y)

    return gemv_tiles


def part_isolate(res, copy_bw, gen):
    """Where the DSL GEMV loses against the hand-written kernel: the hand-written kernel timed both ways
    (back-to-back launches, as part_gemv, and CUDA-graph replays, as every DSL time), and the DSL GEMV with one
    task per CTA (make_gemv_tiles) against one task per tile."""
    k, n, x, ws, ref, nbytes = gemv_inputs(gen)
    out = res["isolate"] = {"N": n, "K": k, "rows": []}
    go, yf, grid, mod = hand_launcher(x, n, k)

    def row(name, t, err):
        out["rows"].append({"variant": name, "us": t * 1e6, "frac": nbytes / t / copy_bw, "rel_err": err})
        print(f"isolate {name:44s}: {t * 1e6:6.1f} us ({nbytes / t / copy_bw:4.0%}) err {err:.1e}", flush=True)

    go(ws[0])
    torch.cuda.synchronize()
    err = float((yf - ref).norm() / ref.norm())
    row("hand-written, launches", B.time_callable(lambda: [go(ws[i % 3]) for i in range(30)], repeats=7) / 30, err)
    row("hand-written, graph", B.time_graph([lambda w=w: go(w) for w in ws]), err)
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    for variant in ("ring", "inlined+versioned"):
        use_variant(variant)
        for bn, bk in ((64, 128), (128, 64), (64, 256)):
            for per_cta in (False, True):
                mk = make_gemv_tiles(bn, bk, grid) if per_cta else gemv_streaming.make_gemv(bn, bk)
                y.fill_(float("nan"))
                mk.run(x, ws[0], y, **OPTS)
                err = float((y.float() - ref).norm() / ref.norm())
                t = B.time_graph([lambda w=w: mk.run(x, w, y, sync=False, **OPTS) for w in ws])
                row(f"{variant} {bn}x{bk} {'one task per CTA' if per_cta else 'one task per tile'}", t, err)
    del mod


def part_chain(res, copy_bw, gen):
    k, n = 4096, 14336
    ws = [((torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
           (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
    nbytes = 2 * n * k * 2
    out = res["chain"] = {"N": n, "K": k, "torch_graph_us": {}, "rows": []}
    for m in (1, 16):
        x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
        h, y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16), torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
        ref = torch.nn.functional.silu(x.float() @ ws[0][0].float().T).bfloat16().float() @ ws[0][1].float().T
        t = B.time_graph([lambda w1=w1, w2=w2: torch.nn.functional.silu(x @ w1.T) @ w2.T for w1, w2 in ws])
        out["torch_graph_us"][m] = t * 1e6
        print(f"chain M={m:2d} torch graph {t * 1e6:.1f} us ({nbytes / t / copy_bw:.0%})", flush=True)
        for variant in FEW:
            use_variant(variant)
            for name in CHAINS:
                mk = runtime.make_gemv_chain(*CHAINS[name])
                for sched in ("static", "dynamic"):
                    mk.run(x, *ws[0], h, y, schedule=sched, **OPTS)
                    err = float((y.float() - ref).norm() / ref.norm())
                    t = B.time_graph([lambda w1=w1, w2=w2: mk.run(x, w1, w2, h, y, sync=False, schedule=sched,
                                                                  **OPTS) for w1, w2 in ws])
                    out["rows"].append({"M": m, "variant": variant, "config": name, "schedule": sched,
                                        "us": t * 1e6, "frac": nbytes / t / copy_bw, "rel_err": err})
                    print(f"chain M={m:2d} {variant:18s} {name:20s} {sched:7s}: {t * 1e6:6.1f} us "
                          f"({nbytes / t / copy_bw:4.0%}) err {err:.1e}", flush=True)


def part_split(res, copy_bw, gen):
    out = res["chain_split"] = {"rows": [], "torch_graph_us": {}}
    for size, (k, n) in SPLIT_SIZES.items():
        ws = [((torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
               (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
        nbytes = 2 * n * k * 2
        for m in (1, 16):
            x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
            h = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
            ref = torch.nn.functional.silu(x.float() @ ws[0][0].float().T).bfloat16().float() @ ws[0][1].float().T
            t = B.time_graph([lambda w1=w1, w2=w2: torch.nn.functional.silu(x @ w1.T) @ w2.T for w1, w2 in ws])
            out["torch_graph_us"][f"{size} M={m}"] = t * 1e6
            print(f"chain {size} M={m:2d} torch graph {t * 1e6:.1f} us ({nbytes / t / copy_bw:.0%})", flush=True)
            for variant in SPLIT_VARIANTS:
                use_variant(variant)
                for name, (bnu, bku, bnd, bkd, ch) in SPLIT_CHAINS.items():
                    if ch is None:
                        mk, extra = runtime.make_gemv_chain(bnu, bku, bnd, bkd), ()
                    else:
                        mk = runtime.make_gemv_chain_split(bnu, bku, bnd, bkd, ch)
                        extra = (runtime.split_workspace(m, k, n, bnu, ch),)
                    for sched in ("static", "dynamic"):
                        mk.run(x, *ws[0], h, *extra, y, schedule=sched, **OPTS)
                        err = float((y.float() - ref).norm() / ref.norm())
                        t = B.time_graph([lambda w1=w1, w2=w2: mk.run(x, w1, w2, h, *extra, y, sync=False,
                                                                      schedule=sched, **OPTS) for w1, w2 in ws])
                        out["rows"].append({"size": size, "K": k, "N": n, "M": m, "variant": variant, "config": name,
                                            "schedule": sched, "us": t * 1e6, "frac": nbytes / t / copy_bw,
                                            "rel_err": err})
                        print(f"chain {size} M={m:2d} {variant:24s} {name:32s} {sched:7s}: {t * 1e6:6.1f} us "
                              f"({nbytes / t / copy_bw:4.0%}) err {err:.1e}", flush=True)
        del ws
        torch.cuda.empty_cache()


def part_swiglu(res, copy_bw, gen):
    k, n = 4096, 14336
    wbytes = 3 * k * n * 2
    wsets = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
              (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
    out = res["swiglu_8b"] = {"torch_graph_us": {}, "rows": []}
    for m in (1, 16):
        x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
        r = torch.zeros_like(x)
        ref = mlp.torch_swiglu(x, *wsets[0]).float()
        t = B.time_graph([lambda w=w: mlp.torch_swiglu(x, *w) for w in wsets])
        out["torch_graph_us"][m] = t * 1e6
        print(f"SwiGLU 8B M={m:2d} torch graph {t * 1e6:.1f} us ({wbytes / t / copy_bw:.0%})", flush=True)
        for variant in FEW:
            use_variant(variant)
            for cfg in SWIGLU:
                ym = mlp.run_variant(cfg, x, *wsets[0], r, **OPTS)
                err = float((ym.float() - ref).norm() / ref.norm())
                t = B.time_graph([lambda w=w: mlp.run_variant(cfg, x, *w, r, sync=False, **OPTS) for w in wsets])
                out["rows"].append({"M": m, "variant": variant, "config": cfg.name, "us": t * 1e6,
                                    "frac": wbytes / t / copy_bw, "rel_err": err})
                print(f"SwiGLU 8B M={m:2d} {variant:18s} {cfg.name:34s}: {t * 1e6:6.1f} us "
                      f"({wbytes / t / copy_bw:4.0%}) err {err:.1e}", flush=True)


PHASE_CONFIGS = [swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32),
                 swiglu.Config("two_phase", bm=16, bn=64, bk=64, bc=64, chunk=32),
                 swiglu.Config("two_phase", bm=16, bn=128, bk=64, bc=128, chunk=16)]


PHASE_VARIANTS = ["ring", "inlined+versioned"]
# --parts sweep: the two_phase tiles (bn, bk, bc, chunk[, bkd]), streamed, at M = 1 and 16, under the pieces-in-flight
# variants. Earlier sweeps: gemv-diagnose-h200-20261204-020820 (bc 64-128 and chunks of 2048-4096 columns best; bc 256
# and bk 256, whose tiles do not stream, far behind) and -021121 (bc 64 with chunks 56-224, bc 32 / 96 / 128 at
# chunk 56: chunk 56, 3584 columns, best)
SWEEP_VARIANTS = ["inlined+versioned", "inlined+versioned target12", "inlined+versioned target16"]
SWEEP = [(64, 128, 64, 56), (64, 128, 128, 32), (32, 128, 64, 64)]


def part_sweep(res, copy_bw, gen):
    """Tile configurations of the streamed two_phase SwiGLU at the 8B shape: the whole kernel at M = 1 and 16,
    and each of its phases alone at M = 1."""
    configs = [swiglu.Config("two_phase", 16, *t[:3], chunk=t[3], bkd=t[4] if len(t) > 4 else 0) for t in SWEEP]
    part_phases(res, copy_bw, gen, configs=configs, variants=SWEEP_VARIANTS, ms=(1, 16), dynamic=False)
    res["sweep"] = res.pop("phases")


def phase_kernels(cfg: swiglu.Config):
    """Each phase of the two_phase SwiGLU alone: the gate/up tiles (x -> h), and the down tiles with their
    reduction (h -> y, no waits on gate/up). The down phase's arguments are (h, w_down, workspace..., res, y)."""
    gate_up, down, reduce2 = swiglu.two_phase_tasks(cfg, evt.bf16)
    M, K, N, bf16 = swiglu.M, swiglu.K, swiglu.N, evt.bf16
    BQ = cfg.bn * cfg.chunk

    @evt.megakernel
    def gate_up_only(x: evt.Tensor[M, K, bf16], w_gu: evt.Tensor[2 * N, K, bf16], h: evt.Tensor[M, N, bf16]):
        gate_up(x, w_gu, h)

    if reduce2 is None:  # chunk=0: the down tiles write y
        @evt.megakernel
        def down_only(h: evt.Tensor[M, N, bf16], w_d: evt.Tensor[K, N, bf16], res: evt.Tensor[M, K, bf16],
                      y: evt.Tensor[M, K, bf16]):
            down(h, w_d, res, y)

        return gate_up_only, down_only

    @evt.megakernel
    def down_only(h: evt.Tensor[M, N, bf16], w_d: evt.Tensor[K, N, bf16], ws: evt.Tensor[evt.cdiv(N, BQ), M, K, evt.f32],
                  res: evt.Tensor[M, K, bf16], y: evt.Tensor[M, K, bf16]):
        R = evt.EventTensor((evt.cdiv(M, cfg.bm), evt.cdiv(K, cfg.bc)), wait_count=evt.cdiv(N, BQ))
        down(h, w_d, ws, notify=R["iqc->ic"])
        reduce2(ws, res, y, wait=R["ic->ic"])

    return gate_up_only, down_only


def part_phases(res, copy_bw, gen, configs=None, variants=None, ms=(1,), dynamic=True):
    """The 8B SwiGLU at M = 1: the whole two_phase megakernel (static and dynamic schedules) against each of
    its phases alone, so that what the hand-off between the phases costs shows."""
    k, n = 4096, 14336
    wsets = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
              (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
    xs = {m: torch.randn(m, k, device="cuda", generator=gen).bfloat16() for m in ms}
    out = res["phases"] = {"rows": []}

    def row(variant, cfg, what, nbytes, t, err):
        out["rows"].append({"variant": variant, "config": cfg.name, "part": what, "us": t * 1e6,
                            "frac": nbytes / t / copy_bw, "rel_err": err})
        print(f"phases {variant:18s} {cfg.name:36s} {what:18s}: {t * 1e6:6.1f} us ({nbytes / t / copy_bw:4.0%}) "
              f"err {err:.1e}", flush=True)

    for variant in variants or PHASE_VARIANTS:
        use_variant(variant)
        for cfg in configs or PHASE_CONFIGS:
            for m, x in xs.items():
                r = torch.zeros_like(x)
                ref = mlp.torch_swiglu(x, *wsets[0]).float()
                for sched in ("static", "dynamic") if dynamic else ("static",):
                    ym = mlp.run_variant(cfg, x, *wsets[0], r, schedule=sched, **OPTS)
                    err = float((ym.float() - ref).norm() / ref.norm())
                    t = B.time_graph([lambda w=w: mlp.run_variant(cfg, x, *w, r, sync=False, schedule=sched, **OPTS)
                                      for w in wsets])
                    row(variant, cfg, f"whole M={m} {sched}", 3 * k * n * 2, t, err)
            m, x = 1, xs[1]
            r = torch.zeros_like(x)
            gu, dn = phase_kernels(cfg)
            h = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            gu.run(x, wsets[0][0], h, **OPTS)
            g, u = (x.float() @ wsets[0][0].float().T).split(n, dim=1)
            href = (torch.nn.functional.silu(g.bfloat16()) * u.bfloat16()).float()
            err = float((h.float() - href).norm() / href.norm())
            t = B.time_graph([lambda w=w: gu.run(x, w[0], h, sync=False, **OPTS) for w in wsets])
            row(variant, cfg, "gate/up alone", 2 * k * n * 2, t, err)
            ws = [torch.empty(-(-n // (cfg.bn * cfg.chunk)), m, k, device="cuda", dtype=torch.float32)] if cfg.chunk else []
            y = torch.empty_like(x)
            dn.run(h, wsets[0][1], *ws, r, y, **OPTS)
            yref = h.float() @ wsets[0][1].float().T
            err = float((y.float() - yref).norm() / yref.norm())
            t = B.time_graph([lambda w=w: dn.run(h, w[1], *ws, r, y, sync=False, **OPTS) for w in wsets])
            row(variant, cfg, "down alone", k * n * 2, t, err)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--parts", default="gemv,chain,split,swiglu")
    ap.add_argument("--variants", help="comma-separated names of VARIANTS, for every part")
    ap.add_argument("--sweep", help="the tiles of --parts sweep, as bn:bk:bc:chunk[:bkd][,...] (default: SWEEP)")
    args = ap.parse_args()
    if args.sweep:
        try:
            SWEEP[:] = [tuple(int(v) for v in t.split(":")) for t in args.sweep.split(",")]
        except ValueError:
            ap.error(f"--sweep: expected bn:bk:bc:chunk[:bkd][,...] of ints, got {args.sweep!r}")
        if any(len(t) not in (4, 5) for t in SWEEP):
            ap.error(f"--sweep: expected four or five ints per tile (bn:bk:bc:chunk[:bkd]), got {args.sweep!r}")
    if args.variants:
        names = args.variants.split(",")
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            ap.error(f"--variants: unknown {unknown}; expected names from {list(VARIANTS)}")
        GEMV_VARIANTS[:], FEW[:], SPLIT_VARIANTS[:], SWEEP_VARIANTS[:] = names, names, names, names
    dev = torch.cuda.get_device_name()
    copy_bw = B.copy_bandwidth()
    print(f"{dev}: copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    res = {"device": dev, "copy_TBps": copy_bw / 1e12, "torch": torch.__version__, "variants": VARIANTS}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gemv-diagnose-{time.strftime('%Y%m%d-%H%M%S')}.json"
    parts = {"gemv": part_gemv, "isolate": part_isolate, "chain": part_chain, "split": part_split,
             "swiglu": part_swiglu, "phases": part_phases, "sweep": part_sweep, "down": part_down}
    for name in args.parts.split(","):
        parts[name](res, copy_bw, gen)
        path.write_text(json.dumps(res, indent=1))
        torch.cuda.empty_cache()
    plot(res, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("gemv", "isolate", "chain", "chain_split", "swiglu_8b", "phases", "sweep") if p in res]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, p in zip(axes[0], panels):
        rows = res[p]["rows"]
        if p in ("isolate", "phases", "sweep"):
            label = (lambda r: r["variant"]) if p == "isolate" else (  # noqa: E731
                lambda r: f"{r['variant']} {r['config'].split('_ch')[0]} {r['part']}")
            ax.bar(range(len(rows)), [r["frac"] for r in rows])
            ax.set_xticks(range(len(rows)), [label(r) for r in rows], rotation=60, fontsize=6, ha="right")
            ax.set_ylim(0, 1.05)
            ax.set_title(p, fontsize="medium")
            continue
        names = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
        width = 0.8 / len(names)
        if p == "gemv":
            key = lambda r: f"{r['bn']}x{r['bk']} {r.get('schedule', 'static')}"  # noqa: E731
        elif p == "chain":
            key = lambda r: f"M{r['M']} {r['config'].replace('_', ' ')} {r['schedule']}"  # noqa: E731
        elif p == "chain_split":
            key = lambda r: f"{r['size']} M{r['M']} {r['config']} {r['schedule']}"  # noqa: E731
        else:
            key = lambda r: f"M{r['M']} {r['config'].split('_ch')[0]}"  # noqa: E731
        labels = list(dict.fromkeys(key(r) for r in rows))
        for i, v in enumerate(names):
            vals = [next((r["frac"] for r in rows if r["variant"] == v and key(r) == lb), 0) for lb in labels]
            ax.bar([j + i * width for j in range(len(labels))], vals, width, label=v)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(labels))], labels, rotation=60,
                      fontsize=6, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(p, fontsize="medium")
        if p == "gemv":
            b = res["gemv"]["N"] * res["gemv"]["K"] * 2 / (res["copy_TBps"] * 1e12)
            ax.axhline(b / (res["gemv"]["hand_us"] * 1e-6), color="r", ls=":", label="hand-written")
            ax.axhline(b / (res["gemv"]["torch_graph_us"] * 1e-6), color="k", ls="--", label="torch graph")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("fraction of copy bandwidth")
    fig.suptitle(f"streamed weights: called vs inlined tasks vs in-bounds loop versions; {res['device']}, "
                 f"copy {res['copy_TBps']:.2f} TB/s", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
