"""Hand-written decode GEMVs on the tensor cores, to find the access pattern that streams a weight at the
copy bandwidth: y[M, N] = x[M, K] W[N, K]^T on the 8B gate/up weight ([28672, 4096] bf16), M = 1 and 16.

Every kernel computes with mma.sync m16n8k16 (x as the A operand, W rows as n), accumulates in float32, and is
checked against torch. A warp job is 8 * NJ rows of W times a k-slice: KS warps share a row group and split
its K (KS = 8: the CTA sweeps 8 * NJ whole rows, contiguous memory), each warp walks its slice SEG k values at
a time, one stage ahead. How the weight reaches the mma fragments (PAT):

- ``frag``: 16-byte non-coherent loads straight in the fragment pattern (lane (g, t) reads row g, 16 bytes at
  32c + 8t: 8 rows x 64 bytes per instruction), as the DSL's EVTDSL_STREAM_WEIGHTS;
- ``consec``: 16-byte non-coherent loads on consecutive bytes (a warp instruction reads 512 contiguous bytes
  of one row, or 256 of two), transposed into the fragment pattern through a per-warp shared-memory buffer
  (no CTA barrier);
- ``cpasync``: per-warp cp.async of the same consecutive bytes into a 3-stage per-warp ring (wait_group and
  __syncwarp, no CTA barrier), then the same fragment reads.

    python benchmarks/gemv_paths.py [--out DIR]

torch (cuBLAS) on the same inputs is the baseline of the same run; weights rotate among 3 copies (beyond the
L2). Writes JSON (device, copy bandwidth, every configuration) and a plot.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evtdsl import benchmarking as B

N, K = 28672, 4096
PATS = ["frag", "consec", "cpasync"]
# (pattern, NJ, SEG, KS)
CASES = [(p, nj, seg, ks) for p in range(3) for nj, seg in ((1, 128), (1, 256), (2, 128)) for ks in (1, 2, 8)]

SRC = r'''
#include <cuda_bf16.h>
#define ROWS_W (8 * NJ)
#define GROUPS (8 / KS)
#define TILE_ROWS (ROWS_W * GROUPS)
#define KC (SEG / 32)
#define PITCH (SEG * 2 + 64)            // bytes per staged row: +64 keeps fragment reads conflict-free
#define LPR (SEG / 8 < 32 ? SEG / 8 : 32)  // lanes per row in a consecutive load
#define RPI (32 / LPR)                  // rows per consecutive load instruction
#define NQ (NJ * KC)                    // 16-byte pieces per lane per stage
#define NSTAGE 3
#define NBUF (PAT == 2 ? NSTAGE : 1)  // staged stages per warp

__device__ __forceinline__ uint4 ldnc(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

extern "C" __global__ void __launch_bounds__(256, 2) gemv(const __nv_bfloat16* __restrict__ w, const __nv_bfloat16* __restrict__ x,
                                                          float* __restrict__ y, int Nrows, int Kdim, int Mrows, int ntiles) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int rg = warp / KS, ks = warp % KS;
  const int kspan = Kdim / KS;
  float* red = reinterpret_cast<float*>(smem);                         // [8 warps][NJ][4][32]
  unsigned char* stg = smem + 8 * NJ * 4 * 32 * 4 + warp * (NBUF * ROWS_W * PITCH);  // this warp's staging
  for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
    const int row0 = tile * TILE_ROWS + rg * ROWS_W;
    const int kbeg = ks * kspan, kend = kbeg + kspan;
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const __nv_bfloat16* wb = w + (long long)row0 * Kdim;
    // piece q of a consecutive stage: row q % (ROWS_W / RPI) * RPI + lane / LPR, column 8 * (lane % LPR) + LPR * 8 * (q / (ROWS_W / RPI))
    auto crow = [&](int q) { return (q % (ROWS_W / RPI)) * RPI + lane / LPR; };
    auto ccol = [&](int q) { return 8 * (lane % LPR) + LPR * 8 * (q / (ROWS_W / RPI)); };
    auto issue = [&](uint4 (&r)[NQ], int k0) {
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
#if PAT == 0
        const int j = q / KC, c = q % KC;
        r[q] = ldnc(wb + (long long)(8 * j + g) * Kdim + k0 + 32 * c + 8 * t);
#else
        r[q] = ldnc(wb + (long long)crow(q) * Kdim + k0 + ccol(q));
#endif
      }
    };
    auto compute = [&](const uint4 (&r)[NQ], int k0) {
#pragma unroll
      for (int c = 0; c < KC; ++c) {
        const int col = k0 + 32 * c + 8 * t;
        uint4 lo = make_uint4(0, 0, 0, 0), hi = make_uint4(0, 0, 0, 0);
        if (g < Mrows) lo = *reinterpret_cast<const uint4*>(x + (long long)g * Kdim + col);
        if (g + 8 < Mrows) hi = *reinterpret_cast<const uint4*>(x + (long long)(g + 8) * Kdim + col);
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const unsigned a[4] = {s ? lo.z : lo.x, s ? hi.z : hi.x, s ? lo.w : lo.y, s ? hi.w : hi.y};
#pragma unroll
          for (int j = 0; j < NJ; ++j) {
            const uint4& v = r[j * KC + c];
            const unsigned b[2] = {s ? v.z : v.x, s ? v.w : v.y};
            mma(acc[j], a, b);
          }
        }
      }
    };
#if PAT == 0
    uint4 cur[NQ], nxt[NQ];
    issue(cur, kbeg);
    for (int k0 = kbeg; k0 < kend; k0 += SEG) {
      if (k0 + SEG < kend) issue(nxt, k0 + SEG);
      compute(cur, k0);
#pragma unroll
      for (int q = 0; q < NQ; ++q) cur[q] = nxt[q];
    }
#elif PAT == 1
    uint4 cur[NQ], nxt[NQ], frag[NQ];
    issue(cur, kbeg);
    for (int k0 = kbeg; k0 < kend; k0 += SEG) {
      if (k0 + SEG < kend) issue(nxt, k0 + SEG);
      // transpose through shared memory: consecutive pieces in, fragment pieces out
#pragma unroll
      for (int q = 0; q < NQ; ++q) *reinterpret_cast<uint4*>(stg + crow(q) * PITCH + ccol(q) * 2) = cur[q];
      __syncwarp();
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        const int j = q / KC, c = q % KC;
        frag[q] = *reinterpret_cast<const uint4*>(stg + (8 * j + g) * PITCH + (32 * c + 8 * t) * 2);
      }
      __syncwarp();
      compute(frag, k0);
#pragma unroll
      for (int q = 0; q < NQ; ++q) cur[q] = nxt[q];
    }
#else
    auto cp_issue = [&](int k0, int slot) {
      unsigned char* dst = stg + slot * ROWS_W * PITCH;
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst + crow(q) * PITCH + ccol(q) * 2));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(d), "l"(wb + (long long)crow(q) * Kdim + k0 + ccol(q)) : "memory");
      }
      asm volatile("cp.async.commit_group;" ::: "memory");
    };
    for (int s = 0; s < NSTAGE - 1; ++s) {
      if (kbeg + s * SEG < kend) cp_issue(kbeg + s * SEG, s);
      else asm volatile("cp.async.commit_group;" ::: "memory");
    }
    int slot = 0;
    for (int k0 = kbeg; k0 < kend; k0 += SEG) {
      asm volatile("cp.async.wait_group %0;" :: "n"(NSTAGE - 2) : "memory");
      __syncwarp();
      const int ws = slot == 0 ? NSTAGE - 1 : slot - 1;
      if (k0 + (NSTAGE - 1) * SEG < kend) cp_issue(k0 + (NSTAGE - 1) * SEG, ws);
      else asm volatile("cp.async.commit_group;" ::: "memory");
      uint4 frag[NQ];
      const unsigned char* src = stg + slot * ROWS_W * PITCH;
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        const int j = q / KC, c = q % KC;
        frag[q] = *reinterpret_cast<const uint4*>(src + (8 * j + g) * PITCH + (32 * c + 8 * t) * 2);
      }
      compute(frag, k0);
      slot = slot == NSTAGE - 1 ? 0 : slot + 1;
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncwarp();
#endif
    // split-K: the KS warps of a row group add their partial sums in order
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) red[((warp * NJ + j) * 4 + e) * 32 + lane] = acc[j][e];
    __syncthreads();
    if (ks == 0) {
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float s = 0.f;
          for (int p = 0; p < KS; ++p) s += red[(((warp + p) * NJ + j) * 4 + e) * 32 + lane];
          const int m = g + (e >= 2 ? 8 : 0), n = row0 + 8 * j + 2 * t + (e & 1);
          if (m < Mrows) y[(long long)m * Nrows + n] = s;
        }
    }
    __syncthreads();
  }
}
'''


def build(pat: int, nj: int, seg: int, ks: int):
    from cupy.cuda import function
    from cupy_backends.cuda.api import driver

    from evtdsl.backends.cuda.codegen import KernelSource
    from evtdsl.backends.cuda.compiler import nvrtc_compile

    defs = f"#define PAT {pat}\n#define NJ {nj}\n#define SEG {seg}\n#define KS {ks}\n"
    cubin = nvrtc_compile(KernelSource("gemv", defs + SRC, "gemv_paths.cu", 0, 256), "sm_90a")
    mod = function.Module()
    mod.load(cubin)
    fn = mod.get_function("gemv")
    smem = 8 * nj * 4 * 32 * 4 + 8 * (0, 1, 3)[pat] * 8 * nj * (seg * 2 + 64)  # split-K partials, staging
    driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
    per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.ptr, 256, smem)
    regs = driver.funcGetAttribute(driver.CU_FUNC_ATTRIBUTE_NUM_REGS, fn.ptr)
    return mod, fn, smem, per_sm, regs


def main():
    import cupy as cp

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy_bw = B.copy_bandwidth()
    print(f"{dev}: copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    ws = [(torch.randn(N, K, device="cuda", generator=gen) / K**0.5).bfloat16() for _ in range(3)]
    nbytes = N * K * 2
    res = {"device": dev, "copy_TBps": copy_bw / 1e12, "N": N, "K": K, "torch": {}, "rows": []}
    for m in (1, 16):
        x = torch.randn(m, K, device="cuda", generator=gen).bfloat16()
        t = B.time_graph([lambda w=w: torch.matmul(x, w.T) for w in ws])
        res["torch"][m] = {"us": t * 1e6, "frac": nbytes / t / copy_bw}
        print(f"M={m:2d} torch {t * 1e6:6.1f} us ({nbytes / t / copy_bw:.0%} of copy)", flush=True)
    for pat, nj, seg, ks in CASES:
        mod, fn, smem, per_sm, regs = build(pat, nj, seg, ks)
        tiles = N // (8 * nj * (8 // ks))
        grid = min(tiles, sms * per_sm)
        for m in (1, 16):
            x = torch.randn(m, K, device="cuda", generator=gen).bfloat16()
            y = torch.empty(m, N, device="cuda", dtype=torch.float32)

            def go(i):
                fn((grid,), (256,), (np.uint64(ws[i % 3].data_ptr()), np.uint64(x.data_ptr()),
                                     np.uint64(y.data_ptr()), np.int32(N), np.int32(K), np.int32(m), np.int32(tiles)),
                   shared_mem=smem)

            y.fill_(float("nan"))
            go(0)
            torch.cuda.synchronize()
            ref = x.float() @ ws[0].float().T
            err = float((y - ref).norm() / ref.norm())
            t = B.time_callable(lambda: [go(i) for i in range(30)], repeats=7) / 30
            row = {"pattern": PATS[pat], "NJ": nj, "SEG": seg, "KS": ks, "M": m, "ctas_per_sm": per_sm, "regs": regs,
                   "us": t * 1e6, "frac": nbytes / t / copy_bw, "rel_err": err}
            res["rows"].append(row)
            print(f"{PATS[pat]:8s} NJ={nj} SEG={seg:3d} KS={ks} M={m:2d} ({per_sm}/SM, {regs} regs): {t * 1e6:6.1f} us "
                  f"{nbytes / t / copy_bw:4.0%} of copy, err {err:.1e}", flush=True)
        del mod
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gemv-paths-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=1))
    plot(res, path.with_suffix(".png"))
    print(f"wrote {path}")


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, m in zip(axes, (1, 16)):
        rows = [r for r in res["rows"] if r["M"] == m]
        colors = dict(zip(PATS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
        ax.bar(range(len(rows)), [r["frac"] for r in rows], color=[colors[r["pattern"]] for r in rows])
        ax.set_xticks(range(len(rows)), [f"{r['pattern']} NJ{r['NJ']}\nSEG{r['SEG']} KS{r['KS']}" for r in rows],
                      fontsize=5, rotation=90)
        tm = res["torch"][m] if m in res["torch"] else res["torch"][str(m)]
        ax.axhline(tm["frac"], color="k", ls="--", label="torch (cuBLAS)")
        ax.set_title(f"M = {m}")
        ax.legend(fontsize="small")
    axes[0].set_ylabel("fraction of copy bandwidth")
    fig.suptitle(f"GEMV [{res['N']} x {res['K']}] bf16 on mma.sync, {res['device']}, copy {res['copy_TBps']:.2f} TB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
