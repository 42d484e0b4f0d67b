// evt_tile.cuh: CTA-cooperative tile primitives. Tiles live in shared memory (row-major, static shapes);
// every function here is called by all threads of the CTA with the same arguments.
//
// NumPy twins (evtdsl/backends/cpu): masked loads and stores (interpreter._compile_memory), dot
// (semantics.dot: float32 accumulation), reductions (semantics.reduce), atomic add (interpreter: the sum is
// computed in float32 and rounded to the tensor's dtype).
#pragma once
#include "evt_core.cuh"
#include <evt_ptx.cuh>  // from the include path, so that a host build can substitute its emulation

namespace evt {

// -- global memory ---------------------------------------------------------------------------------

// Read-only loads (tensors no task writes during the kernel) go through the non-coherent path.
template <class T>
__device__ __forceinline__ T ld_ro(const T* p) { return *p; }
__device__ __forceinline__ float ld_ro(const float* p) { return __ldg(p); }
__device__ __forceinline__ double ld_ro(const double* p) { return __ldg(p); }
__device__ __forceinline__ int ld_ro(const int* p) { return __ldg(p); }
__device__ __forceinline__ long long ld_ro(const long long* p) { return __ldg(p); }
__device__ __forceinline__ __nv_bfloat16 ld_ro(const __nv_bfloat16* p) { return __ldg(p); }
__device__ __forceinline__ __half ld_ro(const __half* p) { return __ldg(p); }

__device__ __forceinline__ unsigned short bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ unsigned short bits16(__half x) { return __half_as_ushort(x); }
// 16 bytes of shared memory (p 16-byte aligned).
__device__ __forceinline__ uint4 ld_shared_vec16(const void* p) { return *reinterpret_cast<const uint4*>(p); }

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<unsigned long long>(p) & 15) == 0; }

// 16 bytes holding copies of v (the fill of a tile chunk whose rows are all masked out).
template <class T>
__device__ __forceinline__ uint4 splat16(T v) {
  uint4 r;
  T* e = reinterpret_cast<T*>(&r);
#pragma unroll
  for (int i = 0; i < static_cast<int>(16 / sizeof(T)); ++i) e[i] = v;
  return r;
}

