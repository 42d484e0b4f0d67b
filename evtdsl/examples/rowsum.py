"""Split-K row sum, the Event Tensor paper's first example.

``partial(i, k)`` sums a BM x BK tile of row block ``i`` and notifies ``E[i]``; ``E[i]`` waits for all
``cdiv(K, BK)`` partials of its row block, so ``final(i)`` starts as soon as *its* rows are done.
"""
import evtdsl as evt

M, K, KT = evt.dim("M"), evt.dim("K"), evt.dim("KT")
BM, BK = 16, 64


@evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, BK)))
def partial(i, k, x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, KT, evt.f32]):
    tile = evt.load(x, (i * BM, k * BK), (BM, BK))
    evt.store(part, (i * BM, k), evt.sum(tile, axis=1, keepdims=True))


@evt.task(grid=(evt.cdiv(M, BM),))
def final(i, part: evt.Tensor[M, KT, evt.f32], y: evt.Tensor[M, evt.f32]):
    acc = evt.zeros((BM,), evt.f32)
    for k in range(KT):
        acc += evt.sum(evt.load(part, (i * BM, k), (BM, 1)), axis=1)
    evt.store(y, (i * BM,), acc)


@evt.megakernel
def rowsum(x: evt.Tensor[M, K, evt.f32], part: evt.Tensor[M, evt.cdiv(K, BK), evt.f32], y: evt.Tensor[M, evt.f32]):
    E = evt.EventTensor((evt.cdiv(M, BM),), wait_count=evt.cdiv(K, BK))
    partial(x, part, notify=E["ik->i"])
    final(part, y, wait=E["i->i"])
