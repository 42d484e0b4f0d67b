"""How a decode-size GEMV's weights reach the tensor cores: the cp.async shared-memory ring against weights
streamed into registers (EVTDSL_STREAM_WEIGHTS, one or two iterations ahead, or as far as the code generator
picks per loop), per tile shape, on the 8B
gate/up weight ([28672, 4096] bf16, M = 1), and the SwiGLU MLP of the 8B shape at M = 1 and 16 with each.

    python benchmarks/gemv_streaming.py [--out DIR]

torch (cuBLAS) on the same inputs, in a CUDA graph, is the baseline of the same run; weights rotate among
copies that exceed the L2. Writes JSON (device, copy bandwidth, every configuration) and a plot.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

import evtdsl as evt
from evtdsl import benchmarking as B
from evtdsl.backends.cuda import codegen, launch
from evtdsl.library import mlp, swiglu

M, K, N = evt.dim("M"), evt.dim("K"), evt.dim("N")
BM = 16
TILES = [(16, 128), (16, 256), (32, 128), (32, 256), (32, 512), (64, 64), (64, 128), (64, 256), (128, 64)]
SWIGLU = [swiglu.Config("two_phase", bm=16, bn=32, bk=128, bc=64, chunk=64),
          swiglu.Config("two_phase", bm=16, bn=32, bk=256, bc=64, chunk=64),
          swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=128, chunk=32)]
# how weights reach the tensor cores: (name, EVTDSL_STREAM_WEIGHTS, iterations ahead)
MODES = [("ring", "0", None), ("stream-1", "1", 1), ("stream-2", "1", 2), ("stream-auto", "1", None)]


def make_gemv(bn: int, bk: int) -> evt.Megakernel:
    """y = x W^T, one task per (16-row block, bn rows of W), k in steps of bk."""

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, bn)))
    def gemv(i, j, x: evt.Tensor[M, K, evt.bf16], w: evt.Tensor[N, K, evt.bf16], y: evt.Tensor[M, N, evt.bf16]):
        acc = evt.zeros((BM, bn), evt.f32)
        for k in range(0, K, bk):
            acc += evt.dot(evt.load(x, (i * BM, k), (BM, bk)), evt.load(w, (j * bn, k), (bn, bk)).T)
        evt.store(y, (i * BM, j * bn), acc)

    @evt.megakernel
    def gemv_mk(x: evt.Tensor[M, K, evt.bf16], w: evt.Tensor[N, K, evt.bf16], y: evt.Tensor[M, N, evt.bf16]):
        gemv(x, w, y)

    return gemv_mk


def use_mode(stream: str, ahead: int | None) -> None:
    """Select a mode for kernels built from here on. The distance ahead is a code-generator constant (not a
    knob), so each mode gets its own cache folder and freshly built megakernels."""
    os.environ["EVTDSL_STREAM_WEIGHTS"] = stream
    codegen._STREAM_AHEAD = ahead  # None: the code generator's choice per loop
    os.environ["EVTDSL_CACHE_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"evtdsl-gemv-{stream}-{ahead}")
    launch._MODULES.clear()
    swiglu._BUILT.clear()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    copy_bw = B.copy_bandwidth()
    print(f"{dev}: copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    k, n = 4096, 28672
    x = torch.randn(1, k, device="cuda", generator=gen).bfloat16()
    ws = [(torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16() for _ in range(3)]
    y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
    ref = x.float() @ ws[0].float().T
    nbytes = n * k * 2
    t = B.time_graph([lambda w=w: torch.matmul(x, w.T) for w in ws])
    gemv = {"torch_us": t * 1e6, "torch_frac": nbytes / t / copy_bw, "tiles": []}
    print(f"GEMV torch {t * 1e6:.1f} us ({nbytes / t / copy_bw:.0%} of copy)", flush=True)
    for bn, bk in TILES:
        row = {"bn": bn, "bk": bk}
        for name, stream, ahead in MODES:
            use_mode(stream, ahead)
            mk = make_gemv(bn, bk)
            mk.run(x, ws[0], y)
            err = float((y.float() - ref).norm() / ref.norm())
            t = B.time_graph([lambda w=w: mk.run(x, w, y, sync=False) for w in ws])
            row[name] = {"us": t * 1e6, "frac": nbytes / t / copy_bw, "rel_err": err}
        gemv["tiles"].append(row)
        print(f"GEMV {bn:3d}x{bk:<3d} " + " ".join(f"{m[0]} {row[m[0]]['us']:6.1f} us ({row[m[0]]['frac']:.0%})"
                                               for m in MODES), flush=True)
    del ws
    k, n = 4096, 14336
    wbytes = 3 * k * n * 2
    wsets = [((torch.randn(2 * n, k, device="cuda", generator=gen) / k**0.5).bfloat16(),
              (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()) for _ in range(2)]
    mlp_rows = []
    for m in (1, 16):
        xm = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
        res = torch.zeros_like(xm)
        refm = mlp.torch_swiglu(xm, *wsets[0]).float()
        t = B.time_graph([lambda w=w: mlp.torch_swiglu(xm, *w) for w in wsets])
        row = {"M": m, "torch_graph_us": t * 1e6, "torch_frac": wbytes / t / copy_bw, "variants": {}}
        for cfg in SWIGLU:
            for name, stream, ahead in MODES:
                use_mode(stream, ahead)
                ym = mlp.run_variant(cfg, xm, *wsets[0], res)
                err = float((ym.float() - refm).norm() / refm.norm())
                t = B.time_graph([lambda w=w: mlp.run_variant(cfg, xm, *w, res, sync=False) for w in wsets])
                row["variants"][f"{cfg.name}/{name}"] = {"us": t * 1e6, "frac": wbytes / t / copy_bw, "rel_err": err}
        mlp_rows.append(row)
        print(f"SwiGLU 8B M={m}: torch {row['torch_graph_us']:.1f} us; " + ", ".join(
            f"{v} {r['us']:.1f}" for v, r in row["variants"].items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"device": dev, "copy_TBps": copy_bw / 1e12, "torch": torch.__version__, "gemv": gemv,
              "swiglu_8b": mlp_rows}
    path = out / f"gemv-streaming-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    plot(result, out / f"gemv-streaming-{stamp}.png")
    print(f"wrote {path}")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = result["gemv"]
    labels = [f"{r['bn']}x{r['bk']}" for r in g["tiles"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(MODES)
    for i, (name, _, _) in enumerate(MODES):
        ax.bar([j + i * width for j in range(len(labels))], [r[name]["frac"] for r in g["tiles"]], width, label=name)
    ax.axhline(g["torch_frac"], color="k", ls="--", label="torch (cuBLAS, CUDA graph)")
    ax.set_xticks([j + width * (len(MODES) - 1) / 2 for j in range(len(labels))], labels)
    ax.set_xlabel("tile (rows of W x k per step)")
    ax.set_ylabel("fraction of copy bandwidth")
    ax.set_title(f"GEMV [28672 x 4096] bf16, M=1, {result['device']}, copy {result['copy_TBps']:.2f} TB/s",
                 fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