// -- atomic add: the sum in float32 (float tensors) or the tensor's integer type, rounded to the tensor ---

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(long long* p, long long v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

template <class T, class ToBits, class FromBits>
__device__ __forceinline__ void atomic_add16(T* p, float v, ToBits to_bits, FromBits from_bits) {
  unsigned* word = reinterpret_cast<unsigned*>(reinterpret_cast<unsigned long long>(p) & ~3ULL);
  const unsigned shift = (reinterpret_cast<unsigned long long>(p) & 2) * 8;
  unsigned old = *reinterpret_cast<volatile unsigned*>(word), assumed;
  do {
    assumed = old;
    const float cur = widen(from_bits(static_cast<unsigned short>((assumed >> shift) & 0xffffu)));
    const unsigned bits = to_bits(cvt<T>(cur + v));
    old = atomicCAS(word, assumed, (assumed & ~(0xffffu << shift)) | (bits << shift));
  } while (old != assumed);
}
__device__ __forceinline__ void atomic_add(__nv_bfloat16* p, float v) {
  atomic_add16(p, v, [](__nv_bfloat16 x) { return static_cast<unsigned>(__bfloat16_as_ushort(x)); },
               [](unsigned short b) { return __ushort_as_bfloat16(b); });
}
__device__ __forceinline__ void atomic_add(__half* p, float v) {
  atomic_add16(p, v, [](__half x) { return static_cast<unsigned>(__half_as_ushort(x)); },
               [](unsigned short b) { return __ushort_as_half(b); });
}

// -- dot: C[M][N] (= or +=) A[M][K] @ B[K][N], float32 accumulation ----------------------------------------
// Operands are shared-memory tiles addressed by strides: A(m, k) = A[m * A_SM + k * A_SK], and
// B(k, n) = B[k * B_SK + n * B_SN]; C is float, row-major with leading dimension LDC.

// Plain FMA path: any float operand types and shapes.
template <int M, int N, int K, int NT, bool ACC, int LDC, class TA, int A_SM, int A_SK, class TB, int B_SK,
          int B_SN>
__device__ __forceinline__ void dot_fma(float* C, const TA* A, const TB* B) {
  for (int o = threadIdx.x; o < M * N; o += NT) {
    const int m = o / N, n = o % N;
    const TA* a = A + m * A_SM;
    const TB* b = B + n * B_SN;
    float s = 0.0f;
#pragma unroll 8
    for (int k = 0; k < K; ++k)
      s = fmaf(static_cast<float>(widen(a[k * A_SK])), static_cast<float>(widen(b[k * B_SK])), s);
    float* c = C + m * LDC + n;
    *c = ACC ? *c + s : s;
  }
}

// Tensor-core path for bf16/f16 operands: M % 16 == 0, N % 8 == 0, K % 16 == 0. Each operand is contiguous
// along k (A_KC: A(m, k) = A[m * A_LD + k]; B_KC: B(k, n) = B[n * B_LD + k]) or along m / n (otherwise:
// A(m, k) = A[k * A_LD + m], B(k, n) = B[k * B_LD + n]); leading dimensions are multiples of 8 elements
// and the tiles 16-byte aligned (ldmatrix rows). Warps take 16 x (8 * NJ) output blocks ("jobs")
// round-robin: warp w takes jobs w, w + NW, ...; JPW jobs at most per warp. A register-resident accumulator
// with fewer blocks than warps splits K among KS warps per block (split-K), so that every warp works and
// each stage's chain of dependent mma is KS times shorter; the KS partial sums meet at frag_store.

// acc (one 16 x 8NJ block at (m0, n0), mma fragment layout) += A[m0:m0+16, k0:k0+K] @ B[k0:k0+K, n0:n0+8NJ].
template <int K, class T, bool A_KC, int A_LD, bool B_KC, int B_LD, int NJ>
__device__ __forceinline__ void mma_block(float (&acc)[NJ][4], const T* A, const T* B, int m0, int n0,
                                          int kbase = 0) {
  const int lane = threadIdx.x % 32;
  const int mat = lane >> 3, row = lane & 7;
  A += A_KC ? kbase : kbase * A_LD;
  B += B_KC ? kbase : kbase * B_LD;
#pragma unroll 4
  for (int k0 = 0; k0 < K; k0 += 16) {
    unsigned a[4];
    if (A_KC)
      ldmatrix_x4(a, A + (m0 + (mat & 1) * 8 + row) * A_LD + k0 + (mat >> 1) * 8, false);
    else
      ldmatrix_x4(a, A + (k0 + (mat >> 1) * 8 + row) * A_LD + m0 + (mat & 1) * 8, true);
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      unsigned b[2];
      const int nb = n0 + j * 8, kh = (mat & 1) * 8;
      if (B_KC)
        ldmatrix_x2(b, B + (nb + row) * B_LD + k0 + kh, false);
      else
        ldmatrix_x2(b, B + (k0 + kh + row) * B_LD + nb, true);
      mma_16816<T>(acc[j], a, b);
    }
  }
}

