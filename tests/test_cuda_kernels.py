"""Megakernels the CUDA tests share, checked here on the CPU backend:

- ``zoo``: together its tasks use every op of the op registry, with every dtype, broadcasts, views,
  reductions along every path of the CUDA templates, dots on both CUDA paths, loops (pipelined and not,
  negative steps), branches, scalar index reads and atomics;
- ``rowsum_counts``: the split-K row sum with wait counts read from a tensor, so a test can break the graph
  on purpose (the host's count check is then skipped with ``verify_counts=False``);
- ``scaled_gemv``: y = (2 x) W^T over 16-row blocks, the A operand of its streamed dot computed (so read from
  shared memory, SharedA) while W streams into registers;
- ``gather_rows``: rows picked by an index tensor, with a scalar read of the picked row (an out-of-bounds
  index makes that read fail: IndexError on the CPU, the debug builds' device-side check on the GPU).

test_cuda_codegen.py compiles them, test_cuda_emulate.py runs them emulated on the host and
test_cuda_gpu.py on the GPU, all against the CPU backend.
"""
from __future__ import annotations

import numpy as np

import evtdsl as evt
from evtdsl.examples.rowsum import BK, BM, K, M, final, partial
from evtdsl.ir import nodes as N
from evtdsl.ir import ops

R, C = evt.dim("R"), evt.dim("C")
BR, BC = 8, 32


@evt.task(grid=(evt.cdiv(R, BR), evt.cdiv(C, BC)))
def floats(i, j, a: evt.Tensor[R, C, evt.bf16], b: evt.Tensor[R, C, evt.f32], h: evt.Tensor[R, C, evt.f16],
           out: evt.Tensor[R, C, evt.f32], outb: evt.Tensor[R, C, evt.bf16], outh: evt.Tensor[R, C, evt.f16],
           flags: evt.Tensor[R, C, evt.bool_], accb: evt.InOut[R, evt.bf16], scale: evt.f32):
    x = evt.load(a, (i * BR, j * BC), (BR, BC), other=1.0)
    y = evt.load(b, (i * BR, j * BC), (BR, BC))
    z = evt.load(h, (i * BR, j * BC), (BR, BC), other=-2.0)
    pos = evt.abs(y) + 1.0
    m = evt.exp(x * 0.25) + evt.log(pos) + evt.sqrt(pos) + evt.rsqrt(pos) + evt.sigmoid(y) + evt.silu(x)
    m = m + evt.sin(y) * evt.cos(y) + evt.tanh(x) + evt.erf(y) - evt.floor(y) + (-x)
    m = m + evt.maximum(x, y) - evt.minimum(z, y) + y / pos + pos ** 1.5 + pos ** 2 + scale
    xb = evt.silu(x) * x + evt.exp(x) / (x * x + 1.0) + evt.rsqrt(evt.abs(x) + 1.0) - evt.sigmoid(x)
    zh = z * z - z / 3.0 + evt.tanh(z)
    c = ((x < y) & (y <= 0.5)) | (x > 1.0) | ~(x >= y) | (y == 0.0) & (x != z)
    evt.store(out, (i * BR, j * BC), evt.where(c, m, m * scale))
    evt.store(outb, (i * BR, j * BC), xb + (x + z).to(evt.bf16))
    evt.store(outh, (i * BR, j * BC), zh)
    evt.store(flags, (i * BR, j * BC), c)
    evt.atomic_add(accb, (i * BR,), evt.floor(evt.sum(x, axis=1)).to(evt.bf16))  # integers: any add order


