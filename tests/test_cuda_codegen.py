"""The CUDA backend without a GPU: every example and library megakernel compiles with NVRTC to an sm_90a
cubin; compile errors name the user's Python line; the disk cache hits and misses when it should; an
ahead-of-time build in one process lets another start without compiling; the task tables and their
scheduling protocol (a Python model of evt_sched.cuh) run every graph to completion."""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evtdsl as evt
import evtdsl.examples
from evtdsl.backends.cpu.runner import bind_sizes
from evtdsl.backends.cuda import codegen, compiler, launch
from evtdsl.backends.cuda import tables as TB
from evtdsl.backends.cuda.aot import megakernels
from evtdsl.backends.cuda.layout import SCHED_FIELDS, pack_params, param_fields, params_nbytes
from evtdsl.frontend.megakernel import Megakernel
from evtdsl.ir.passes.graph import build_graph, index_loader
from evtdsl.ir.types import TensorType

pytest.importorskip("cupy_backends.cuda.libs.nvrtc")

ELF = b"\x7fELF"
REPO = Path(evtdsl.__file__).resolve().parent.parent


def _example_kernels() -> list[tuple[str, Megakernel]]:
    out = []
    for m in pkgutil.iter_modules(evtdsl.examples.__path__):
        mod = importlib.import_module(f"evtdsl.examples.{m.name}")
        out += [(f"examples.{m.name}.{k}", mk) for k, mk in megakernels(mod).items()]
    return out


def _library_kernels() -> list[tuple[str, Megakernel]]:
    """Module-level megakernels of evtdsl.library, and those its SwiGLU factory builds for the scheduler's
    configurations."""
    try:
        lib = importlib.import_module("evtdsl.library")
    except ImportError:
        return []
    out = []
    for m in pkgutil.iter_modules(lib.__path__):
        try:
            mod = importlib.import_module(f"evtdsl.library.{m.name}")
        except ImportError:  # a module needing an optional dependency
            continue
        out += [(f"library.{m.name}.{k}", mk) for k, mk in megakernels(mod).items()]
    try:
        from evtdsl.library import scheduler, swiglu
    except ImportError:
        return out
    for cfg in scheduler.DEFAULT_CONFIGS:
        for d in (evt.bf16, evt.f16):
            out.append((f"library.swiglu.{cfg.name}.{d.name}", swiglu.megakernel_for(cfg, d)))
    return out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("EVTDSL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EVTDSL_ALWAYS_COMPILE", raising=False)
    monkeypatch.delenv("EVTDSL_DEBUG", raising=False)
    return tmp_path / "cache"


@pytest.mark.parametrize("name,mk", _example_kernels(), ids=lambda x: x if isinstance(x, str) else "")
def test_examples_compile_to_sm90a_cubins(name, mk, cache_dir):
    k = compiler.compile_program(mk.ir, arch="sm_90a")
    assert k.cubin[:4] == ELF
    assert k.path.exists() and k.path.with_suffix(".cu").exists()


@pytest.mark.parametrize("name,mk", _library_kernels(), ids=lambda x: x if isinstance(x, str) else "")
def test_library_compiles_to_sm90a_cubins(name, mk, cache_dir):
    assert compiler.compile_program(mk.ir, arch="sm_90a").cubin[:4] == ELF


def test_zoo_compiles_in_release_and_debug_builds(cache_dir):
    from test_cuda_kernels import zoo

    release = compiler.compile_program(zoo.ir, arch="sm_90a", debug=False)
    debug = compiler.compile_program(zoo.ir, arch="sm_90a", debug=True)
    assert release.cubin[:4] == debug.cubin[:4] == ELF
    assert release.key != debug.key
    assert '#line' in debug.path.with_suffix(".cu").read_text()


