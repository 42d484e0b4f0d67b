// evt_emu.h: the CUDA built-ins the runtime headers and generated kernels use, for a host C++20 build that
// runs ONE CTA with one std::thread per CUDA thread (tests/test_cuda_emulate.py). __syncthreads is a
// std::barrier; warp shuffles and the warp-collective PTX emulations (evt_ptx.cuh beside this file) go
// through per-warp exchange slots. Problems a GPU would not report clearly (a misaligned vector access)
// are counted in evt_emu::errors, which the launch returns.
#pragma once
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static
#define __align__(n) alignas(n)

struct evt_dim3 {
  unsigned x, y, z;
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

namespace evt_emu {

struct Warp {
  std::barrier<> bar{32};
  alignas(16) unsigned char slot[32][64];
};

struct Block {
  explicit Block(int nt) : bar(nt) {
    for (int w = 0; w < nt / 32; ++w) warps.emplace_back(new Warp);
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local evt_dim3 thread_idx{0, 0, 0};
inline Block* block = nullptr;
inline char* smem = nullptr;
inline std::atomic<int> errors{0};
// L2 prefetches issued during the last run_block: (address, bytes).
inline std::mutex prefetch_mu;
inline std::vector<std::pair<std::uintptr_t, std::uintptr_t>> prefetched;

inline int lane() { return static_cast<int>(thread_idx.x % 32); }
inline Warp& warp() { return *block->warps[thread_idx.x / 32]; }

inline void fail(const char* what, const void* p) {
  if (errors.fetch_add(1) < 8) std::fprintf(stderr, "evt_emu: %s (address %p)\n", what, p);
}

inline void check_aligned16(const void* p, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % 16) fail(what, p);
}

// Run `body` as one CTA of `nt` threads with `smem_bytes` of dynamic shared memory.
template <class F>
int run_block(int nt, long smem_bytes, F body) {
  std::vector<char> mem(static_cast<size_t>(smem_bytes) + 256, 0);
  smem = reinterpret_cast<char*>((reinterpret_cast<std::uintptr_t>(mem.data()) + 127) & ~std::uintptr_t(127));
  Block b(nt);
  block = &b;
  errors = 0;
  prefetched.clear();
  std::vector<std::thread> threads;
  for (int t = 0; t < nt; ++t)
    threads.emplace_back([t, &body] {
      thread_idx = evt_dim3{static_cast<unsigned>(t), 0, 0};
      body();
    });
  for (auto& th : threads) th.join();
  block = nullptr;
  return errors.load();
}

}  // namespace evt_emu

#define threadIdx (evt_emu::thread_idx)
inline const evt_dim3 blockIdx{0, 0, 0};
inline const evt_dim3 gridDim{1, 1, 1};

inline void __syncthreads() { evt_emu::block->bar.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { evt_emu::warp().bar.arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __nanosleep(unsigned) { std::this_thread::yield(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int off) {
  evt_emu::Warp& w = evt_emu::warp();
  const int l = evt_emu::lane();
  std::memcpy(w.slot[l], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, w.slot[l ^ off], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}

template <class T>
inline T __ldg(const T* p) { return *p; }

inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
template <class T>
inline T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;
}
inline int atomicExch(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v); }

inline float __int_as_float(unsigned bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline double __longlong_as_double(unsigned long long bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
inline float __expf(float x) { return std::exp(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// bf16 and f16: storage and round-to-nearest-even conversions, as cuda_bf16.h / cuda_fp16.h.
struct __nv_bfloat16 {
  unsigned short x;
};
struct __half {
  unsigned short x;
};
inline float __bfloat162float(__nv_bfloat16 h) { return __int_as_float(static_cast<unsigned>(h.x) << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<unsigned short>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<unsigned short>(u >> 16)};
}
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return {b}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.x, 2);
  return static_cast<float>(f);
}
inline __half __float2half_rn(float f) {
  const _Float16 h = static_cast<_Float16>(f);
  __half r;
  std::memcpy(&r.x, &h, 2);
  return r;
}
inline __half __ushort_as_half(unsigned short b) { return {b}; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