@evt.task(grid=(evt.cdiv(R, BR),))
def ints(i, p: evt.Tensor[R, C, evt.i32], q: evt.Tensor[R, C, evt.i32], s8: evt.Tensor[R, C, evt.i8],
         out: evt.Tensor[R, C, evt.i32], out8: evt.Tensor[R, C, evt.i8], big: evt.Tensor[R, evt.i64],
         cnt: evt.InOut[R, evt.i32], hi: evt.Tensor[R, evt.i32], cnt64: evt.InOut[R, evt.i64]):
    u = evt.load(p, (i * BR, 0), (BR, BC))
    v = evt.load(q, (i * BR, 0), (BR, BC), other=1)
    w = u // v + u % v - evt.maximum(u, v) * evt.minimum(u, v) + v ** 3 + evt.abs(u) - (-v) + u * 7 // -3
    w = evt.where(u == v, w, w + 1) + evt.floor(u)
    evt.store(out, (i * BR, 0), w)
    t = evt.load(s8, (i * BR, 0), (BR, BC))
    evt.store(out8, (i * BR, 0), t * t + t // 3 - (t % 5))
    ok = (u != v) & (u > 0)
    evt.atomic_add(cnt, (i * BR,), evt.sum(ok, axis=1))
    evt.store(big, (i * BR,), evt.sum(u.to(evt.i64) * 100000, axis=1))
    evt.store(hi, (i * BR,), evt.max(u, axis=1) - evt.min(v, axis=1) + evt.max(ok, axis=1).to(evt.i32))
    evt.atomic_add(cnt64, (i * BR,), (evt.sum(u, axis=1).to(evt.i64) + 2000000000) * 4)


@evt.task(grid=(evt.cdiv(R, 16),))
def shapes(i, a: evt.Tensor[R, C, evt.bf16], w: evt.Tensor[32, 32, evt.bf16], idx: evt.Tensor[R, evt.i32],
           out: evt.Tensor[R, 32, evt.f32], red: evt.Tensor[R, 4, evt.f32], tot: evt.InOut[1, evt.f32],
           wide: evt.Tensor[R, 128, evt.f32], firsts: evt.Tensor[R, evt.i32]):
    x = evt.load(a, (i * 16, 0), (16, 32))
    wt = evt.load(w, (0, 0), (32, 32))
    acc = evt.dot(x, wt)
    acc += evt.dot(wt.T, x.T).T
    f = evt.dot(x.to(evt.f32), wt.to(evt.f32) * 0.5)
    r = evt.arange(16)
    col = evt.expand_dims(r, 1).to(evt.f32)
    row = evt.reshape(evt.broadcast_to(r[None, :], (2, 16)), (32,))
    m = acc + col * 0.5 + row.to(evt.f32)[None, :] - f
    evt.store(out, (i * 16, 0), m)
    k = idx[i * 16]
    evt.store(firsts, (i,), k * 2 - 1)
    evt.store(red, (i * 16, 0), evt.sum(m, axis=1)[:, None])
    evt.store(red, (i * 16, 1), evt.max(m, axis=1, keepdims=True))
    evt.store(red, (i * 16, 2), evt.full((16, 1), k.to(evt.f32), evt.f32))
    evt.store(red, (i * 16, 3), evt.zeros((16, 1), evt.f32) + evt.min(m.T, axis=0)[:, None])
    evt.atomic_add(tot, (0,), evt.sum(evt.min(m, axis=0), axis=0))
    g = evt.load(wide, (i * 16, 0), (4, 128))
    evt.store(wide, (i * 16 + 4, 0), evt.broadcast_to(evt.sum(g, axis=1, keepdims=True), (4, 128)))


@evt.task(grid=(evt.cdiv(R, BR),))
def control(i, a: evt.Tensor[R, C, evt.f32], out: evt.Tensor[R, evt.f32], n: evt.i32):
    acc = evt.zeros((BR,), evt.f32)
    for k in range(0, C, BC):
        t = evt.load(a, (i * BR, k), (BR, BC))
        if k % (2 * BC) == 0:
            acc += evt.sum(t, axis=1)
        else:
            acc -= evt.max(t, axis=1)
    for k in range(n - 1, -1, -1):
        acc = acc * 0.5 + k
    if i == 0 and n > 1:
        acc = acc + 100.0
    evt.store(out, (i * BR,), acc)


@evt.megakernel
def zoo(a: evt.Tensor[R, C, evt.bf16], b: evt.Tensor[R, C, evt.f32], h: evt.Tensor[R, C, evt.f16],
        p: evt.Tensor[R, C, evt.i32], q: evt.Tensor[R, C, evt.i32], s8: evt.Tensor[R, C, evt.i8],
        w: evt.Tensor[32, 32, evt.bf16], idx: evt.Tensor[R, evt.i32], scale: evt.f32, n: int,
        out: evt.Tensor[R, C, evt.f32], outb: evt.Tensor[R, C, evt.bf16], outh: evt.Tensor[R, C, evt.f16],
        flags: evt.Tensor[R, C, evt.bool_], iout: evt.Tensor[R, C, evt.i32], out8: evt.Tensor[R, C, evt.i8],
        big: evt.Tensor[R, evt.i64], cnt: evt.InOut[R, evt.i32], hi: evt.Tensor[R, evt.i32],
        mout: evt.Tensor[R, 32, evt.f32], red: evt.Tensor[R, 4, evt.f32], tot: evt.InOut[1, evt.f32],
        wide: evt.InOut[R, 128, evt.f32], cout: evt.Tensor[R, evt.f32], accb: evt.InOut[R, evt.bf16],
        cnt64: evt.InOut[R, evt.i64], firsts: evt.Tensor[R, evt.i32]):
    floats(a, b, h, out, outb, outh, flags, accb, scale)
    ints(p, q, s8, iout, out8, big, cnt, hi, cnt64)
    shapes(a, w, idx, mout, red, tot, wide, firsts)
    control(b, cout, n)


@evt.megakernel
def rowsum_counts(x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, evt.cdiv(K, BK), evt.f32],
                  y: evt.Tensor[M, evt.f32], counts: evt.Tensor[evt.cdiv(M, BM), evt.i32]):
    E = evt.EventTensor((evt.cdiv(M, BM),), wait_count=lambda i: counts[i])
    partial(x, part, notify=E["ik->i"])
    final(part, y, wait=E["i->i"])