// KS warps per output block (split-K): job = block + slice * BLOCKS.
// RBI (row blocks inner, for streamed dots over several 16-row blocks): a column job is (column group, slice);
// warp w takes column jobs w, w + NW, ... and each of them for every row block in turn (job jj: column job
// w + (jj / MT) * NW, row block jj % MT), so that the weight pieces a column job loads serve all its row
// blocks from the warp's own registers. CPW: column jobs per warp; slot(jj): jj's column job among them;
// loads(jj): whether jj is the first job of its column job (the one that loads and stages its pieces).
template <int M, int N, int NT, int NJ, int KS = 1, bool RBI = false>
struct MmaJobs {
  static constexpr int NW = NT / 32, MT = M / 16, NG = N / (8 * NJ), BLOCKS = MT * NG, JOBS = BLOCKS * KS,
                       CJ = NG * KS, CPW = RBI ? (CJ + NW - 1) / NW : (JOBS + NW - 1) / NW,
                       JPW = RBI ? MT * CPW : CPW;
  static_assert(KS == 1 || (RBI ? CJ : JOBS) <= NW, "split-K gives each warp one (column) job at most");
  // This warp's job jj: false past the last job; otherwise its output block and split-K slice.
  static __device__ __forceinline__ bool at(int jj, int& blk, int& slice) {
    if (RBI) {
      const int cj = static_cast<int>(threadIdx.x) / 32 + (jj / MT) * NW;
      if (CJ % NW != 0 && cj >= CJ) return false;
      blk = (jj % MT) * NG + cj % NG;
      slice = cj / NG;
      return true;
    }
    const int job = static_cast<int>(threadIdx.x) / 32 + jj * NW;
    if (JOBS % NW != 0 && job >= JOBS) return false;
    blk = job % BLOCKS;
    slice = job / BLOCKS;
    return true;
  }
  static __device__ __forceinline__ constexpr bool loads(int jj) { return !RBI || jj % MT == 0; }
  static __device__ __forceinline__ constexpr int slot(int jj) { return RBI ? jj / MT : jj; }
};

// Register-resident accumulator: acc[jj] holds this warp's job jj of C (MmaJobs::at; RBI for streamed dots
// over several row blocks; M x N, float) in fragment layout;
// frag_load / frag_store move it from / to a row-major float tile with leading dimension LDC. With split-K,
// slice 0 starts from C and the others from zero; frag_store writes slice 0, then adds slices 1 ... KS - 1 in
// order (a barrier between them): the sum is the same on every run.
template <int M, int N, int NT, int NJ, int LDC, bool STORE, int KS, bool RBI, int JPW>
__device__ __forceinline__ void frag_move(float (&acc)[JPW][NJ][4], float* C) {
  using J = MmaJobs<M, N, NT, NJ, KS, RBI>;
  const int lane = threadIdx.x % 32;
  const int r = lane >> 2, c = (lane & 3) * 2;
#pragma unroll
  for (int pass = 0; pass < (STORE ? KS : 1); ++pass) {
    if (pass > 0) __syncthreads();
#pragma unroll
    for (int jj = 0; jj < JPW; ++jj) {
      int blk, slice;
      if (!J::at(jj, blk, slice)) continue;
      if (STORE && slice != pass) continue;
      const int m0 = (blk / J::NG) * 16, n0 = (blk % J::NG) * 8 * NJ;
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        float* p = C + (m0 + r) * LDC + n0 + j * 8 + c;
        if (STORE && slice == 0) {
          p[0] = acc[jj][j][0];
          p[1] = acc[jj][j][1];
          p[8 * LDC] = acc[jj][j][2];
          p[8 * LDC + 1] = acc[jj][j][3];
        } else if (STORE) {
          p[0] += acc[jj][j][0];
          p[1] += acc[jj][j][1];
          p[8 * LDC] += acc[jj][j][2];
          p[8 * LDC + 1] += acc[jj][j][3];
        } else if (slice == 0) {
          acc[jj][j][0] = p[0];
          acc[jj][j][1] = p[1];
          acc[jj][j][2] = p[8 * LDC];
          acc[jj][j][3] = p[8 * LDC + 1];
        } else {
          acc[jj][j][0] = acc[jj][j][1] = acc[jj][j][2] = acc[jj][j][3] = 0.0f;
        }
      }
    }
  }
}
template <int M, int N, int NT, int NJ, int LDC, int KS, bool RBI = false, int JPW>
__device__ __forceinline__ void frag_load(float (&acc)[JPW][NJ][4], const float* C) {
  frag_move<M, N, NT, NJ, LDC, false, KS, RBI>(acc, const_cast<float*>(C));
}
template <int M, int N, int NT, int NJ, int LDC, int KS, bool RBI = false, int JPW>
__device__ __forceinline__ void frag_store(float (&acc)[JPW][NJ][4], float* C) {
  frag_move<M, N, NT, NJ, LDC, true, KS, RBI>(acc, C);
}

