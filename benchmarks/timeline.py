"""Where a SwiGLU megakernel's time goes on the GPU, task by task: one launch traced (``trace=True``) after
warm-up launches, its weights beyond the L2 (the traced launch reads a copy the launch before did not).

    python benchmarks/timeline.py [--shape 8b[,1b,...]] [--m 1] [--config NAME] [--out DIR]

For each shape (with ``--config``, or the variant that was fastest at that shape and M = 1 in the last
benchmark run, ``BEST``), prints per launch of the megakernel (gate_up, down, ...): its tasks, when the first
was taken and started and the last ended, and the median task body and wait; writes JSON (device, config,
the summary, every task) and the Gantt chart.
"""
import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

SHAPES = {"1b": (2048, 8192), "8b": (4096, 14336), "70b-tp8": (8192, 3584)}
# the fastest variant per shape at M = 1 in swiglu-h200-20261204-034546
BEST = {"8b": "two_phase_bm16_bn64_bk128_bc16_whole_bkd512_stream",
        "1b": "two_phase_bm16_bn32_bk256_bc16_whole_bkd512_stream",
        "70b-tp8": "two_phase_bm16_bn16_bk512_bc32_whole_bkd256_stream"}


def phases(spans) -> list[dict]:
    """Per launch (in order of first start): tasks, first taken / start, last end, median body and wait (µs)."""
    by: dict[str, list] = {}
    for t in sorted(spans, key=lambda t: t.start):
        by.setdefault(t.launch, []).append(t)
    return [{"launch": name, "tasks": len(ts), "first_taken": min(t.taken for t in ts),
             "first_start": min(t.start for t in ts), "last_end": max(t.end for t in ts),
             "median_body": statistics.median(t.end - t.start for t in ts),
             "median_wait": statistics.median(t.start - t.taken for t in ts)} for name, ts in by.items()]


def trace_one(cfg, shape: str, m: int, out: Path) -> None:
    """One traced launch of ``cfg`` at ``shape`` and M = ``m`` after warm-up launches: prints its summary and
    writes the JSON and the chart into ``out``."""
    import torch

    from evtdsl.library import mlp

    k, n = SHAPES[shape]
    gen = torch.Generator(device="cuda").manual_seed(0)
    ws = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
           (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(3)]
    x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
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
    print(f"{dev}: {cfg.name}, {shape} M={m}: {len(spans)} tasks on {run.workers} CTAs, last task "
          f"ended at {total:.1f} us (first taken at 0), rel err {err:.1e}")
    for p in summary:
        print(f"  {p['launch']:24s} {p['tasks']:5d} tasks: first start {p['first_start']:7.1f} us, last end "
              f"{p['last_end']:7.1f} us, median body {p['median_body']:6.1f} us, median wait {p['median_wait']:6.1f} us")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"timeline-{shape}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"device": dev, "config": cfg.name, "shape": shape, "K": k, "N": n, "M": m,
                                "workers": run.workers, "rel_err": err, "phases": summary,
                                "tasks": [dataclasses.asdict(t) for t in spans]}, indent=1))
    ax = run.plot_timeline()
    ax.set_title(f"{cfg.name}, {shape} M={m}, {dev}")
    ax.figure.savefig(path.with_suffix(".png"), dpi=110, bbox_inches="tight")
    print(f"wrote {path}")


def main():
    import matplotlib

    from evtdsl.library import scheduler

    matplotlib.use("Agg")
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b", help=f"comma-separated shapes from {sorted(SHAPES)}")
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--config", help="a name from the scheduler's DEFAULT_CONFIGS (default: BEST of each shape)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    shapes = args.shape.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        ap.error(f"--shape: unknown {unknown}; expected names from {sorted(SHAPES)}")
    by_name = {c.name: c for c in scheduler.DEFAULT_CONFIGS}
    if args.config is not None and args.config not in by_name:
        ap.error(f"--config: unknown {args.config!r}; expected a name from {sorted(by_name)}")
    for shape in shapes:
        trace_one(by_name[args.config or BEST[shape]], shape, args.m, Path(args.out))


if __name__ == "__main__":
    main()