NI, NS = evt.dim("NI"), evt.dim("NS")


@evt.task(grid=(NI,))
def gather(t, src: evt.Tensor[NS, 4, evt.f32], idx: evt.Tensor[NI, evt.i32], out: evt.Tensor[NI, 4, evt.f32]):
    row = idx[t]
    first = src[row, 0]
    evt.store(out, (t, 0), evt.load(src, (row, 0), (1, 4)) + (first - first))


@evt.megakernel
def gather_rows(src: evt.Tensor[NS, 4, evt.f32], idx: evt.Tensor[NI, evt.i32],
                out: evt.Tensor[NI, 4, evt.f32]):
    gather(src, idx, out)


GM, GK, GN = evt.dim("GM"), evt.dim("GK"), evt.dim("GN")
GBN, GBK = 32, 64


@evt.task(grid=(evt.cdiv(GM, 16), evt.cdiv(GN, GBN)))
def scaled(i, j, x: evt.Tensor[GM, GK, evt.bf16], w: evt.Tensor[GN, GK, evt.bf16], y: evt.Tensor[GM, GN, evt.f32]):
    acc = evt.zeros((16, GBN), evt.f32)
    for k in range(0, GK, GBK):
        xt = evt.load(x, (i * 16, k), (16, GBK))
        acc += evt.dot(xt * 2.0, evt.load(w, (j * GBN, k), (GBN, GBK)).T)
    evt.store(y, (i * 16, j * GBN), acc)


@evt.megakernel
def scaled_gemv(x: evt.Tensor[GM, GK, evt.bf16], w: evt.Tensor[GN, GK, evt.bf16], y: evt.Tensor[GM, GN, evt.f32]):
    scaled(x, w, y)


OUTPUTS = ("out", "outb", "outh", "flags", "iout", "out8", "big", "cnt", "hi", "mout", "red", "tot", "wide",
           "cout", "accb", "cnt64", "firsts")


