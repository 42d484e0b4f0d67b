"""Each tile op on the CPU backend against a float64 NumPy reference, in f32 and bf16, at a size that is not
a multiple of the tile (so the bounds masks are exercised)."""
import importlib.util
import itertools
import math

import numpy as np
import pytest

from conftest import rand
from evtdsl import dtypes as dt

TEMPLATE = '''
import evtdsl as evt
M, N = evt.dim("M"), evt.dim("N")
BM, BN = 8, 16

@evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BN)))
def body(i, j, a: evt.Tensor[M, N, evt.{din}], b: evt.Tensor[M, N, evt.{din}], y: evt.Tensor[M, N, evt.{dout}]):
    x = evt.load(a, (i * BM, j * BN), (BM, BN))
    z = evt.load(b, (i * BM, j * BN), (BM, BN))
    {stmt}

@evt.megakernel
def k(a: evt.Tensor[M, N, evt.{din}], b: evt.Tensor[M, N, evt.{din}], y: evt.Tensor[M, N, evt.{dout}]):
    body(a, b, y)
'''


def build(tmp_path, name, stmt, din="f32", dout="f32", template=TEMPLATE):
    path = tmp_path / f"{name}.py"
    path.write_text(template.format(stmt=stmt, din=din, dout=dout))
    spec = importlib.util.spec_from_file_location(f"k_{name}_{abs(hash(str(path)))}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.k


SHAPE = (13, 37)
TOL = {"f32": 2e-6, "bf16": 1.6e-2, "f16": 2e-3}

UNARY = {
    "exp": np.exp, "log": lambda v: np.log(np.abs(v) + 0.5), "sqrt": lambda v: np.sqrt(np.abs(v)),
    "rsqrt": lambda v: 1 / np.sqrt(np.abs(v) + 0.5), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "silu": lambda v: v / (1 + np.exp(-v)), "sin": np.sin, "cos": np.cos, "tanh": np.tanh,
    "erf": np.vectorize(math.erf), "abs": np.abs, "floor": np.floor,
}
ARG = {"log": "evt.abs(x) + 0.5", "sqrt": "evt.abs(x)", "rsqrt": "evt.abs(x) + 0.5"}


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(tmp_path, rng, op, dtype):
    arg = ARG.get(op, "x")
    k = build(tmp_path, op, f"evt.store(y, (i * BM, j * BN), evt.{op}({arg}))", dtype, dtype)
    d = dt.by_name(dtype)
    a, b = rand(rng, SHAPE, d), rand(rng, SHAPE, d)
    y = np.empty(SHAPE, d.np_dtype)
    k(a, b, y)
    ref = UNARY[op](a.astype(np.float64))
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=TOL[dtype], atol=TOL[dtype])


