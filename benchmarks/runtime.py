"""The persistent runtime on the GPU: per-task overhead, producer -> consumer hand-off latency across SMs,
launch overhead against a plain kernel, and a memory-bound GEMV -> silu -> GEMV chain against the copy
bandwidth measured in the same run.

    python benchmarks/runtime.py [--out DIR]
"""
import argparse
import json
import time
from pathlib import Path

import torch

import evtdsl as evt
from evtdsl import benchmarking as B

T, M, K, N, Q = evt.dim("T"), evt.dim("M"), evt.dim("K"), evt.dim("N"), evt.dim("Q")


@evt.task(grid=(T,))
def tiny(t, y: evt.Tensor[T, evt.f32]):
    evt.store(y, (t,), evt.full((1,), 1.0, evt.f32))


@evt.megakernel
def independent(y: evt.Tensor[T, evt.f32]):
    """T tasks that wait on nothing: the cost of taking, running and retiring a trivial task."""
    tiny(y)


@evt.task(grid=(T,))
def link(t, y: evt.Tensor[T, evt.f32]):
    evt.store(y, (t,), evt.full((1,), 1.0, evt.f32))


@evt.megakernel
def chain(y: evt.Tensor[T, evt.f32]):
    """A serial chain: task t waits on E[t], which task t-1 notifies (E[0] starts fired). Round-robin
    static queues put neighbours on different SMs, so each hop is one cross-SM notify -> wait hand-off."""
    E = evt.EventTensor((T + 1,), wait_count=lambda e: evt.min(e, 1))
    link(y, wait=E["t->t"], notify=E[lambda t: (t + 1,)])


BM = 16


def make_gemv_chain(bn_up: int, bk_up: int, bn_down: int, bk_down: int) -> evt.Megakernel:
    """y = silu(x W1^T) W2^T with up tiles of ``bn_up`` columns and down tiles of ``bn_down`` columns; the
    down tiles of row block i wait on all up tiles of row block i."""

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, bn_up)))
    def up(i, j, x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16], h: evt.Tensor[M, N, evt.bf16]):
        acc = evt.zeros((BM, bn_up), evt.f32)
        for k in range(0, K, bk_up):
            acc += evt.dot(evt.load(x, (i * BM, k), (BM, bk_up)), evt.load(w1, (j * bn_up, k), (bn_up, bk_up)).T)
        evt.store(h, (i * BM, j * bn_up), evt.silu(acc))

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, bn_down)))
    def down(i, c, h: evt.Tensor[M, N, evt.bf16], w2: evt.Tensor[K, N, evt.bf16], y: evt.Tensor[M, K, evt.bf16]):
        acc = evt.zeros((BM, bn_down), evt.f32)
        for n in range(0, N, bk_down):
            acc += evt.dot(evt.load(h, (i * BM, n), (BM, bk_down)), evt.load(w2, (c * bn_down, n), (bn_down, bk_down)).T)
        evt.store(y, (i * BM, c * bn_down), acc)

    @evt.megakernel
    def gemv_chain(x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16], w2: evt.Tensor[K, N, evt.bf16],
                   h: evt.Tensor[M, N, evt.bf16], y: evt.Tensor[M, K, evt.bf16]):
        H = evt.EventTensor((evt.cdiv(M, BM),), wait_count=evt.cdiv(N, bn_up))
        up(x, w1, h, notify=H["ij->i"])
        down(h, w2, y, wait=H["ic->i"])

    return gemv_chain