// acc (register-resident, as above) += A @ B; with split-K, job slice s takes k in [s K / KS, (s + 1) K / KS).
template <int M, int N, int K, int NT, class T, bool A_KC, int A_LD, bool B_KC, int B_LD, int NJ, int KS, int JPW>
__device__ __forceinline__ void dot_mma_regs(float (&acc)[JPW][NJ][4], const T* A, const T* B) {
  using J = MmaJobs<M, N, NT, NJ, KS>;
  static_assert(K % (16 * KS) == 0, "split-K slices are whole k16 steps");
#pragma unroll
  for (int jj = 0; jj < JPW; ++jj) {
    int blk, slice;
    if (!J::at(jj, blk, slice)) continue;
    mma_block<K / KS, T, A_KC, A_LD, B_KC, B_LD, NJ>(acc[jj], A, B, (blk / J::NG) * 16, (blk % J::NG) * 8 * NJ,
                                                     slice * (K / KS));
  }
}

// -- weights streamed into registers: dot with B read from global memory, no CTA barrier ---------------
// For a register-resident accumulator whose B operand is a read-only weight tile W[N][K] (k contiguous),
// as in a GEMV at decode sizes: each warp loads exactly the part of W its own mma jobs (MmaJobs, as
// dot_mma_regs) consume, with 16-byte non-coherent loads on consecutive bytes (a warp instruction reads 512
// contiguous bytes of one row, or 256 of two, ...), into registers iterations ahead of their use. Before the
// dot, each warp passes its pieces through its own shared-memory buffer (stream_stage: only __syncwarp, no CTA
// barrier) to get them in mma-fragment order, and the registers take the next load at once. Consecutive bytes
// per instruction are what lets HBM deliver its copy bandwidth (benchmarks/gemv_paths.py: 98% at M = 1 on H200, against 78-92% when each instruction reads
// eight rows in the fragment pattern). k is permuted inside each 32-wide chunk so that one 16-byte piece feeds
// two k16 steps: lane (g, t) takes W[n0 + 8j + g][kc + 8t .. kc + 8t + 7] from the buffer, and step s in
// {0, 1} of the chunk uses k = kc + 8t + 4s + {0..3} in the fragment slots of k = {2t, 2t + 1, 2t + 8, 2t + 9};
// A (SharedA or GlobalA) is read with the same permutation, so the sum over k is unchanged (only its order
// differs from the ldmatrix path). M may hold several 16-row blocks: then each warp's jobs are a column job for
// every row block in turn (MmaJobs with RBI), so the warp loads and stages the column job's pieces of W once
// and multiplies them by each row block's rows of A.

// 8 16-bit values as the 16 bytes a vector load of them would give.
__device__ __forceinline__ uint4 pack8(const unsigned short (&e)[8]) {
  return make_uint4(e[0] | (unsigned(e[1]) << 16), e[2] | (unsigned(e[3]) << 16), e[4] | (unsigned(e[5]) << 16),
                    e[6] | (unsigned(e[7]) << 16));
}

// Elements p[0], p[cs], ..., p[7 * cs] (16-bit) as the 16 bytes a vector load of them would give; those at
// u < lo or u >= hi read as zero. The element-wise path of streamed loads (tile edges, strided or unaligned
// views): not inlined, so that it stays out of the hot loops' code and register budget; only the pieces that
// take it pay for the call. COHERENT: at L2 (a tensor other tasks write), else the read-only path.
template <class T, bool COHERENT>
__device__ __noinline__ uint4 ld8_masked(const T* p, long long cs, int lo, int hi) {
  unsigned short e[8];
#pragma unroll
  for (int u = 0; u < 8; ++u)
    e[u] = u >= lo && u < hi ? (COHERENT ? ld_cg_u16(p + u * cs) : bits16(ld_ro(p + u * cs)))
                             : static_cast<unsigned short>(0);
  return pack8(e);
}

