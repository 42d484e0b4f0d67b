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

T, M, K, N = evt.dim("T"), evt.dim("M"), evt.dim("K"), evt.dim("N")


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


CHAIN_CONFIGS = {"up64x64_down64x64": (64, 64, 64, 64), "up32x128_down16x256": (32, 128, 16, 256),
                 "up64x128_down32x128": (64, 128, 32, 128), "up64x128_down16x512": (64, 128, 16, 512),
                 "up64x256_down16x512": (64, 256, 16, 512), "up32x512_down16x512": (32, 512, 16, 512)}


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
    k, n = 4096, 14336
    gen = torch.Generator(device="cuda").manual_seed(0)
    ws = [((torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
           (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
    chains = {name: make_gemv_chain(*cfg) for name, cfg in CHAIN_CONFIGS.items()}
    for m in (1, 4, 16):
        x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
        h, y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16), torch.empty(m, k, device="cuda", dtype=torch.bfloat16)
        ref = torch.nn.functional.silu(x.float() @ ws[0][0].float().T).bfloat16().float() @ ws[0][1].float().T
        nbytes = 2 * n * k * 2
        t_torch = B.time_graph([lambda w1=w1, w2=w2: torch.nn.functional.silu(x @ w1.T) @ w2.T for w1, w2 in ws])
        for name, mk in chains.items():
            mk.run(x, *ws[0], h, y, backend="cuda")
            err = float((y.float() - ref).norm() / ref.norm())
            for schedule in ("static", "static_prefetch", "dynamic"):
                with B.env("EVTDSL_L2_PREFETCH", "1" if schedule == "static_prefetch" else "0"):
                    t = B.time_graph([run(mk, x, w1, w2, h, y, schedule=schedule.split("_")[0]) for w1, w2 in ws])
                res["gemv_chain"].append({"M": m, "config": name, "schedule": schedule, "us": t * 1e6, "rel_err": err,
                                          "frac_copy": nbytes / t / copy_bw, "torch_graph_us": t_torch * 1e6,
                                          "torch_frac_copy": nbytes / t_torch / copy_bw})
                print(f"gemv chain M={m:2d} {name:20s} {schedule:7s}: {t * 1e6:7.1f} us, {nbytes / t / copy_bw:4.0%} of "
                      f"copy (torch graph {t_torch * 1e6:.1f} us, {nbytes / t_torch / copy_bw:.0%}); rel err {err:.1e}")
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

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rows = res["gemv_chain"]
    for name in dict.fromkeys(x["config"] for x in rows):
        for schedule, style in (("static", "o-"), ("static_prefetch", "^:"), ("dynamic", "s--")):
            r = [x for x in rows if x["schedule"] == schedule and x["config"] == name]
            a.plot([x["M"] for x in r], [x["frac_copy"] for x in r], style, label=f"{name} {schedule}")
    r = [x for x in rows if x["schedule"] == "static" and x["config"] == rows[0]["config"]]
    a.plot([x["M"] for x in r], [x["torch_frac_copy"] for x in r], "k--", label="torch (CUDA graph)")
    a.axhline(0.85, color="gray", ls=":", label="target 85%")
    a.set_xlabel("M")
    a.set_ylabel("fraction of copy bandwidth")
    a.set_title("GEMV -> silu -> GEMV, K=4096, N=14336, bf16")
    a.legend(fontsize="small")
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
