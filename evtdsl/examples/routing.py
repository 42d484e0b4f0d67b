"""Data-dependent routing, MoE style: each token goes to one expert through an index tensor.

``scatter(t)`` copies token ``t`` to its slot ``pos[t]`` in an expert-sorted buffer and notifies
``E[expert_of[t]]`` (a notify chosen by data); ``E[e]`` waits for ``counts[e]`` notifications (a count read
from a tensor). The tasks of expert ``e`` are its row tiles ``range(tile_ptr[e], tile_ptr[e + 1])`` (a task
range read from a prefix-sum tensor); each waits only on its own expert. ``gather(t)`` waits on the one
tile that holds its token. Each expert's segment is padded to whole tiles, so no tile mixes experts.
"""
import numpy as np

import evtdsl as evt

T, D, NE, NP, NT1 = evt.dim("T"), evt.dim("D"), evt.dim("NE"), evt.dim("NP"), evt.dim("NT1")
BM, BD = 8, 32


@evt.task(grid=(T,))
def scatter(t, x: evt.Tensor[T, D, evt.f32], pos: evt.Tensor[T, evt.i32], xs: evt.InOut[NP, D, evt.f32]):
    row = pos[t]
    for d in range(0, D, BD):
        evt.store(xs, (row, d), evt.load(x, (t, d), (1, BD)))


@evt.task(grid=(NE, evt.cdiv(NP, BM)))
def expert(e, r, xs: evt.InOut[NP, D, evt.f32], w: evt.Tensor[NE, D, D, evt.f32], ys: evt.Tensor[NP, D, evt.f32]):
    for n in range(0, D, BD):
        acc = evt.zeros((BM, BD), evt.f32)
        for k in range(0, D, BD):
            a = evt.load(xs, (r * BM, k), (BM, BD))
            b = evt.load(w, (e, n, k), (BD, BD))
            acc += evt.dot(a, b.T)
        evt.store(ys, (r * BM, n), evt.maximum(acc, 0.0))


@evt.task(grid=(T,))
def gather(t, ys: evt.Tensor[NP, D, evt.f32], pos: evt.Tensor[T, evt.i32], y: evt.Tensor[T, D, evt.f32]):
    row = pos[t]
    for d in range(0, D, BD):
        evt.store(y, (t, d), evt.load(ys, (row, d), (1, BD)))


@evt.megakernel
def moe_route(x: evt.Tensor[T, D, evt.f32], expert_of: evt.Tensor[T, evt.i32], pos: evt.Tensor[T, evt.i32],
              counts: evt.Tensor[NE, evt.i32], tile_ptr: evt.Tensor[NT1, evt.i32],
              w: evt.Tensor[NE, D, D, evt.f32], xs: evt.InOut[NP, D, evt.f32], ys: evt.Tensor[NP, D, evt.f32],
              y: evt.Tensor[T, D, evt.f32]):
    E = evt.EventTensor((NE,), wait_count=lambda e: counts[e])
    F = evt.EventTensor((tile_ptr[NE],), wait_count=1)
    scatter(x, pos, xs, notify=E[lambda t: (expert_of[t],)])
    expert(xs, w, ys, grid=(NE, lambda e: (tile_ptr[e], tile_ptr[e + 1])), wait=E["er->e"], notify=F["er->r"])
    gather(ys, pos, y, wait=F[lambda t: (pos[t] // BM,)])


def route(expert_of: np.ndarray, num_experts: int, block: int = BM):
    """Host-side routing tables: each token's padded slot, tokens per expert, and the tile prefix sum."""
    counts = np.bincount(expert_of, minlength=num_experts).astype(np.int32)
    tiles = -(-counts // block)
    tile_ptr = np.concatenate([[0], np.cumsum(tiles)]).astype(np.int32)
    pos = np.empty(len(expert_of), dtype=np.int32)
    fill = tile_ptr[:-1] * block
    for t, e in enumerate(expert_of):
        pos[t] = fill[e]
        fill[e] += 1
    return pos, counts, tile_ptr


def reference(x: np.ndarray, expert_of: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.maximum(np.einsum("td,tnd->tn", x.astype(np.float64), w[expert_of].astype(np.float64)), 0.0)