__device__ __forceinline__ long long clampll(long long v, long long lo, long long hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

template <int M, int N, int K, int NT, int NJ, int KS>
struct StreamShape {
  using J = MmaJobs<M, N, NT, NJ, KS, (M > 16)>;  // several row blocks: each warp's pieces serve all of them
  static constexpr int SEG = K / KS;          // k values of a job per iteration
  static constexpr int KC = SEG / 32;         // 32-wide k chunks per job and iteration
  static constexpr int R = 8 * NJ;            // rows of W per job
  static constexpr int LPR = SEG / 8 < 32 ? SEG / 8 : 32;  // lanes per row in one load instruction
  static constexpr int RPI = 32 / LPR;        // rows per load instruction
  static constexpr int RG = R / RPI;          // load instructions per column block
  static constexpr int NQ = NJ * KC;          // 16-byte pieces per lane and job
  // Row pitch of the per-warp buffer, in elements: rows 64 bytes off a multiple of 128 keep the fragment
  // reads (lanes of a quarter warp on two rows) free of bank conflicts.
  static constexpr int PITCH = ((SEG * 2 + 127) / 128 * 128 + 64) / 2;
  static constexpr int WARP_ELEMS = R * PITCH;  // buffer elements per warp
  static_assert(M % 16 == 0, "weights stream into registers for whole 16-row blocks");
  static_assert(K % (32 * KS) == 0, "each split-K slice is whole 32-wide chunks");
  // Piece q of a lane: row and column (in the job's R x SEG part of the tile) it loads.
  static __device__ __forceinline__ int row(int q, int lane) { return (q % RG) * RPI + lane / LPR; }
  static __device__ __forceinline__ int col(int q, int lane) { return 8 * (lane % LPR) + LPR * 8 * (q / RG); }
};

// r[jj][q / KC][q % KC] = piece q (StreamShape::row / col) of job jj of this warp, for the tile whose origin is
// W + base (elements; row stride ld, column stride cs). Rows [rlo, rhi) and columns [clo, chi) of the tile are
// in bounds, the others read as zero. fast: cs == 1 and every in-bounds 8-column run at a multiple of 8 is
// 16-byte aligned, so that a whole in-bounds run is one vector load.
template <int M, int N, int K, int NT, int NJ, int KS, int JPW, class T>
__device__ __forceinline__ void stream_load(uint4 (&r)[JPW][NJ][StreamShape<M, N, K, NT, NJ, KS>::KC], const T* W,
                                            long long base, long long ld, long long cs, int rlo, int rhi, int clo,
                                            int chi, bool fast) {
  using S = StreamShape<M, N, K, NT, NJ, KS>;
  using J = typename S::J;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int jj = 0; jj < JPW; ++jj) {
    int blk, slice;
    if (!J::loads(jj) || !J::at(jj, blk, slice)) continue;
    const int n0 = (blk % J::NG) * S::R;
#pragma unroll
    for (int q = 0; q < S::NQ; ++q) {
      const int row = n0 + S::row(q, lane), col = slice * S::SEG + S::col(q, lane);
      const bool row_ok = row >= rlo && row < rhi;
      const T* p = W + (base + row * ld + col * cs);
      uint4& v = r[jj][q / S::KC][q % S::KC];
      if (fast && row_ok && col >= clo && col + 8 <= chi) v = ld_vec16_ro(p);
      else v = row_ok ? ld8_masked<T, false>(p, cs, clo - col, chi - col) : make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// The in-bounds version of a streamed loop (every tile in bounds, cs == 1, 16-byte aligned runs): this lane's
// pointer to its first piece of each job, computed once before the loop; load(r, koff) reads the tile koff
// elements further along k. Each piece's address is that pointer plus compile-time multiples of the row step
// and of 8 * LPR, so an iteration costs no 64-bit multiplies and keeps no per-piece addresses live (spilled
// addresses or pieces make a load wait at once, and the loop loses its loads in flight).
template <int M, int N, int K, int NT, int NJ, int KS, int JPW, class T>
struct StreamCursor {
  using S = StreamShape<M, N, K, NT, NJ, KS>;
  using J = typename S::J;
  const T* p[JPW];
  long long rstep;  // elements between rows RPI apart
  __device__ __forceinline__ StreamCursor(const T* W, long long base, long long ld) : rstep(S::RPI * ld) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int jj = 0; jj < JPW; ++jj) {
      int blk, slice;
      p[jj] = W;
      if (J::loads(jj) && J::at(jj, blk, slice))
        p[jj] = W + (base + ((blk % J::NG) * S::R + S::row(0, lane)) * ld + slice * S::SEG + S::col(0, lane));
    }
  }
  __device__ __forceinline__ void load(uint4 (&r)[JPW][NJ][S::KC], int koff) const {
#pragma unroll
    for (int jj = 0; jj < JPW; ++jj) {
      int blk, slice;
      if (!J::loads(jj) || !J::at(jj, blk, slice)) continue;
      const T* b = p[jj] + koff;
#pragma unroll
      for (int q = 0; q < S::NQ; ++q)
        r[jj][q / S::KC][q % S::KC] = ld_vec16_ro(b + (q % S::RG) * rstep + (q / S::RG) * (S::LPR * 8));
    }
  }
};

// stream_load of a tile that lies wholly in bounds, with cs == 1 and 16-byte aligned runs: vector loads only,
// straight into r (no branch per piece, whose merge would wait for each load before issuing the next); the
// cursor's addresses, for one tile.
template <int M, int N, int K, int NT, int NJ, int KS, int JPW, class T>
__device__ __forceinline__ void stream_load_fast(uint4 (&r)[JPW][NJ][StreamShape<M, N, K, NT, NJ, KS>::KC],
                                                 const T* W, long long base, long long ld) {
  StreamCursor<M, N, K, NT, NJ, KS, JPW, T>(W, base, ld).load(r, 0);
}

// The A operand of a streamed dot: vec8(m, k) is A[m][k .. k + 7] (k a multiple of 8) as 16 bytes.
// SharedA: a shared-memory tile, row-major with leading dimension LD (a multiple of 8), 16-byte aligned.
template <class T, int LD>
struct SharedA {
  static_assert(LD % 8 == 0, "16-byte rows of A");
  const T* a;
  __device__ __forceinline__ uint4 vec8(int m, int k) const { return ld_shared_vec16(a + m * LD + k); }
};
// GlobalA: a tile read straight from global memory (no ring, so the loop needs no CTA barrier): through L1
// for a read-only tensor, at L2 for one other tasks write (COHERENT); element (m, k) at p[base + m * ld + k * cs];
// rows [rlo, rhi) and columns [clo, chi) are in bounds, the others read as zero; fast as for stream_load.
// (The in-bounds version of a streamed loop uses GlobalACursor instead.)
template <class T, bool COHERENT>
struct GlobalA {
  const T* p;
  long long base, ld, cs;
  int rlo, rhi, clo, chi;
  bool fast;
  __device__ __forceinline__ uint4 vec8(int m, int k) const {
    if (m < rlo || m >= rhi) return make_uint4(0u, 0u, 0u, 0u);
    const T* q = p + (base + m * ld + k * cs);
    if (fast && k >= clo && k + 8 <= chi) return COHERENT ? ld_vec16_cg(q) : ld_vec16_l1(q);
    return ld8_masked<T, COHERENT>(q, cs, clo - k, chi - k);
  }
};

// Rows m0 + g and m0 + g + 8 of A at column k, for this lane's g: what a streamed dot's fragments read.
template <class AT>
__device__ __forceinline__ void a_rows(const AT& A, int m0, int k, uint4& lo, uint4& hi) {
  const int g = (threadIdx.x % 32) >> 2;
  lo = A.vec8(m0 + g, k);
  hi = A.vec8(m0 + g + 8, k);
}

// GlobalA in the in-bounds version of a streamed loop: this lane's row g of the first iteration's tile, computed
// once before the loop (first); at(koff) is the tile koff elements further along k. Row blocks after the first
// (m0 > 0) add m0 rows; rows outside [rlo, rhi) read as zero.
template <class T, bool COHERENT>
struct GlobalACursor {
  const T* lo;
  long long ld;
  int rlo, rhi;
  static __device__ __forceinline__ GlobalACursor first(const T* p, long long base, long long ld, int rlo, int rhi) {
    return {p + (base + ((threadIdx.x % 32) >> 2) * ld), ld, rlo, rhi};
  }
  __device__ __forceinline__ GlobalACursor at(int koff) const { return {lo + koff, ld, rlo, rhi}; }
};
template <class T, bool COHERENT>
__device__ __forceinline__ void a_rows(const GlobalACursor<T, COHERENT>& A, int m0, int k, uint4& l, uint4& h) {
  const int g = (threadIdx.x % 32) >> 2;
  const T* p = A.lo + m0 * A.ld + k;
  const bool lo_ok = m0 + g >= A.rlo && m0 + g < A.rhi, hi_ok = m0 + g + 8 >= A.rlo && m0 + g + 8 < A.rhi;
  l = lo_ok ? (COHERENT ? ld_vec16_cg(p) : ld_vec16_l1(p)) : make_uint4(0u, 0u, 0u, 0u);
  h = hi_ok ? (COHERENT ? ld_vec16_cg(p + 8 * A.ld) : ld_vec16_l1(p + 8 * A.ld)) : make_uint4(0u, 0u, 0u, 0u);
}

// Put the pieces r holds (stream_load of the same shape) in fragment order: each warp writes them to its part of
// `stage` (MmaJobs::CPW * StreamShape::WARP_ELEMS elements per warp, 16-byte aligned), only __syncwarp around (the first:
// the warp is done reading what its part held before). After it, r is free: the loop loads the pieces of a later
// iteration into the same registers while the dot reads the stage, so a loop keeps one register buffer per
// iteration in flight and none for the iteration it computes.
template <int M, int N, int K, int NT, int NJ, int KS, int JPW, class T>
__device__ __forceinline__ void stream_stage(const uint4 (&r)[JPW][NJ][StreamShape<M, N, K, NT, NJ, KS>::KC], T* stage) {
  using S = StreamShape<M, N, K, NT, NJ, KS>;
  using J = typename S::J;
  const int lane = threadIdx.x % 32;
  T* buf = stage + (threadIdx.x / 32) * (J::CPW * S::WARP_ELEMS);
  __syncwarp();
#pragma unroll
  for (int jj = 0; jj < JPW; ++jj) {
    int blk, slice;
    if (!J::loads(jj) || !J::at(jj, blk, slice)) continue;
#pragma unroll
    for (int q = 0; q < S::NQ; ++q)
      st_shared_vec16(buf + J::slot(jj) * S::WARP_ELEMS + S::row(q, lane) * S::PITCH + S::col(q, lane),
                      r[jj][q / S::KC][q % S::KC]);
  }
  __syncwarp();
}

// acc += A @ W^T for the pieces stream_stage put in `stage`; A is SharedA, GlobalA or a GlobalACursor at its iteration.
template <int M, int N, int K, int NT, class T, int NJ, int KS, int JPW, class AT>
__device__ __forceinline__ void dot_mma_staged(float (&acc)[JPW][NJ][4], const AT& A, const T* stage) {
  using S = StreamShape<M, N, K, NT, NJ, KS>;
  using J = typename S::J;
  const int lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const T* buf = stage + (threadIdx.x / 32) * (J::CPW * S::WARP_ELEMS);
#pragma unroll
  for (int jj = 0; jj < JPW; ++jj) {
    int blk, slice;
    if (!J::at(jj, blk, slice)) continue;
    const int m0 = M > 16 ? (blk / J::NG) * 16 : 0;  // the job's row block
#pragma unroll
    for (int c = 0; c < S::KC; ++c) {
      const int col = slice * S::SEG + 32 * c + 8 * t;
      uint4 lo, hi;
      a_rows(A, m0, col, lo, hi);
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const uint4 w = ld_shared_vec16(buf + J::slot(jj) * S::WARP_ELEMS + (8 * j + g) * S::PITCH + 32 * c + 8 * t);
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          const unsigned a[4] = {s ? lo.z : lo.x, s ? hi.z : hi.x, s ? lo.w : lo.y, s ? hi.w : hi.y};
          const unsigned b[2] = {s ? w.z : w.x, s ? w.w : w.y};
          mma_16816<T>(acc[jj][j], a, b);
        }
      }
    }
  }
}

