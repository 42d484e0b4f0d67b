"""The ceiling of each way to stream a weight matrix from HBM, without the DSL: hand-written kernels that read a
[28672, 4096] bf16 weight (the 8B gate/up) tile by tile and do nothing but fold the bytes into one register,
so that only the memory path differs:

- ``cp.async``: a BN x BK tile ring of S shared-memory stages (16-byte cp.async per thread, wait_group, barrier),
  as the DSL's pipelined loops;
- ``bulk``: the same ring filled by per-row bulk copies (cp.async.bulk, completion on an mbarrier), one warp issuing;
- ``regs``: 16-byte non-coherent loads straight into registers, U per thread in flight, consecutive lanes on
  consecutive bytes;
- ``frag`` / ``frag+bar``: register loads in the mma-fragment pattern the DSL's streamed weights use (lane
  (g, t) of a warp reads row g, 16 bytes at column 32c + 8t), one stage ahead in a register double buffer, without
  and with a CTA barrier per stage.

    python benchmarks/stream_ceiling.py [--out DIR]

Writes JSON (device, copy bandwidth, every configuration) and a plot. Timed with CUDA events over 30 back-to-back
launches, median of 5, weights rotating among 3 copies (beyond the L2).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from evtdsl import benchmarking as B

N, K = 28672, 4096
METHODS = ["cp.async", "bulk", "regs", "frag", "frag+bar"]
# (method, BN, BK, stages or loads in flight U, CTAs per SM)
CASES = ([(0, 64, 128, 3, 2), (0, 64, 128, 4, 2), (0, 32, 128, 4, 4), (0, 16, 256, 4, 4), (0, 128, 64, 3, 2),
          (1, 64, 128, 3, 2), (1, 16, 512, 3, 2)]
         + [(2, 64, 128, u, c) for u in (4, 8, 16) for c in (2, 4)]
         + [(m, 64, 128, u, c) for m in (3, 4) for u in (4, 8) for c in (2, 4)])

SRC = r'''
#include <cuda_bf16.h>
extern "C" __global__ void __launch_bounds__(256) stream(const __nv_bfloat16* __restrict__ w, int N, int K, int ntiles, float* out) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int ROWB = BK * 2;          // bytes per tile row
  constexpr int PITCH = ROWB + 16;      // padded row pitch
  constexpr int STAGEB = BN * PITCH;
  __shared__ __align__(8) unsigned long long bar[S];
  float acc = 0.f;
  const int tid = threadIdx.x;
#if METHOD != 0
  if (tid == 0) for (int s = 0; s < S; ++s) {
    unsigned b = static_cast<unsigned>(__cvta_generic_to_shared(&bar[s]));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(b));
  }
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncthreads();
  unsigned phase = 0;  // bit s: parity of stage s
#endif
  const int kst = K / BK;
#if METHOD == 2
  // register streaming: each thread keeps U 16-byte loads in flight
  for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const __nv_bfloat16* base = w + (long long)t * BN * K;
    const long long chunks = (long long)BN * K / 8;
    for (long long c0 = tid; c0 < chunks; c0 += 256LL * U) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        long long c = c0 + 256LL * u;
        if (c < chunks) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w) : "l"(base + c * 8));
        else v[u] = make_uint4(0,0,0,0);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) acc += __uint_as_float(v[u].x ^ v[u].y ^ v[u].z ^ v[u].w);
    }
  }
  if (acc == 1.2345f) out[blockIdx.x * 256 + tid] = acc;
  return;
#endif
#if METHOD >= 3
  // mma-fragment pattern: warp w owns rows w*8 .. w*8+7 of a 64-row tile; lane (g, t) loads row g, columns
  // 32c + 8t (c < U) of each 32U-wide stage, one stage ahead in a register double buffer (copied at the end of
  // each stage); METHOD 4 adds a CTA barrier per stage
  {
    const int warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
      const __nv_bfloat16* base = w + (long long)(tile * 64 + warp * 8 + g) * K + 8 * t;
      uint4 cur[U], nxt[U];
#pragma unroll
      for (int u = 0; u < U; ++u) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(cur[u].x), "=r"(cur[u].y), "=r"(cur[u].z), "=r"(cur[u].w) : "l"(base + 32 * u));
      for (int k0 = 0; k0 < K; k0 += 32 * U) {
#if METHOD >= 4
        __syncthreads();
#endif
        if (k0 + 32 * U < K) {
#pragma unroll
          for (int u = 0; u < U; ++u) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(nxt[u].x), "=r"(nxt[u].y), "=r"(nxt[u].z), "=r"(nxt[u].w) : "l"(base + k0 + 32 * U + 32 * u));
        }
#pragma unroll
        for (int u = 0; u < U; ++u) acc += __uint_as_float(cur[u].x ^ cur[u].y ^ cur[u].z ^ cur[u].w);
#pragma unroll
        for (int u = 0; u < U; ++u) cur[u] = nxt[u];
      }
    }
  }
  if (acc == 1.2345f) out[blockIdx.x * 256 + tid] = acc;
  return;
#endif
  for (int t = blockIdx.x; t < ntiles; t += gridDim.x) {
    const __nv_bfloat16* base = w + (long long)t * BN * K;
    auto issue = [&](int ks, int slot) {
      unsigned char* dst = smem + slot * STAGEB;
#if METHOD == 0
      constexpr int CH = BN * ROWB / 16;
      for (int c = tid; c < CH; c += 256) {
        int r = c / (ROWB / 16), cc = c % (ROWB / 16);
        unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst + r * PITCH + cc * 16));
        const void* g = reinterpret_cast<const char*>(base + (long long)r * K + ks * BK) + cc * 16;
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" :: "r"(d), "l"(g) : "memory");
      }
      asm volatile("cp.async.commit_group;" ::: "memory");
#else
      unsigned b = static_cast<unsigned>(__cvta_generic_to_shared(&bar[slot]));
      if (tid == 0) asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(b), "r"(BN * ROWB) : "memory");
      __syncwarp();
      if (tid < 32) {
        for (int r = tid; r < BN; r += 32) {
          unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst + r * PITCH));
          const void* g = base + (long long)r * K + ks * BK;
          asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                       :: "r"(d), "l"(g), "r"(ROWB), "r"(b) : "memory");
        }
      }
#endif
    };
    for (int s = 0; s < S - 1; ++s) { if (s < kst) issue(s, s); else {
#if METHOD == 0
      asm volatile("cp.async.commit_group;" ::: "memory");
#endif
    } }
    for (int ks = 0; ks < kst; ++ks) {
      const int slot = ks % S;
#if METHOD == 0
      asm volatile("cp.async.wait_group %0;" :: "n"(S - 2) : "memory");
      __syncthreads();
#else
      {
        unsigned b = static_cast<unsigned>(__cvta_generic_to_shared(&bar[slot]));
        unsigned par = (phase >> slot) & 1u;
        unsigned done = 0;
        while (!done) {
          asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                       : "=r"(done) : "r"(b), "r"(par) : "memory");
        }
        phase ^= 1u << slot;
      }
      __syncthreads();
#endif
      if (ks + S - 1 < kst) issue(ks + S - 1, (ks + S - 1) % S);
#if METHOD == 0
      else asm volatile("cp.async.commit_group;" ::: "memory");
#endif
      const unsigned char* src = smem + slot * STAGEB;
      for (int c = tid; c < BN * ROWB / 16; c += 256) {
        int r = c / (ROWB / 16), cc = c % (ROWB / 16);
        uint4 v = *reinterpret_cast<const uint4*>(src + r * PITCH + cc * 16);
        acc += __uint_as_float(v.x ^ v.y ^ v.z ^ v.w);
      }
    }
    __syncthreads();
  }
  if (acc == 1.2345f) out[blockIdx.x * 256 + tid] = acc;
}
'''


def measure(method: int, bn: int, bk: int, s: int, ctas_per_sm: int, weights, sms: int) -> float:
    """Bytes per second streaming the weight with one configuration."""
    import cupy as cp
    from cupy.cuda import function
    from cupy_backends.cuda.api import driver

    from evtdsl.backends.cuda.codegen import KernelSource
    from evtdsl.backends.cuda.compiler import nvrtc_compile

    defs = f"#define METHOD {method}\n#define BN {bn}\n#define BK {bk}\n#define S {s}\n#define U {s}\n"
    cubin = nvrtc_compile(KernelSource("stream", defs + SRC, "stream_ceiling.cu", 0, 256), "sm_90a")
    mod = function.Module()
    mod.load(cubin)
    fn = mod.get_function("stream")
    smem = s * bn * (bk * 2 + 16) if method < 2 else 0
    if smem:
        driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem)
    out = cp.zeros(sms * 8 * 256, dtype=cp.float32)
    tiles = N // (64 if method >= 3 else bn)
    grid = min(tiles, sms * ctas_per_sm)

    def go(i):
        fn((grid,), (256,), (np.uint64(weights[i % len(weights)].data_ptr()), np.int32(N), np.int32(K),
                             np.int32(tiles), out), shared_mem=smem)

    # CuPy launches on the legacy default stream, the one torch's events are recorded on
    return N * K * 2 / (B.time_callable(lambda: [go(i) for i in range(30)], repeats=5) / 30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    copy_bw = B.copy_bandwidth()
    print(f"{dev}: copy {copy_bw / 1e12:.2f} TB/s", flush=True)
    weights = [torch.randn(N, K, device="cuda").bfloat16() for _ in range(3)]
    rows = []
    for method, bn, bk, s, cps in CASES:
        bw = measure(method, bn, bk, s, cps, weights, sms)
        rows.append({"method": METHODS[method], "BN": bn, "BK": bk, "stages_or_U": s, "ctas_per_sm": cps,
                     "TBps": bw / 1e12, "frac": bw / copy_bw})
        print(f"{METHODS[method]:9s} BN={bn:3d} BK={bk:3d} S/U={s:2d} CTAs/SM={cps}: {bw / 1e12:.2f} TB/s "
              f"({bw / copy_bw:.0%} of copy)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"device": dev, "copy_TBps": copy_bw / 1e12, "N": N, "K": K, "rows": rows}
    path = out / f"stream-ceiling-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    plot(result, out / f"stream-ceiling-{stamp}.png")
    print(f"wrote {path}")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(10, 4))
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    ax.bar(range(len(rows)), [r["frac"] for r in rows], color=[colors[r["method"]] for r in rows])
    ax.set_xticks(range(len(rows)), [f"{r['method']}\n{r['BN']}x{r['BK']} {r['stages_or_U']}/{r['ctas_per_sm']}"
                                     for r in rows], fontsize=5, rotation=90)
    ax.axhline(1.0, color="k", ls=":")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[m], label=m) for m in METHODS if any(r["method"] == m for r in rows)],
              fontsize="small", loc="lower left")
    ax.set_ylabel("fraction of copy bandwidth")
    ax.set_title(f"Streaming a [{result['N']} x {result['K']}] bf16 weight, {result['device']} "
                 f"(tile BN x BK, stages or loads in flight / CTAs per SM)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