BINARY = {
    "x + z": np.add, "x - z": np.subtract, "x * z": np.multiply, "x / (evt.abs(z) + 1.0)": lambda p, q: p / (np.abs(q) + 1),
    "evt.maximum(x, z)": np.maximum, "evt.minimum(x, z)": np.minimum, "x ** 2": lambda p, q: p * p,
    "evt.where(x > z, x, 2.0 * z)": lambda p, q: np.where(p > q, p, 2 * q),
    "evt.where((x > 0.0) & (z < 0.0), 1.0, 0.0)": lambda p, q: ((p > 0) & (q < 0)).astype(float),
    "x * 3 - 1": lambda p, q: p * 3 - 1,
}


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("expr", sorted(BINARY))
def test_binary(tmp_path, rng, expr, dtype):
    k = build(tmp_path, "bin", f"evt.store(y, (i * BM, j * BN), {expr})", dtype, dtype)
    d = dt.by_name(dtype)
    a, b = rand(rng, SHAPE, d), rand(rng, SHAPE, d)
    y = np.empty(SHAPE, d.np_dtype)
    k(a, b, y)
    np.testing.assert_allclose(y.astype(np.float64), BINARY[expr](a.astype(np.float64), b.astype(np.float64)),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_bf16_rounds_after_every_op(tmp_path, rng):
    # (x * 3) in bf16 is rounded before the subtraction, as on the GPU
    k = build(tmp_path, "round", "evt.store(y, (i * BM, j * BN), x * 3.0 - z)", "bf16", "bf16")
    bf = dt.bf16.np_dtype
    a, b = rand(rng, SHAPE, dt.bf16), rand(rng, SHAPE, dt.bf16)
    y = np.empty(SHAPE, bf)
    k(a, b, y)
    t = (a.astype(np.float32) * 3).astype(bf).astype(np.float32)
    np.testing.assert_array_equal(y, (t - b.astype(np.float32)).astype(bf))


@pytest.mark.parametrize("op,axis,keep", list(itertools.product(["sum", "max", "min"], [0, 1], [False, True])))
def test_reductions(tmp_path, rng, op, axis, keep):
    if keep:
        stmt = f"evt.store(y, (i * BM, j * BN), evt.broadcast_to(evt.{op}(x, axis={axis}, keepdims=True), (BM, BN)))"
    elif axis == 1:
        stmt = f"evt.store(y, (i * BM, j * BN), evt.{op}(x, axis=1)[:, None] + evt.zeros((BM, BN), evt.f32))"
    else:
        stmt = f"evt.store(y, (i * BM, j * BN), evt.{op}(x, axis=0)[None, :] + evt.zeros((BM, BN), evt.f32))"
    k = build(tmp_path, f"red_{op}", stmt)
    a, b = rand(rng, SHAPE), rand(rng, SHAPE)
    y = np.empty(SHAPE, np.float32)
    k(a, b, y)
    fn = {"sum": np.sum, "max": np.max, "min": np.min}[op]
    pad = {"sum": 0.0, "max": 0.0, "min": 0.0}[op]  # masked elements read as 0 (the load's `other`)
    full = np.full((16, 48), pad)
    full[:13, :37] = a
    tiles = full.reshape(2, 8, 3, 16)
    red = fn(tiles, axis=1 + 2 * axis, keepdims=True)
    ref = np.broadcast_to(red, tiles.shape).reshape(16, 48)[:13, :37]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f16"])
def test_dot_and_transpose(tmp_path, rng, dtype):
    template = TEMPLATE.replace("BM, BN = 8, 16", "BM, BN = 16, 16")
    stmt = "evt.store(y, (i * BM, j * BN), evt.dot(x, z.T) + evt.dot(x.T, z))"
    k = build(tmp_path, "dot", stmt, dtype, "f32", template)
    d = dt.by_name(dtype)
    a, b = rand(rng, (16, 16), d), rand(rng, (16, 16), d)
    y = np.empty((16, 16), np.float32)
    k(a, b, y)
    p, q = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(y, p @ q.T + p.T @ q, rtol=1e-5, atol=1e-4)


def test_casts_round_and_truncate(tmp_path, rng):
    k = build(tmp_path, "cast", "evt.store(y, (i * BM, j * BN), (x * 100.0).to(evt.i32))", "f32", "i32")
    a, b = rand(rng, SHAPE), rand(rng, SHAPE)
    y = np.empty(SHAPE, np.int32)
    k(a, b, y)
    np.testing.assert_array_equal(y, np.trunc(a * np.float32(100)).astype(np.int32))
    k2 = build(tmp_path, "cast2", "evt.store(y, (i * BM, j * BN), x.to(evt.bf16))", "f32", "bf16")
    y2 = np.empty(SHAPE, dt.bf16.np_dtype)
    k2(a, b, y2)
    np.testing.assert_array_equal(y2, a.astype(dt.bf16.np_dtype))  # round to nearest even


def test_integer_division_rounds_down(tmp_path):
    stmt = "evt.store(y, (i * BM, j * BN), x // 3 * 10 + x % 3)"
    k = build(tmp_path, "idiv", stmt, "i32", "i32")
    a = np.arange(-200, 281, dtype=np.int32)[: 13 * 37].reshape(SHAPE)
    y = np.empty(SHAPE, np.int32)
    k(a, a, y)
    np.testing.assert_array_equal(y, a // 3 * 10 + a % 3)


SCALAR_TEMPLATE = '''
import evtdsl as evt
M = evt.dim("M")
B = 8

@evt.task(grid=(evt.cdiv(M, B),))
def body(i, x: evt.Tensor[M, evt.f32], idx: evt.Tensor[M, evt.i32], y: evt.InOut[M, evt.f32]):
    {stmt}

@evt.megakernel
def k(x: evt.Tensor[M, evt.f32], idx: evt.Tensor[M, evt.i32], y: evt.InOut[M, evt.f32]):
    body(x, idx, y)
'''


def test_scalar_loads_if_and_dynamic_loops(tmp_path, rng):
    stmt = """n = idx[i * B]
    acc = evt.zeros((B,), evt.f32)
    for r in range(0, n):
        acc += evt.load(x, (i * B,), (B,))
    if n % 2 == 1:
        acc = -acc
    evt.store(y, (i * B,), acc)"""
    k = build(tmp_path, "scal", stmt, template=SCALAR_TEMPLATE)
    m = 29
    x = rand(rng, (m,))
    idx = rng.integers(0, 5, m).astype(np.int32)
    y = np.empty(m, np.float32)
    k(x, idx, y)
    n = np.repeat(idx[::8], 8)[:m]
    np.testing.assert_allclose(y, np.where(n % 2 == 1, -1, 1) * n * x, rtol=1e-6)


def test_load_other_and_atomic_add(tmp_path, rng):
    stmt = """v = evt.load(x, (i * B - 3,), (B,), other=1.5)
    evt.atomic_add(y, (0,), evt.sum(v, axis=0))
    evt.atomic_add(y, (i * B,), evt.arange(B).to(evt.f32) + evt.full((B,), 0.25, evt.f32))"""
    k = build(tmp_path, "atom", stmt, template=SCALAR_TEMPLATE)
    m = 21
    x = rand(rng, (m,))
    y = rand(rng, (m,))
    y0 = y.copy()
    k(x, np.zeros(m, np.int32), y)
    padded = np.concatenate([np.full(3, 1.5), x, np.full(8, 1.5)])
    sums = [padded[i * 8:i * 8 + 8].sum() for i in range(3)]
    ref = y0 + np.concatenate([np.arange(8)] * 3)[:m] + 0.25
    ref[0] += sum(sums)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_large_int_literal_is_i64(tmp_path):
    k = build(tmp_path, "big", "evt.store(y, (i * BM, j * BN), x * 3_000_000_000)", "i64", "i64")
    a = np.arange(13 * 37, dtype=np.int64).reshape(SHAPE) - 200
    y = np.empty(SHAPE, np.int64)
    k(a, a, y)
    np.testing.assert_array_equal(y, a * 3_000_000_000)
