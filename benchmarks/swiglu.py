"""SwiGLU MLP on the GPU: every DSL variant against torch (eager and CUDA graph), per shape and M.

    python benchmarks/swiglu.py [--shapes 8b,1b,70b-tp8] [--m 1,2,4,8,16,32,64,128] [--out DIR]

Weights rotate among enough copies to exceed the L2; inputs are random. Writes JSON (device, copy and
read bandwidth, every configuration's µs, TB/s and fraction of copy bandwidth) and a plot.
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

from evtdsl import benchmarking as B
from evtdsl.library import mlp, scheduler

SHAPES = {"1b": (2048, 8192), "8b": (4096, 14336), "70b-tp8": (8192, 3584)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="1b,8b,70b-tp8")
    ap.add_argument("--m", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--configs", default="all",
                    help="'all', a count of the default configs to try, or comma-separated config names")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    copy_bw, read_bw = B.copy_bandwidth(), B.read_bandwidth()
    print(f"{dev}: copy {copy_bw / 1e12:.2f} TB/s, read {read_bw / 1e12:.2f} TB/s, L2 {l2 >> 20} MiB")
    configs = list(scheduler.DEFAULT_CONFIGS)
    if args.configs.isdigit():
        configs = configs[: int(args.configs)]
    elif args.configs != "all":
        by_name = {c.name: c for c in configs}
        unknown = [n for n in args.configs.split(",") if n not in by_name]
        if unknown:
            ap.error(f"--configs: unknown {unknown}; expected names from {list(by_name)}")
        configs = [by_name[n] for n in args.configs.split(",")]
    rows = []
    for shape in args.shapes.split(","):
        k, n = SHAPES[shape]
        wbytes = 3 * k * n * 2
        copies = max(2, math.ceil(3 * l2 / wbytes))
        gen = torch.Generator(device="cuda").manual_seed(0)
        ws = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
               (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(copies)]
        for m in (int(v) for v in args.m.split(",")):
            x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
            res = torch.zeros_like(x)
            floor_s = wbytes / copy_bw
            ref = mlp.torch_swiglu(x, *ws[0])
            entry = {"shape": shape, "K": k, "N": n, "M": m, "weight_bytes": wbytes, "floor_us": floor_s * 1e6}
            eager = B.time_callable(lambda: [mlp.torch_swiglu(x, *w) for w in ws], repeats=args.repeats) / copies
            graph = B.time_graph([lambda w=w: mlp.torch_swiglu(x, *w) for w in ws], repeats=args.repeats)
            entry["torch_eager_us"], entry["torch_graph_us"] = eager * 1e6, graph * 1e6
            entry["variants"] = {}
            for cfg in configs:
                try:
                    y = mlp.run_variant(cfg, x, *ws[0], res, sync=True)
                    err = float((y.float() - ref.float()).norm() / ref.float().norm())
                    t = B.time_graph([lambda w=w, c=cfg: mlp.run_variant(c, x, *w, res, sync=False) for w in ws],
                                     repeats=args.repeats)
                    entry["variants"][cfg.name] = {"us": t * 1e6, "rel_err": err, "TBps": wbytes / t / 1e12,
                                                   "frac_copy": wbytes / t / copy_bw}
                except Exception as e:  # noqa: BLE001 - record and go on
                    entry["variants"][cfg.name] = {"error": f"{type(e).__name__}: {e}"[:300]}
            ok = {c: v for c, v in entry["variants"].items() if "us" in v and v["rel_err"] < 2e-2}
            best = min(ok, key=lambda c: ok[c]["us"]) if ok else None
            entry["best"] = best
            b_us = ok[best]["us"] if best else float("nan")
            if best:  # the same variant with prefetch-while-waiting (EVTDSL_L2_PREFETCH=1), to show its effect
                cfg = next(c for c in configs if c.name == best)
                with B.env("EVTDSL_L2_PREFETCH", "1"):
                    mlp.run_variant(cfg, x, *ws[0], res, sync=True)
                    entry["best_prefetch_us"] = 1e6 * B.time_graph(
                        [lambda w=w: mlp.run_variant(cfg, x, *w, res, sync=False) for w in ws], repeats=args.repeats)
            print(f"{shape:8s} M={m:4d} floor {floor_s * 1e6:7.1f} us | torch eager {eager * 1e6:7.1f} graph "
                  f"{graph * 1e6:7.1f} | best {best} {b_us:7.1f} us ({wbytes / (b_us * 1e-6) / copy_bw:.0%} of copy), "
                  f"speedup vs graph {graph * 1e6 / b_us:.2f}x; with prefetch {entry.get('best_prefetch_us', float('nan')):.1f} us",
                  flush=True)
            rows.append(entry)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"device": dev, "copy_TBps": copy_bw / 1e12, "read_TBps": read_bw / 1e12, "l2_bytes": l2,
              "torch": torch.__version__, "rows": rows}
    path = out / f"swiglu-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    plot(result, out / f"swiglu-{stamp}.png")
    print(f"wrote {path}")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes):
        rows = [r for r in result["rows"] if r["shape"] == shape]
        ms = [r["M"] for r in rows]
        ax.plot(ms, [r["torch_graph_us"] for r in rows], "o-", label="torch (CUDA graph)")
        ax.plot(ms, [r["torch_eager_us"] for r in rows], "o--", label="torch (eager)")
        best = [r["variants"][r["best"]]["us"] if r["best"] else float("nan") for r in rows]
        ax.plot(ms, best, "s-", label="evtdsl (best variant)")
        ax.plot(ms, [r["floor_us"] for r in rows], "k:", label="weights / copy bandwidth")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (tokens)")
        ax.set_ylabel("µs per MLP")
        ax.set_title(f"{shape} (K={rows[0]['K']}, N={rows[0]['N']})")
        ax.legend(fontsize="small")
    fig.suptitle(f"SwiGLU MLP, bf16, {result['device']}, copy {result['copy_TBps']:.2f} TB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