def test_generated_code_uses_the_fast_paths():
    """Few text checks, on what matters for speed: tensor cores and cp.async pipelines where they apply."""
    from evtdsl.examples import gemm_chain, routing

    ring = codegen.generate(gemm_chain.mlp_chain.ir, arch="sm_90a").text
    assert ring.count("evt::dot_mma<") + ring.count("evt::dot_mma_regs<") == 2
    assert re.search(r"cp\.async pipeline: 2 load\(s\), [3-6] stages", ring) and "stream_load" not in ring
    # with stream, both GEMMs (16-row blocks, register accumulators) stream their weights into registers: the
    # first `ahead` iterations' pieces loaded before each loop, into as many register buffers, and the loop
    # unrolled by as many; each phase first stages its buffer in shared memory (fragment order) and then loads
    # the pieces of `ahead` iterations later into it; x and h are read straight from global memory (h, which act
    # writes, at L2), so neither loop has a ring. Each loop has two versions: one for when every tile is in
    # bounds (vector loads only, x's columns unchecked) and the general one
    bf16 = codegen.generate(gemm_chain.mlp_chain.ir, arch="sm_90a", stream=True).text
    assert bf16.count("const bool evt_allfast") == 2
    # each warp's pieces of a 16-row tile are few (two 16-byte pieces per thread and iteration), so both loops
    # load them as far ahead as the code generator goes
    ahead = [int(a) for a in re.findall(r"(\d) iteration\(s\) ahead, in \d register buffer", bf16)]
    assert ahead == [codegen._STREAM_MAX_AHEAD] * 2
    assert re.findall(r"iteration\(s\) ahead, in (\d) register buffer", bf16) == [str(ahead[0])] * 2
    n = ahead[0]
    assert bf16.count("evt::stream_stage<") == 2 * 2 * n  # 2 loops x 2 versions x n phases
    assert bf16.count("evt::dot_mma_staged<") == 2 * 2 * n
    # the stage comes before the load that reuses its registers, in every phase
    for phase in re.findall(r"evt::stream_stage<[^;]*;(.*?)evt::dot_mma_staged<", bf16, re.S):
        assert "stream_load" in phase or "_wcur" in phase
    assert bf16.count("evt::stream_load_fast<") == 2 * (ahead[0] + n)
    assert bf16.count("evt::stream_load<") == 2 * (ahead[0] + n)
    assert bf16.count("evt::StreamCursor<") == 2 and len(re.findall(r"evt_wcur\d+\.load\(", bf16)) == 2 * n
    for coherent in ("false", "true"):  # x is read-only; h is written by act, read at L2
        assert bf16.count(f"evt::GlobalA<__nv_bfloat16, {coherent}>") == n
        assert bf16.count(f"evt::GlobalACursor<__nv_bfloat16, {coherent}>") == 1
    assert len(re.findall(r"evt_xcur\d+\.at\(", bf16)) == 2 * n
    assert "cp.async pipeline" not in bf16 and "evt::SharedA<" not in bf16
    f32 = codegen.generate(routing.moe_route.ir, arch="sm_90a").text
    assert "evt::dot_fma<" in f32 and "evt::dot_mma<" not in f32
    sm80 = codegen.generate(gemm_chain.mlp_chain.ir, arch="sm_80").text
    assert "evt::dot_mma" in sm80
    sm75 = codegen.generate(gemm_chain.mlp_chain.ir, arch="sm_75").text
    assert "evt::dot_mma" not in sm75


def test_split_k_and_prefetch_are_generated_where_they_apply():
    """Narrow register-resident accumulators split K among warps; prefetch-while-waiting is emitted only when
    asked for (EVTDSL_L2_PREFETCH, off by default), for tasks that wait and stream read-only tiles."""
    from evtdsl.library import swiglu

    narrow = swiglu.megakernel_for(swiglu.Config("two_phase", bm=16, bn=16, bk=128, bc=64, chunk=64), evt.bf16).ir
    text = codegen.generate(narrow, arch="sm_90a").text
    assert "split-K over 4 warps" in text and "evt_prefetch_" not in text
    with_prefetch = codegen.generate(narrow, arch="sm_90a", prefetch=True).text
    assert "bool evt_prefetch_down(" in with_prefetch and "evt_prefetch_gate_up" not in with_prefetch
    assert "return evt_prefetch_down(" in with_prefetch
    wide = swiglu.megakernel_for(swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32), evt.bf16).ir
    assert "split-K" not in codegen.generate(wide, arch="sm_90a").text  # 8 blocks already busy 8 warps


SM, SK, SN = evt.dim("M"), evt.dim("K"), evt.dim("N")


@evt.task(grid=(evt.cdiv(SN, 32),))
def twice(j, x: evt.Tensor[SM, SK, evt.bf16], w: evt.Tensor[SN, SK, evt.bf16], y: evt.Tensor[SM, SN, evt.f32]):
    acc = evt.zeros((16, 32), evt.f32)
    acc2 = evt.zeros((16, 32), evt.f32)
    for k in range(0, SK, 64):
        b = evt.load(w, (j * 32, k), (32, 64))
        acc += evt.dot(evt.load(x, (0, k), (16, 64)), b.T)
        acc2 += evt.dot(evt.load(x, (16, k), (16, 64)), b.T)
    evt.store(y, (0, j * 32), acc + acc2)


