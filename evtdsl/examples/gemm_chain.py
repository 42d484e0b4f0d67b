"""GEMM -> activation -> GEMM with per-tile events: ``y = silu(x W1^T) W2^T``.

``up(i, j)`` computes tile (i, j) of ``g = x W1^T`` and notifies ``T[i, j]``; ``act(i, j)`` waits on that
one tile, writes ``h = silu(g)`` in bf16 and notifies the row-block event ``R[i]``; ``down(i, n)`` waits on
``R[i]``, i.e. on every activation tile of its row block, and no longer.
"""
import evtdsl as evt

M, K, N, P = evt.dim("M"), evt.dim("K"), evt.dim("N"), evt.dim("P")
BM, BN, BK = 16, 32, 32


@evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BN)))
def up(i, j, x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16], g: evt.Tensor[M, N, evt.f32]):
    acc = evt.zeros((BM, BN), evt.f32)
    for k in range(0, K, BK):
        a = evt.load(x, (i * BM, k), (BM, BK))
        b = evt.load(w1, (j * BN, k), (BN, BK))
        acc += evt.dot(a, b.T)
    evt.store(g, (i * BM, j * BN), acc)


@evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BN)))
def act(i, j, g: evt.Tensor[M, N, evt.f32], h: evt.Tensor[M, N, evt.bf16]):
    evt.store(h, (i * BM, j * BN), evt.silu(evt.load(g, (i * BM, j * BN), (BM, BN))).to(evt.bf16))


@evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(P, BN)))
def down(i, n, h: evt.Tensor[M, N, evt.bf16], w2: evt.Tensor[P, N, evt.bf16], y: evt.Tensor[M, P, evt.f32]):
    acc = evt.zeros((BM, BN), evt.f32)
    for k in range(0, N, BK):
        acc += evt.dot(evt.load(h, (i * BM, k), (BM, BK)), evt.load(w2, (n * BN, k), (BN, BK)).T)
    evt.store(y, (i * BM, n * BN), acc)


@evt.megakernel
def mlp_chain(x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16], w2: evt.Tensor[P, N, evt.bf16],
              g: evt.Tensor[M, N, evt.f32], h: evt.Tensor[M, N, evt.bf16], y: evt.Tensor[M, P, evt.f32]):
    T = evt.EventTensor((evt.cdiv(M, BM), evt.cdiv(N, BN)), wait_count=1)
    R = evt.EventTensor((evt.cdiv(M, BM),), wait_count=evt.cdiv(N, BN))
    up(x, w1, g, notify=T["ij->ij"])
    act(g, h, wait=T["ij->ij"], notify=R["ij->i"])
    down(h, w2, y, wait=R["in->i"])