// C (= or +=) A @ B through shared memory.
template <int M, int N, int K, int NT, bool ACC, int LDC, class T, bool A_KC, int A_LD, bool B_KC, int B_LD, int NJ>
__device__ __forceinline__ void dot_mma(float* C, const T* A, const T* B) {
  constexpr int NW = NT / 32, MT = M / 16, NG = N / (8 * NJ);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int job = warp; job < MT * NG; job += NW) {
    const int m0 = (job / NG) * 16, n0 = (job % NG) * 8 * NJ;
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    mma_block<K, T, A_KC, A_LD, B_KC, B_LD, NJ>(acc, A, B, m0, n0);
    const int r = lane >> 2, c = (lane & 3) * 2;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      float* p = C + (m0 + r) * LDC + n0 + j * 8 + c;
      if (ACC) {
        p[0] += acc[j][0];
        p[1] += acc[j][1];
        p[8 * LDC] += acc[j][2];
        p[8 * LDC + 1] += acc[j][3];
      } else {
        p[0] = acc[j][0];
        p[1] = acc[j][1];
        p[8 * LDC] = acc[j][2];
        p[8 * LDC + 1] = acc[j][3];
      }
    }
  }
}

// -- reductions --------------------------------------------------------------------------------------

template <class A>
struct OpSum {
  static __device__ __forceinline__ A init() { return A(0); }
  static __device__ __forceinline__ A combine(A a, A b) { return a + b; }
};
template <class A>
struct OpMax {
  static __device__ __forceinline__ A init() { return lowest<A>(); }
  static __device__ __forceinline__ A combine(A a, A b) { return maximum(a, b); }
};
template <class A>
struct OpMin {
  static __device__ __forceinline__ A init() { return highest<A>(); }
  static __device__ __forceinline__ A combine(A a, A b) { return minimum(a, b); }
};

