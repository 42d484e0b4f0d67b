// evt_ptx.cuh: every inline-PTX instruction the runtime uses, one small function each, and the
// kernel's dynamic shared memory. Nothing else in the runtime headers is written in PTX, so a host build
// can replace this one file (emulate/evt_ptx.cuh) and run the rest of the runtime and the generated code.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace evt {

__device__ __forceinline__ char* dynamic_smem() {
  extern __shared__ __align__(128) char evt_dynamic_smem[];
  return evt_dynamic_smem;
}

// -- memory ordering (events and queues) ---------------------------------------------------------------

__device__ __forceinline__ int ld_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// A relaxed poll (no ordering of its own) and the acquire fence that orders what follows once it saw the
// value: polling this way keeps the acquire's cost off every poll but the last.
__device__ __forceinline__ int ld_relaxed(const int* p) {
  int v;
  asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void fence_acquire() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }

__device__ __forceinline__ void st_release(int* p, int v) {
  asm volatile("st.release.gpu.global.b32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ int atom_add_acq_rel(int* p, int v) {
  int old;
  asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned smid() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}

// -- 16-byte global loads ------------------------------------------------------------------------------

__device__ __forceinline__ uint4 ld_vec16(const void* p) {
  uint4 v;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// For tensors no task writes during the kernel: the non-coherent path, not allocating in L1.
__device__ __forceinline__ uint4 ld_vec16_ro(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Read-only and small (the x tile of a decode GEMV that every warp reads): the non-coherent path, kept in L1.
// The intrinsic (ld.global.nc) rather than volatile asm: the compiler may issue these loads early, batched
// ahead of the tensor-core instructions that use them, instead of one at a time in program order.
__device__ __forceinline__ uint4 ld_vec16_l1(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// Tensors other tasks write during the kernel (ordered by events): at L2, the point of coherence, never L1.
__device__ __forceinline__ uint4 ld_vec16_cg(const void* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ unsigned short ld_cg_u16(const void* p) {
  unsigned short v;
  asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ void st_shared_vec16(void* smem, uint4 v) { *reinterpret_cast<uint4*>(smem) = v; }

// -- cp.async: 16 bytes global -> shared, bypassing L1; completion per thread through groups ------------

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// -- L2 prefetch: a hint that brings [p, p + bytes) into L2 (no register or shared memory is written) ----------

// The 16-byte-aligned part of the range: one bulk prefetch on sm_90 and later, one prefetch per 128-byte line
// before.
__device__ __forceinline__ void prefetch_l2(const void* p, long long bytes) {
  const unsigned long long a = (reinterpret_cast<unsigned long long>(p) + 15) & ~15ull;
  const unsigned long long b = (reinterpret_cast<unsigned long long>(p) + bytes) & ~15ull;
  if (b <= a) return;
#if __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(static_cast<unsigned>(b - a)) : "memory");
#else
  for (unsigned long long x = a; x < b; x += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(x));
#endif
}

// -- tensor cores --------------------------------------------------------------------------------------

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Four (x4) or two (x2) 8x8 b16 matrices; lane 8j + r gives the address of row r of matrix j.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldmatrix_x2(unsigned (&r)[2], const void* p, bool trans) {
  if (trans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
}

// D (16x8 f32) += A (16x16) * B (16x8), A row-major and B column-major fragments.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4],
                                                         const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace evt
