// evt_ptx.cuh (host emulation): the same functions as include/evt_ptx.cuh, for a host build with
// evt_emu.h. Warp-collective instructions exchange their operands through the warp's slots and follow the
// PTX ISA fragment layouts; cp.async copies are deferred until the wait that completes their group, and
// their destinations are poisoned at issue, so a read before the wait sees garbage.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace evt {

inline char* dynamic_smem() { return evt_emu::smem; }

inline int ld_acquire(const int* p) {
  return std::atomic_ref<int>(*const_cast<int*>(p)).load(std::memory_order_acquire);
}
inline int ld_relaxed(const int* p) {
  return std::atomic_ref<int>(*const_cast<int*>(p)).load(std::memory_order_relaxed);
}
inline void fence_acquire() { std::atomic_thread_fence(std::memory_order_acquire); }
inline void st_release(int* p, int v) { std::atomic_ref<int>(*p).store(v, std::memory_order_release); }
inline int atom_add_acq_rel(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v, std::memory_order_acq_rel); }
inline unsigned long long globaltimer() {
  return static_cast<unsigned long long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

inline unsigned smid() { return 0; }  // one emulated CTA on one SM

inline uint4 ld_vec16(const void* p) {
  evt_emu::check_aligned16(p, "misaligned 16-byte global load");
  uint4 v;
  std::memcpy(&v, p, 16);
  return v;
}
inline uint4 ld_vec16_ro(const void* p) { return ld_vec16(p); }
inline uint4 ld_vec16_l1(const void* p) { return ld_vec16(p); }
inline uint4 ld_vec16_cg(const void* p) { return ld_vec16(p); }
inline unsigned short ld_cg_u16(const void* p) {
  unsigned short v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void st_shared_vec16(void* smem, uint4 v) {
  evt_emu::check_aligned16(smem, "misaligned 16-byte shared store");
  std::memcpy(smem, &v, 16);
}

struct PendingCopy {
  void* dst;
  const void* src;
};
inline thread_local std::vector<PendingCopy> open_group;
inline thread_local std::deque<std::vector<PendingCopy>> committed_groups;

inline void cp_async16(void* smem, const void* gmem) {
  evt_emu::check_aligned16(smem, "misaligned cp.async destination");
  evt_emu::check_aligned16(gmem, "misaligned cp.async source");
  std::memset(smem, 0xff, 16);
  open_group.push_back({smem, gmem});
}
inline void cp_async_commit() {
  committed_groups.push_back(std::move(open_group));
  open_group.clear();
}
template <int N>
inline void cp_async_wait() {
  while (committed_groups.size() > static_cast<size_t>(N)) {
    for (const PendingCopy& c : committed_groups.front()) std::memcpy(c.dst, c.src, 16);
    committed_groups.pop_front();
  }
}

// L2 prefetch: recorded (the 16-byte-aligned range, as the GPU version prefetches it) for the tests to check
// that every range lies inside an argument.
inline void prefetch_l2(const void* p, long long bytes) {
  const std::uintptr_t a = (reinterpret_cast<std::uintptr_t>(p) + 15) & ~std::uintptr_t(15);
  const std::uintptr_t b = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~std::uintptr_t(15);
  if (b <= a) return;
  std::lock_guard<std::mutex> g(evt_emu::prefetch_mu);
  evt_emu::prefetched.push_back({a, b - a});
}

// ldmatrix: lane 8j + r gives the address of row r of 8x8 matrix j; lane l receives, for each matrix, the
// two b16 elements (l / 4, 2 (l % 4) + h) of the matrix, or of its transpose with .trans.
template <int COUNT>
inline void ldmatrix(unsigned* r, const void* p, bool trans) {
  evt_emu::check_aligned16(p, "misaligned ldmatrix row");
  evt_emu::Warp& w = evt_emu::warp();
  const int l = evt_emu::lane();
  std::memcpy(w.slot[l], &p, sizeof(p));
  w.bar.arrive_and_wait();
  for (int j = 0; j < COUNT; ++j) {
    unsigned short e[2];
    for (int h = 0; h < 2; ++h) {
      const int row = trans ? 2 * (l % 4) + h : l / 4;
      const int col = trans ? l / 4 : 2 * (l % 4) + h;
      const char* row_addr;
      std::memcpy(&row_addr, w.slot[8 * j + row], sizeof(row_addr));
      std::memcpy(&e[h], row_addr + 2 * col, 2);
    }
    r[j] = e[0] | (static_cast<unsigned>(e[1]) << 16);
  }
  w.bar.arrive_and_wait();
}
inline void ldmatrix_x4(unsigned (&r)[4], const void* p, bool trans) { ldmatrix<4>(r, p, trans); }
inline void ldmatrix_x2(unsigned (&r)[2], const void* p, bool trans) { ldmatrix<2>(r, p, trans); }

inline float b16_value(unsigned short bits, __nv_bfloat16*) { return __bfloat162float({bits}); }
inline float b16_value(unsigned short bits, __half*) { return __half2float({bits}); }

// mma.m16n8k16.row.col: lane l (group g = l / 4, t = l % 4) holds A(g + 8 (i & 1), 2t + 8 (i >> 1) + h) in
// a[i], B(2t + 8 i + h, g) in b[i], and C/D(g + 8 (i >> 1), 2t + (i & 1)) in d[i].
template <class T>
inline void mma_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  struct Frag {
    unsigned a[4], b[2];
  };
  evt_emu::Warp& w = evt_emu::warp();
  const int l = evt_emu::lane();
  Frag mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  std::memcpy(w.slot[l], &mine, sizeof(Frag));
  w.bar.arrive_and_wait();
  auto elem = [&](unsigned reg, int h) { return static_cast<unsigned short>(h ? reg >> 16 : reg & 0xffffu); };
  auto A = [&](int r, int k) {
    Frag f;
    std::memcpy(&f, w.slot[(r % 8) * 4 + (k % 8) / 2], sizeof(Frag));
    return b16_value(elem(f.a[(r >= 8) + 2 * (k >= 8)], k % 2), static_cast<T*>(nullptr));
  };
  auto B = [&](int k, int n) {
    Frag f;
    std::memcpy(&f, w.slot[n * 4 + (k % 8) / 2], sizeof(Frag));
    return b16_value(elem(f.b[k >= 8], k % 2), static_cast<T*>(nullptr));
  };
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int r = l / 4 + 8 * (i >> 1), c = 2 * (l % 4) + (i & 1);
    float s = d[i];
    for (int k = 0; k < 16; ++k) s = std::fma(A(r, k), B(k, c), s);
    out[i] = s;
  }
  w.bar.arrive_and_wait();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

}  // namespace evt