// Reduce R rows of length L: elem(r, k) gives element k of row r (as the accumulator type A), out(r, a)
// stores a row's result. G threads (a power of two <= 32) share a row and combine with warp shuffles; with
// WPR > 1, WPR whole warps share a row (R * WPR <= NT / 32) and combine through `scratch` (R * WPR values).
template <int R, int L, int NT, int G, int WPR, class Op, class A, class Elem, class Out>
__device__ __forceinline__ void reduce_rows(A* scratch, Elem elem, Out out) {
  if constexpr (WPR == 1) {
    constexpr int RPP = NT / G;
    const int lane = threadIdx.x % G, grp = threadIdx.x / G;
    for (int r0 = 0; r0 < R; r0 += RPP) {
      const int r = r0 + grp;
      A a = Op::init();
      if (r < R)
        for (int k = lane; k < L; k += G) a = Op::combine(a, elem(r, k));
#pragma unroll
      for (int off = G / 2; off > 0; off >>= 1) a = Op::combine(a, __shfl_xor_sync(0xffffffffu, a, off));
      if (r < R && lane == 0) out(r, a);
    }
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int r = warp / WPR, part = warp % WPR;
    A a = Op::init();
    if (r < R)
      for (int k = part * 32 + lane; k < L; k += WPR * 32) a = Op::combine(a, elem(r, k));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) a = Op::combine(a, __shfl_xor_sync(0xffffffffu, a, off));
    if (r < R && lane == 0) scratch[r * WPR + part] = a;
    __syncthreads();
    if (threadIdx.x < R) {
      A t = scratch[threadIdx.x * WPR];
#pragma unroll
      for (int p = 1; p < WPR; ++p) t = Op::combine(t, scratch[threadIdx.x * WPR + p]);
      out(threadIdx.x, t);
    }
  }
}

}  // namespace evt