@evt.megakernel
def twice_mk(x: evt.Tensor[SM, SK, evt.bf16], w: evt.Tensor[SN, SK, evt.bf16], y: evt.Tensor[SM, SN, evt.f32]):
    twice(x, w, y)


@evt.task(grid=(evt.cdiv(SN, 32),))
def kept(j, x: evt.Tensor[SM, SK, evt.bf16], w: evt.Tensor[SN, SK, evt.bf16], y: evt.Tensor[SM, SN, evt.f32],
         last: evt.Tensor[SN, SK, evt.bf16]):
    acc = evt.zeros((16, 32), evt.f32)
    b = evt.zeros((32, 64), evt.bf16)
    for k in range(0, SK, 64):
        b = evt.load(w, (j * 32, k), (32, 64))
        acc += evt.dot(evt.load(x, (0, k), (16, 64)), b.T)
    evt.store(y, (0, j * 32), acc)
    evt.store(last, (j * 32, 0), b)


@evt.megakernel
def kept_mk(x: evt.Tensor[SM, SK, evt.bf16], w: evt.Tensor[SN, SK, evt.bf16], y: evt.Tensor[SM, SN, evt.f32],
            last: evt.Tensor[SN, SK, evt.bf16]):
    kept(x, w, y, last)


def test_weights_stream_into_registers_only_where_they_may(monkeypatch):
    """Streaming needs 16-row blocks, a read-only weight and a register accumulator whose fragments fit the
    per-thread budget in the streamed job layout (each warp's column jobs for every row block): bm=64 streams,
    bm=128 (8 row blocks of gate and up accumulators) keeps the ring, and so does a weight that the task also
    uses for something else."""
    from evtdsl.library import swiglu

    tall = swiglu.megakernel_for(swiglu.Config("two_phase", bm=64, bn=64), evt.bf16).ir
    text = codegen.generate(tall, arch="sm_90a", stream=True).text
    assert "stream_load" in text and "evt::frag_load<64, 64, 256, 2, 64, 2, true>" in text
    taller = swiglu.megakernel_for(swiglu.Config("two_phase", bm=128, bn=64), evt.bf16).ir
    assert "stream_load" not in codegen.generate(taller, arch="sm_90a", stream=True).text

    assert "stream_load" not in codegen.generate(twice_mk.ir, arch="sm_90a", stream=True).text
    # a tile the task reads again after the loop must exist in shared memory
    assert "stream_load" not in codegen.generate(kept_mk.ir, arch="sm_90a", stream=True).text
    # the knob is part of the cache key
    monkeypatch.setenv("EVTDSL_STREAM_WEIGHTS", "0")
    off = compiler.compile_program(tall, arch="sm_90a")
    monkeypatch.setenv("EVTDSL_STREAM_WEIGHTS", "1")
    on = compiler.compile_program(tall, arch="sm_90a")
    assert off.key != on.key


def test_one_cta_per_sm_streams_further_ahead():
    """min_blocks=1 bounds the kernel for one CTA per SM (registers up to 255): a streamed loop then keeps
    twice the pieces per thread in flight; the option is part of the cache key."""
    import re

    from evtdsl.library import swiglu

    ir = swiglu.megakernel_for(swiglu.Config("two_phase", bm=16, bn=64, bk=128), evt.bf16).ir
    two = codegen.generate(ir, arch="sm_90a", stream=True, min_blocks=2).text
    one = codegen.generate(ir, arch="sm_90a", stream=True, min_blocks=1).text
    assert "__launch_bounds__(256, 2)" in two and "__launch_bounds__(256, 1)" in one
    # the gate and up tiles (2 x 64 x 128 bf16 a loop, 8 pieces a thread): 1 iteration ahead, 2 at one CTA per SM
    assert re.findall(r"(\d+) iteration\(s\) ahead", two) == ["1", "1"]
    assert re.findall(r"(\d+) iteration\(s\) ahead", one) == ["2", "2"]
    assert compiler.compile_program(ir, arch="sm_90a", min_blocks=1).key != compiler.compile_program(
        ir, arch="sm_90a", min_blocks=2).key