def make_gemv_chain_split(bn_up: int, bk_up: int, bn_down: int, bk_down: int, chunk: int) -> evt.Megakernel:
    """The same chain with fine-grained hand-off: the up tiles of row block i notify the event of their chunk
    of ``chunk`` tiles (``bn_up * chunk`` columns of h); a down task (i, c, q) waits on chunk q alone and writes
    a float32 partial of its y tile, and a reduce task sums the partials of a tile. Down tasks start while later
    up tiles still run, so no SM idles at a barrier between the phases; the partials move
    ``2 * 4 * M * K * cdiv(N, bn_up * chunk)`` bytes more (about 0.1% at M = 1)."""
    BQ = bn_up * chunk
    if BQ % bk_down:
        raise ValueError(f"bk_down: expected a divisor of bn_up * chunk = {BQ} (a down task reads its chunk of h "
                         f"alone), got {bk_down}")

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, bn_up)))
    def up(i, j, x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16], h: evt.Tensor[M, N, evt.bf16]):
        acc = evt.zeros((BM, bn_up), evt.f32)
        for k in range(0, K, bk_up):
            acc += evt.dot(evt.load(x, (i * BM, k), (BM, bk_up)), evt.load(w1, (j * bn_up, k), (bn_up, bk_up)).T)
        evt.store(h, (i * BM, j * bn_up), evt.silu(acc))

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, bn_down), evt.cdiv(N, BQ)))
    def down(i, c, q, h: evt.Tensor[M, N, evt.bf16], w2: evt.Tensor[K, N, evt.bf16], ws: evt.Tensor[Q, M, K, evt.f32]):
        acc = evt.zeros((BM, bn_down), evt.f32)
        for n in range(q * BQ, evt.min(N, q * BQ + BQ), bk_down):
            acc += evt.dot(evt.load(h, (i * BM, n), (BM, bk_down)), evt.load(w2, (c * bn_down, n), (bn_down, bk_down)).T)
        evt.store(ws, (q, i * BM, c * bn_down), acc)

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, bn_down)))
    def reduce(i, c, ws: evt.Tensor[Q, M, K, evt.f32], y: evt.Tensor[M, K, evt.bf16]):
        acc = evt.zeros((BM, bn_down), evt.f32)
        for q in range(Q):
            acc += evt.load(ws, (q, i * BM, c * bn_down), (BM, bn_down))
        evt.store(y, (i * BM, c * bn_down), acc)

    @evt.megakernel
    def gemv_chain_split(x: evt.Tensor[M, K, evt.bf16], w1: evt.Tensor[N, K, evt.bf16],
                         w2: evt.Tensor[K, N, evt.bf16], h: evt.Tensor[M, N, evt.bf16],
                         ws: evt.Tensor[evt.cdiv(N, BQ), M, K, evt.f32], y: evt.Tensor[M, K, evt.bf16]):
        H = evt.EventTensor((evt.cdiv(M, BM), evt.cdiv(N, BQ)),
                            wait_count=lambda i, q: evt.min(chunk, evt.cdiv(N, bn_up) - q * chunk))
        R = evt.EventTensor((evt.cdiv(M, BM), evt.cdiv(K, bn_down)), wait_count=evt.cdiv(N, BQ))
        up(x, w1, h, notify=H[lambda i, j: (i, j // chunk)])
        down(h, w2, ws, wait=H["icq->iq"], notify=R["icq->ic"])
        reduce(ws, y, wait=R["ic->ic"])

    return gemv_chain_split


def split_workspace(m: int, k: int, n: int, bn_up: int, chunk: int, device="cuda") -> torch.Tensor:
    """The float32 partials of make_gemv_chain_split."""
    return torch.empty(-(-n // (bn_up * chunk)), m, k, device=device, dtype=torch.float32)


# name: (bn_up, bk_up, bn_down, bk_down, chunk); chunk None is make_gemv_chain (a barrier between the phases),
# an int make_gemv_chain_split
CHAIN_CONFIGS = {"up64x128_down16x512": (64, 128, 16, 512, None), "up32x128_down16x256": (32, 128, 16, 256, None),
                 "up64x256_down16x512": (64, 256, 16, 512, None),
                 "split up64x128_down16x512 ch56": (64, 128, 16, 512, 56),
                 "split up64x128_down32x256 ch56": (64, 128, 32, 256, 56),
                 "split up64x128_down32x256 ch28": (64, 128, 32, 256, 28),
                 "split up64x128_down16x512 ch112": (64, 128, 16, 512, 112)}
# the MLP sizes (K, N) of Llama-3.1-8B and Llama-3.1-70B
CHAIN_SIZES = {"8B": (4096, 14336), "70B": (8192, 28672)}
# code generation: (EVTDSL_STREAM_WEIGHTS, EVTDSL_INLINE_TASKS, min_blocks); "ring" is the default. min_blocks
# is the launch option bounding registers for that many CTAs per SM: 2 (128 registers a thread, where the
# streamed loops spill) or 1 (up to 255 registers, half the warps, twice the pieces in flight per thread)
CODEGEN = {"ring": ("0", "0", 2), "streamed+inlined": ("1", "1", 2), "streamed+inlined 1 CTA/SM": ("1", "1", 1)}


def make_chain(cfg: tuple) -> evt.Megakernel:
    *tiles, chunk = cfg
    return make_gemv_chain(*tiles) if chunk is None else make_gemv_chain_split(*tiles, chunk)


def chain_args(cfg: tuple, x, w1, w2, h, y) -> tuple:
    """The arguments of make_chain(cfg): the split chain takes its float32 partials before y."""
    if cfg[-1] is None:
        return x, w1, w2, h, y
    return x, w1, w2, h, split_workspace(x.shape[0], x.shape[1], w1.shape[0], cfg[0], cfg[-1], x.device), y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy_bw = B.copy_bandwidth()
    print(f"{dev}: {sms} SMs, copy {copy_bw / 1e12:.2f} TB/s")
    res = {"device": dev, "sms": sms, "copy_TBps": copy_bw / 1e12, "torch": torch.__version__}

    def run(mk, *a, **kw):
        return lambda: mk.run(*a, backend="cuda", sync=False, **kw)

    # per-task overhead: many trivial independent tasks
    res["per_task"] = []
    for schedule in ("static", "dynamic"):
        for n in (sms * 8, sms * 64):
            y = torch.empty(n, device="cuda")
            independent.run(y, backend="cuda", schedule=schedule)
            t = B.time_graph([run(independent, y, schedule=schedule)])
            ctas = independent.run(y, backend="cuda", schedule=schedule).workers
            res["per_task"].append({"schedule": schedule, "tasks": n, "us": t * 1e6, "ctas": ctas,
                                    "ns_per_task_per_cta": t * 1e9 * ctas / n})
            print(f"per-task  {schedule:7s} {n:6d} tasks on {ctas} CTAs: {t * 1e6:8.1f} us, "
                  f"{t * 1e9 * ctas / n:6.0f} ns per task per CTA")
    # hand-off latency: a serial chain across SMs
    res["handoff"] = []
    for schedule in ("static", "dynamic"):
        n = 2048
        y = torch.empty(n, device="cuda")
        chain.run(y, backend="cuda", schedule=schedule)
        t = B.time_graph([run(chain, y, schedule=schedule)], repeats=10)
        res["handoff"].append({"schedule": schedule, "hops": n, "us": t * 1e6, "ns_per_hop": t * 1e9 / n})
        print(f"hand-off  {schedule:7s} {n} hops: {t * 1e9 / n:6.0f} ns per hop (task + notify -> wait on another SM)")
    # launch overhead: one trivial task against a plain kernel writing the same element
    y1 = torch.empty(1, device="cuda")
    independent.run(y1, backend="cuda")
    mk_graph = B.time_graph([run(independent, y1)], repeats=50)
    plain_graph = B.time_graph([lambda: y1.fill_(1.0)], repeats=50)
    mk_eager = B.time_callable(run(independent, y1), repeats=50)
    plain_eager = B.time_callable(lambda: y1.fill_(1.0), repeats=50)
    res["launch"] = {"megakernel_graph_us": mk_graph * 1e6, "plain_kernel_graph_us": plain_graph * 1e6,
                     "megakernel_eager_us": mk_eager * 1e6, "plain_kernel_eager_us": plain_eager * 1e6}
    print(f"launch    megakernel {mk_graph * 1e6:.1f} us vs plain kernel {plain_graph * 1e6:.1f} us (graph replay); "
          f"eager {mk_eager * 1e6:.1f} vs {plain_eager * 1e6:.1f} us")
    # memory-bound chain at decode sizes
    res["gemv_chain"] = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    chains = {name: make_chain(cfg) for name, cfg in CHAIN_CONFIGS.items()}
    for size, (k, n) in CHAIN_SIZES.items():
        ws = [((torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
               (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
        nbytes = 2 * n * k * 2
        for m in (1, 4, 16):
            x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
            h, y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16), torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
            ref = torch.nn.functional.silu(x.float() @ ws[0][0].float().T).bfloat16().float() @ ws[0][1].float().T
            t_torch = B.time_graph([lambda w1=w1, w2=w2: torch.nn.functional.silu(x @ w1.T) @ w2.T for w1, w2 in ws])
            print(f"gemv chain {size} M={m:2d} torch graph {t_torch * 1e6:7.1f} us, {nbytes / t_torch / copy_bw:4.0%} "
                  "of copy", flush=True)
            for codegen, (stream, inline, min_blocks) in CODEGEN.items():
                with B.env("EVTDSL_STREAM_WEIGHTS", stream), B.env("EVTDSL_INLINE_TASKS", inline):
                    for name, mk in chains.items():
                        cfg = CHAIN_CONFIGS[name]
                        mk.run(*chain_args(cfg, x, *ws[0], h, y), backend="cuda", min_blocks=min_blocks)
                        err = float((y.float() - ref).norm() / ref.norm())
                        for schedule in ("static", "dynamic"):
                            t = B.time_graph([run(mk, *chain_args(cfg, x, w1, w2, h, y), schedule=schedule,
                                                  min_blocks=min_blocks) for w1, w2 in ws])
                            res["gemv_chain"].append({"size": size, "K": k, "N": n, "M": m, "codegen": codegen,
                                                      "config": name, "schedule": schedule, "us": t * 1e6,
                                                      "rel_err": err, "frac_copy": nbytes / t / copy_bw,
                                                      "torch_graph_us": t_torch * 1e6,
                                                      "torch_frac_copy": nbytes / t_torch / copy_bw})
                            print(f"gemv chain {size} M={m:2d} {codegen:26s} {name:32s} {schedule:7s}: {t * 1e6:7.1f} us, "
                                  f"{nbytes / t / copy_bw:4.0%} of copy; rel err {err:.1e}", flush=True)
        del ws
        torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"runtime-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1))
    plot(res, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["gemv_chain"]
    sizes = list(dict.fromkeys(x["size"] for x in rows))
    fig, axes = plt.subplots(1, len(sizes) + 1, figsize=(6 * len(sizes) + 5, 4.5))
    for a, size in zip(axes, sizes):
        here = [x for x in rows if x["size"] == size]
        ms = sorted({x["M"] for x in here})
        for codegen in dict.fromkeys(x["codegen"] for x in here):
            # the best configuration and schedule at each M; the label names the best one at the smallest M
            rows_cg = [x for x in here if x["codegen"] == codegen]
            best = [max((x for x in rows_cg if x["M"] == m), key=lambda x: x["frac_copy"]) for m in ms]
            a.plot(ms, [x["frac_copy"] for x in best], "o-", ms=4,
                   label=f"{codegen} (M={ms[0]}: {best[0]['config']}, {best[0]['schedule']})")
        torch_frac = [next(x["torch_frac_copy"] for x in here if x["M"] == m) for m in ms]
        a.plot(ms, torch_frac, "k--", lw=2, label="torch (CUDA graph)")
        a.axhline(0.85, color="gray", ls=":", label="target 85%")
        a.set_xlabel("M")
        a.set_ylabel("fraction of copy bandwidth (best configuration)")
        a.set_title(f"GEMV -> silu -> GEMV, {size} MLP: K={here[0]['K']}, N={here[0]['N']}, bf16", fontsize="medium")
        a.set_ylim(0, 1.05)
        a.legend(fontsize=6)
    b = axes[-1]
    labels = [f"{p['schedule']}\n{p['tasks']} tasks" for p in res["per_task"]]
    b.bar(labels, [p["ns_per_task_per_cta"] for p in res["per_task"]], label="per task per CTA")
    for p in res["handoff"]:
        b.bar(f"hand-off\n{p['schedule']}", p["ns_per_hop"], color="tab:orange")
    b.set_ylabel("ns")
    b.set_title(f"runtime overheads; launch {res['launch']['megakernel_graph_us']:.1f} µs vs plain "
                f"{res['launch']['plain_kernel_graph_us']:.1f} µs")
    fig.suptitle(f"{res['device']}, copy {res['copy_TBps']:.2f} TB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
