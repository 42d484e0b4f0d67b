"""Where a SwiGLU megakernel's time goes on the GPU, task by task: one launch traced (``trace=True``) after
warm-up launches, its weights beyond the L2 (the traced launch reads a copy the launch before did not).

    python benchmarks/timeline.py [--shape 8b] [--m 1] [--config NAME] [--out DIR]

Prints, per launch of the megakernel (gate_up, down, ...): its tasks, when the first was taken and started
and the last ended, and the median task body and wait; writes JSON (device, config, the summary, every
task) and the Gantt chart.
"""
import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

SHAPES = {"1b": (2048, 8192), "8b": (4096, 14336), "70b-tp8": (8192, 3584)}
DEFAULT_CONFIG = "two_phase_bm16_bn64_bk128_bc16_whole_bkd512_stream"


def phases(spans) -> list[dict]:
    """Per launch (in order of first start): tasks, first taken / start, last end, median body and wait (µs)."""
    by: dict[str, list] = {}
    for t in sorted(spans, key=lambda t: t.start):
        by.setdefault(t.launch, []).append(t)
    return [{"launch": name, "tasks": len(ts), "first_taken": min(t.taken for t in ts),
             "first_start": min(t.start for t in ts), "last_end": max(t.end for t in ts),
             "median_body": statistics.median(t.end - t.start for t in ts),
             "median_wait": statistics.median(t.start - t.taken for t in ts)} for name, ts in by.items()]


def main():
    import matplotlib
    import torch

    from evtdsl.library import mlp, scheduler

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b", choices=sorted(SHAPES))
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="a name from the scheduler's DEFAULT_CONFIGS")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    by_name = {c.name: c for c in scheduler.DEFAULT_CONFIGS}
    if args.config not in by_name:
        ap.error(f"--config: unknown {args.config!r}; expected a name from {sorted(by_name)}")
    cfg = by_name[args.config]
    k, n = SHAPES[args.shape]
    gen = torch.Generator(device="cuda").manual_seed(0)
    ws = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
           (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(3)]
    x = torch.randn(args.m, k, device="cuda", generator=gen).bfloat16()
    res = torch.zeros_like(x)
    for i in range(6):
        mlp.run_variant(cfg, x, *ws[i % 3], res)
    y, run = mlp.launch_variant(cfg, x, *ws[0], res, trace=True)
    spans = run.timeline()
    ref = mlp.torch_swiglu(x, *ws[0]).float()
    err = float((y.float() - ref).norm() / ref.norm())
    summary = phases(spans)
    total = max(t.end for t in spans)
    dev = torch.cuda.get_device_name()
    print(f"{dev}: {cfg.name}, {args.shape} M={args.m}: {len(spans)} tasks on {run.workers} CTAs, last task "
          f"ended at {total:.1f} us (first taken at 0), rel err {err:.1e}")
    for p in summary:
        print(f"  {p['launch']:24s} {p['tasks']:5d} tasks: first start {p['first_start']:7.1f} us, last end "
              f"{p['last_end']:7.1f} us, median body {p['median_body']:6.1f} us, median wait {p['median_wait']:6.1f} us")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"timeline-{stamp}.json"
    path.write_text(json.dumps({"device": dev, "config": cfg.name, "shape": args.shape, "K": k, "N": n, "M": args.m,
                                "workers": run.workers, "rel_err": err, "phases": summary,
                                "tasks": [dataclasses.asdict(t) for t in spans]}, indent=1))
    ax = run.plot_timeline()
    ax.set_title(f"{cfg.name}, {args.shape} M={args.m}, {dev}")
    ax.figure.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