def test_prefetch_knob_is_part_of_the_cache_key(cache_dir, monkeypatch):
    from evtdsl.examples import gemm_chain

    off = compiler.compile_program(gemm_chain.mlp_chain.ir, arch="sm_90a")
    monkeypatch.setenv("EVTDSL_L2_PREFETCH", "1")
    on = compiler.compile_program(gemm_chain.mlp_chain.ir, arch="sm_90a")
    assert on.key != off.key and on.cubin != off.cubin
    assert "evt_prefetch_" in on.path.with_suffix(".cu").read_text()


def test_literals_are_exact():
    from evtdsl.backends.cuda.codegen import literal

    assert literal(0.1, evt.f32) == f"{float(np.float32(0.1)).hex()}f"
    assert literal(-2.5, evt.f32) == "(-0x1.4000000000000p+1f)"
    assert literal(float("-inf"), evt.f32) == "__int_as_float(0xff800000)"
    assert literal(1.0, evt.bf16) == "evt::bf16_bits(0x3f80)"
    assert literal(-2 ** 31, evt.i32) == "(-2147483647 - 1)"
    assert literal(True, evt.bool_) == "true"


# ---------------------------------------------------------------------------------------------
# Compile errors


def _line_of(text: str) -> int:
    return next(n for n, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                if text in line and "_line_of" not in line)


L = evt.dim("L")


@evt.task(grid=(evt.cdiv(L, 32),))
def _twice(i, x: evt.Tensor[L, evt.f32], y: evt.Tensor[L, evt.f32]):
    t = evt.load(x, (i * 32,), (32,))
    evt.store(y, (i * 32,), evt.exp(t) * 2.0)  # the line the broken exp comes from


@evt.megakernel
def _twice_mk(x: evt.Tensor[L, evt.f32], y: evt.Tensor[L, evt.f32]):
    _twice(x, y)


@pytest.mark.parametrize("debug", [False, True])
def test_compile_error_names_the_users_line(debug, cache_dir, monkeypatch):
    original = codegen.KernelGen.formula

    def broken(self, name, xs, arg_dtypes, od):
        out = original(self, name, xs, arg_dtypes, od)
        return out.replace("evt::exp_", "evt::no_such_function") if name == "exp" else out

    monkeypatch.setattr(codegen.KernelGen, "formula", broken)
    with pytest.raises(compiler.CudaCompileError) as info:
        compiler.compile_program(_twice_mk.ir, arch="sm_90a", debug=debug)
    err = info.value
    assert err.loc is not None and err.loc.file == __file__
    assert err.loc.line == _line_of("# the line the broken exp comes from")
    assert "no_such_function" in str(err) and "evt.exp(t)" in str(err)


@evt.task(grid=(1,))
def _huge(i, x: evt.Tensor[L, evt.f32], y: evt.Tensor[L, evt.f32]):
    t = evt.load(x, (0,), (70000,))
    evt.store(y, (0,), t)


@evt.megakernel
def _huge_mk(x: evt.Tensor[L, evt.f32], y: evt.Tensor[L, evt.f32]):
    _huge(x, y)


def test_tiles_too_large_for_shared_memory_name_the_line(cache_dir):
    with pytest.raises(codegen.TileMemoryError, match="task `_huge` needs 280000 bytes of shared memory") as info:
        compiler.compile_program(_huge_mk.ir, arch="sm_90a")
    assert info.value.loc.line == _line_of("t = evt.load(x, (0,), (70000,))")


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_hit_does_no_compile(cache_dir, monkeypatch):
    from evtdsl.examples import rowsum

    before = compiler.nvrtc_compiles
    first = compiler.compile_program(rowsum.rowsum.ir, arch="sm_90a")
    assert compiler.nvrtc_compiles == before + 1 and "nvrtc" in first.timings
    again = compiler.compile_program(rowsum.rowsum.ir, arch="sm_90a")
    assert compiler.nvrtc_compiles == before + 1
    assert again.cubin == first.cubin and again.key == first.key and again.smem_bytes == first.smem_bytes
    compiler.compile_program(rowsum.rowsum.ir, arch="sm_90a", num_threads=128)  # other options: a miss
    assert compiler.nvrtc_compiles == before + 2
    monkeypatch.setenv("EVTDSL_ALWAYS_COMPILE", "1")
    compiler.compile_program(rowsum.rowsum.ir, arch="sm_90a")
    assert compiler.nvrtc_compiles == before + 3
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["name"] == "evt_rowsum" and meta["arch"] == "sm_90a"
    assert not list(cache_dir.rglob("*.tmp"))


