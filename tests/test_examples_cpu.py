"""The three examples against NumPy references: random shapes (M = 1 and sizes that are not multiples of
the tiles), static and dynamic schedules, several worker counts and seeds, f32 and bf16."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rand, rel_err
from evtdsl import dtypes as dt
from evtdsl.examples import gemm_chain, routing, rowsum

schedules = st.sampled_from(["static", "dynamic"])
workers = st.integers(1, 9)
seeds = st.integers(0, 2**16)


def _rowsum_args(rng, m, k):
    x = rand(rng, (m, k))
    part = np.empty((m, -(-k // rowsum.BK)), np.float32)
    y = np.empty(m, np.float32)
    return x, part, y


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 70), k=st.integers(1, 300), sched=schedules, w=workers, seed=seeds)
def test_rowsum(m, k, sched, w, seed):
    rng = np.random.default_rng(seed)
    x, part, y = _rowsum_args(rng, m, k)
    rowsum.rowsum.run(x, part, y, workers=w, schedule=sched, seed=seed)
    np.testing.assert_allclose(y, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-4)


def test_rowsum_identical_across_schedules(rng):
    x, part, y = _rowsum_args(rng, 45, 257)
    outs = []
    for sched in ("static", "dynamic"):
        for w in (1, 3, 8):
            for seed in (0, 1, 2):
                rowsum.rowsum.run(x, part, y, workers=w, schedule=sched, seed=seed)
                outs.append(y.copy())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def _chain_reference(x, w1, w2):
    g = x.astype(np.float32) @ w1.astype(np.float32).T
    h = (g / (1 + np.exp(-g))).astype(dt.bf16.np_dtype).astype(np.float32)
    return h @ w2.astype(np.float32).T


@settings(max_examples=12, deadline=None)
@given(m=st.sampled_from([1, 2, 7, 16, 33]), k=st.integers(1, 100), n=st.integers(1, 100), p=st.integers(1, 70),
       sched=schedules, w=workers, seed=seeds)
def test_gemm_chain_bf16(m, k, n, p, sched, w, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (m, k), dt.bf16)
    w1 = rand(rng, (n, k), dt.bf16, scale=k**-0.5)
    w2 = rand(rng, (p, n), dt.bf16, scale=n**-0.5)
    g, h, y = np.empty((m, n), np.float32), np.empty((m, n), dt.bf16.np_dtype), np.empty((m, p), np.float32)
    gemm_chain.mlp_chain.run(x, w1, w2, g, h, y, workers=w, schedule=sched, seed=seed)
    assert rel_err(y, _chain_reference(x, w1, w2)) < 1e-2


@settings(max_examples=15, deadline=None)
@given(t=st.integers(1, 60), d=st.sampled_from([32, 40, 64]), ne=st.integers(1, 6), sched=schedules, w=workers,
       seed=seeds)
def test_routing(t, d, ne, sched, w, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (t, d))
    expert_of = rng.integers(0, ne, t).astype(np.int32)
    weights = rand(rng, (ne, d, d), scale=d**-0.5)
    pos, counts, tile_ptr = routing.route(expert_of, ne)
    n_pad = int(tile_ptr[-1]) * routing.BM
    xs = np.zeros((n_pad, d), np.float32)
    ys, y = np.empty((n_pad, d), np.float32), np.empty((t, d), np.float32)
    routing.moe_route.run(x, expert_of, pos, counts, tile_ptr, weights, xs, ys, y, workers=w, schedule=sched,
                          seed=seed)
    np.testing.assert_allclose(y, routing.reference(x, expert_of, weights), rtol=1e-4, atol=1e-4)


def test_torch_cpu_tensors_in_place():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    m, k, n, p = 9, 48, 40, 24
    x = torch.randn(m, k, generator=g).to(torch.bfloat16)
    w1 = (torch.randn(n, k, generator=g) / 7).to(torch.bfloat16)
    w2 = (torch.randn(p, n, generator=g) / 6).to(torch.bfloat16)
    gbuf, h, y = torch.empty(m, n), torch.empty(m, n, dtype=torch.bfloat16), torch.empty(m, p)
    gemm_chain.mlp_chain(x, w1, w2, gbuf, h, y)
    ref = torch.nn.functional.silu(x.float() @ w1.float().T).to(torch.bfloat16).float() @ w2.float().T
    assert (y - ref).norm() / ref.norm() < 1e-2
    assert torch.equal(h, torch.nn.functional.silu(gbuf).to(torch.bfloat16))