def zoo_inputs(rows: int, cols: int, seed: int = 0) -> dict[str, np.ndarray | float | int]:
    """Arguments of ``zoo`` by name; ``rows`` a multiple of 16 plus 4 (its `wide` writes reach row i*16+8)."""
    rng = np.random.default_rng(seed)
    bf, f16 = evt.bf16.np_dtype, evt.f16.np_dtype
    args: dict[str, np.ndarray | float | int] = {
        "a": rng.uniform(-2, 2, (rows, cols)).astype(bf),
        "b": rng.uniform(-2, 2, (rows, cols)).astype(np.float32),
        "h": rng.uniform(-2, 2, (rows, cols)).astype(f16),
        "p": rng.integers(-50, 50, (rows, cols)).astype(np.int32),
        "q": rng.integers(-4, 5, (rows, cols)).astype(np.int32),
        "s8": rng.integers(-128, 128, (rows, cols)).astype(np.int8),
        "w": (rng.standard_normal((32, 32)) / 4).astype(bf),
        "idx": rng.integers(0, 100, rows).astype(np.int32),
        "scale": 0.75, "n": 3,
        "out": np.empty((rows, cols), np.float32), "outb": np.empty((rows, cols), bf),
        "outh": np.empty((rows, cols), f16), "flags": np.empty((rows, cols), np.bool_),
        "iout": np.empty((rows, cols), np.int32), "out8": np.empty((rows, cols), np.int8),
        "big": np.empty(rows, np.int64), "cnt": rng.integers(0, 3, rows).astype(np.int32),
        "hi": np.empty(rows, np.int32), "mout": np.empty((rows, 32), np.float32),
        "red": np.empty((rows, 4), np.float32), "tot": np.zeros(1, np.float32),
        "wide": rng.standard_normal((rows, 128)).astype(np.float32), "cout": np.empty(rows, np.float32),
        "accb": rng.integers(-4, 4, rows).astype(bf), "cnt64": rng.integers(-5, 5, rows).astype(np.int64),
        "firsts": np.empty(rows, np.int32),
    }
    return args


def used_ops(program: N.Program) -> set[str]:
    found: set[str] = set()

    def expr(e):
        if isinstance(e, N.Op):
            found.add(e.name)
            for x in e.args:
                expr(x)

    def block(stmts):
        for s in stmts:
            if isinstance(s, (N.Assign, N.Eval)):
                expr(s.value)
            elif isinstance(s, N.For):
                for x in (s.start, s.stop, s.step):
                    expr(x)
                block(s.body)
            else:
                expr(s.cond)
                block(s.then)
                block(s.orelse)

    for t in program.tasks:
        block(t.body)
    return found


def test_zoo_uses_every_op():
    assert set(ops.REGISTRY) - used_ops(zoo.ir) == set()


def test_zoo_runs_on_cpu():
    args = zoo_inputs(36, 80)
    cnt0 = args["cnt"].copy()
    zoo.run(*args.values(), backend="cpu", workers=3)
    p, q = args["p"], args["q"]
    ok = (p != q) & (p > 0)
    rows = (36 // BR) * BR  # ints covers rows in whole tiles only where the tensor has them
    assert np.array_equal(args["cnt"][:rows], cnt0[:rows] + ok[:rows, :BC].sum(1))
    assert np.isfinite(args["out"]).all() and np.isfinite(args["mout"]).all()


def test_rowsum_counts_and_gather_run_on_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 200)).astype(np.float32)
    y = np.empty(50, np.float32)
    rowsum_counts.run(x, np.empty((50, 4), np.float32), y, np.full(4, 4, np.int32), backend="cpu")
    np.testing.assert_allclose(y, x.sum(1), rtol=1e-4, atol=1e-4)
    src, out = np.arange(24, dtype=np.float32).reshape(6, 4), np.empty((3, 4), np.float32)
    gather_rows.run(src, np.array([5, 0, 2], np.int32), out, backend="cpu")
    assert np.array_equal(out, src[[5, 0, 2]])


def test_scaled_gemv_runs_on_cpu():
    rng = np.random.default_rng(1)
    bf = evt.bf16.np_dtype
    x, w = rng.standard_normal((5, 192)).astype(bf), rng.standard_normal((70, 192)).astype(bf)
    y = np.empty((5, 70), np.float32)
    scaled_gemv.run(x, w, y, backend="cpu")
    ref = (2 * x.astype(np.float64)).astype(bf).astype(np.float64) @ w.astype(np.float64).T
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-3)