def test_cache_key_follows_program_arch_and_options():
    from evtdsl.backends.cuda import cache
    from evtdsl.examples import gemm_chain, rowsum

    key = lambda p, arch="sm_90a", **o: cache.kernel_key(p, arch=arch, nvrtc_version=(13, 0),  # noqa: E731
                                                         options={"num_threads": 256, **o})
    assert key(rowsum.rowsum.ir) == key(rowsum.rowsum.ir)
    assert len({key(rowsum.rowsum.ir), key(gemm_chain.mlp_chain.ir), key(rowsum.rowsum.ir, "sm_100a"),
                key(rowsum.rowsum.ir, num_threads=128)}) == 4


def _run(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EVTDSL_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    env.pop("EVTDSL_ALWAYS_COMPILE", None)
    env.pop("EVTDSL_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_aot_build_then_load_without_compiling(tmp_path):
    cache = tmp_path / "aot-cache"
    built = _run("import sys; from evtdsl.cli import main; "
                 "sys.exit(main(['build', '--arch', 'sm_90a', 'evtdsl.examples.rowsum', 'evtdsl.examples.gemm_chain']))",
                 cache)
    assert built.returncode == 0, built.stderr
    assert built.stdout.count("compiled") == 2
    loaded = _run("from evtdsl.backends.cuda import compiler\n"
                  "from evtdsl.examples import rowsum, gemm_chain\n"
                  "for mk in (rowsum.rowsum, gemm_chain.mlp_chain):\n"
                  "    assert compiler.compile_program(mk.ir).cubin[:4] == b'\\x7fELF'\n"
                  "print(compiler.nvrtc_compiles)", cache)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "0"


# ---------------------------------------------------------------------------------------------
# Task tables and the scheduling protocol


def simulate_protocol(tables: TB.TaskTables, dynamic: bool, seed: int) -> list[int]:
    """A Python model of evt_sched.cuh on the tables (CTAs interleaved at random): the order instances run
    in. Raises if a CTA would wait forever."""
    a = {k: v.astype(np.int64) for k, v in tables.arrays.items()}
    state = tables.init_state.astype(np.int64).copy()
    ctr = state[TB.CTL_WORDS:TB.CTL_WORDS + tables.num_elements]
    n = tables.num_instances
    pending = state[TB.CTL_WORDS + tables.num_elements + n:][:n]
    ring = list(state[TB.CTL_WORDS + tables.num_elements + 2 * n:][:n])
    tail = int(state[TB.CTL_TAIL])
    head = 0
    rng = np.random.default_rng(seed)
    W = tables.workers
    qpos = [int(a["queue_ptr"][w]) for w in range(W)]
    current: list[int | None] = [None] * W
    ran: list[int] = []
    live = set(range(W))
    while live:
        w = int(rng.choice(sorted(live)))
        if current[w] is None:
            if dynamic:
                if head >= n:
                    live.discard(w)
                    continue
                if ring[head] < 0:
                    if all(current[v] is None for v in live):
                        raise AssertionError("dynamic schedule stalled")
                    continue
                current[w], head = int(ring[head]), head + 1
            else:
                if qpos[w] >= a["queue_ptr"][w + 1]:
                    live.discard(w)
                    continue
                current[w] = int(a["queue_inst"][qpos[w]])
                qpos[w] += 1
        inst = current[w]
        waits = a["wait_elem"][a["wait_ptr"][inst]:a["wait_ptr"][inst + 1]]
        if not dynamic and any(ctr[e] > 0 for e in waits):
            if all(current[v] is not None and any(ctr[e] > 0 for e in a["wait_elem"][
                    a["wait_ptr"][current[v]]:a["wait_ptr"][current[v] + 1]]) for v in live):
                raise AssertionError("static schedule deadlocked")
            continue
        assert all(ctr[e] <= 0 for e in waits), "ran before its events fired"
        ran.append(inst)
        for e in a["notify_elem"][a["notify_ptr"][inst]:a["notify_ptr"][inst + 1]]:
            ctr[e] -= 1
            if ctr[e] == 0 and dynamic:
                for v in a["waiter_inst"][a["waiter_ptr"][e]:a["waiter_ptr"][e + 1]]:
                    v = ~v if v < 0 else v  # ~inst: e is inst's only pending element
                    pending[v] -= 1
                    if pending[v] == 0:
                        ring[tail], tail = int(v), tail + 1
        current[w] = None
    return ran


def _graph(mk, args):
    program = mk.ir
    arrays = {p.name: a for p, a in zip(program.params, args) if isinstance(p.type, TensorType)}
    scalars = {p.name: a for p, a in zip(program.params, args) if not isinstance(p.type, TensorType)}
    env = bind_sizes(program, arrays, lambda a: a.shape, scalars)
    from evtdsl.backends.cpu.runner import index_tensors

    load = index_loader(program, {n: arrays[n] for n in index_tensors(program)})
    return build_graph(program, env, load), env, scalars, arrays


def _example_args():
    from evtdsl.examples import gemm_chain, routing, rowsum

    rng = np.random.default_rng(0)
    bf = evt.bf16.np_dtype
    yield rowsum.rowsum, [np.zeros((37, 300), np.float32), np.zeros((37, 5), np.float32), np.zeros(37, np.float32)]
    yield gemm_chain.mlp_chain, [np.zeros((21, 72), bf), np.zeros((100, 72), bf), np.zeros((40, 100), bf),
                                 np.zeros((21, 100), np.float32), np.zeros((21, 100), bf),
                                 np.zeros((21, 40), np.float32)]
    expert_of = rng.integers(0, 6, 45).astype(np.int32)
    pos, counts, tile_ptr = routing.route(expert_of, 6)
    n_pad = int(tile_ptr[-1]) * routing.BM
    yield routing.moe_route, [np.zeros((45, 64), np.float32), expert_of, pos, counts, tile_ptr,
                              np.zeros((6, 64, 64), np.float32), np.zeros((n_pad, 64), np.float32),
                              np.zeros((n_pad, 64), np.float32), np.zeros((45, 64), np.float32)]


@pytest.mark.parametrize("workers", [1, 3, 16])
@pytest.mark.parametrize("dynamic", [False, True])
def test_tables_run_every_example_to_completion(workers, dynamic):
    for mk, args in _example_args():
        g, *_ = _graph(mk, args)
        tables = TB.build_tables(g, workers)
        for seed in range(3):
            ran = simulate_protocol(tables, dynamic, seed)
            assert sorted(ran) == list(range(len(g.instances)))
            pos = {inst: k for k, inst in enumerate(ran)}
            for i, preds in enumerate(g.preds):
                assert all(pos[p] < pos[i] for p in preds)


def test_timeout_diagnosis_names_task_and_event():
    from test_cuda_kernels import rowsum_counts

    counts = np.full(4, 4, np.int32)
    counts[2] = 5
    args = [np.zeros((50, 200), np.float32), np.zeros((50, 4), np.float32), np.zeros(50, np.float32), counts]
    program = rowsum_counts.ir
    arrays = {p.name: a for p, a in zip(program.params, args)}
    env = bind_sizes(program, arrays, lambda a: a.shape, {})
    g = build_graph(program, env, index_loader(program, {"counts": counts}), verify_counts=False)
    tables = TB.build_tables(g, 2)
    state = tables.init_state.copy()
    # the end state of a run in which every task but final(i=2) ran
    final2 = next(i.id for i in g.instances if i.label == "final(i=2)")
    el = g.waits[final2][0]
    for inst in g.instances:
        if inst.id != final2:
            tables.done(state)[inst.id] = 1
            for e in g.notifies[inst.id]:
                tables.counters(state)[tables.element_id(e)] -= 1
    state[TB.CTL_ERROR], state[TB.CTL_INST], state[TB.CTL_ELEM] = TB.ERR_WAIT_TIMEOUT, final2, tables.element_id(el)
    err = launch.device_error(state, tables, [], "static")
    assert isinstance(err, evt.DeviceTimeoutError)
    msg = str(err)
    assert "final(i=2)" in msg and "E[2]" in msg and "1 are still outstanding" in msg and "still usable" in msg
    assert err.loc == rowsum_counts.ir.launches[1].loc


def test_params_pack_to_the_struct_size():
    from test_cuda_kernels import zoo, zoo_inputs

    fields = param_fields(zoo.ir)
    args = zoo_inputs(36, 80)
    tensors = {n: (0, a.shape, (0,) * a.ndim) for n, a in args.items() if isinstance(a, np.ndarray)}
    sizes = {"R": 36, "C": 80, "scale": 0.75, "n": 3}
    packed = pack_params(fields, tensors, sizes, {name: 0 for name, _ in SCHED_FIELDS})
    assert len(packed) == params_nbytes(fields)
    assert f"static_assert(sizeof(Params) == {len(packed)}" in codegen.generate(zoo.ir, arch="sm_90a").text
