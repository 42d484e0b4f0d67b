// evt_sched.cuh: event counters, bounded waits, the static and dynamic schedules, and the error record.
//
// State (one int32 buffer per launch, reset from a pristine copy on the stream before each launch):
//   ctl[CTL_WORDS] | counters[num_elements] | done[num_instances] | pending[num_instances] | ring[num_instances]
// - counters: one per event element, starting at its wait count; a notify decrements it (acq_rel atomic);
//   the element has fired at zero.
// - static schedule: CTA b runs queue_inst[queue_ptr[b] .. queue_ptr[b + 1]) in order, waiting on each
//   instance's elements (relaxed polls and an acquire fence, __nanosleep back-off, bounded by timeout_ns on
//   %globaltimer).
// - per task, thread 0 reads the instance's tables with independent loads (the next static queue entry is
//   prefetched a task ahead) and publishes launch, coordinates and notify range in shared memory.
// - dynamic schedule: pending[i] counts i's wait elements that have not fired; ring holds ready instances.
//   Each instance is pushed exactly once, so the ring never wraps: a CTA takes a ticket (its first is its
//   blockIdx.x, later ones gridDim.x + atomic head) and waits for that slot to be filled; a ticket >=
//   num_instances means all work is taken, and it exits.
//   When a notify fires an element, all threads of the notifying CTA push its waiters in parallel.
// - prefetch while waiting (static schedule): an instance whose elements have not all fired when its CTA
//   takes it first brings the read-only tiles of its first loop into L2, a part (PREFETCH_PART_BYTES, at
//   most PREFETCH_MAX_PARTS of them) at a time, and waits up to PREFETCH_PACE_NS between parts; so a waiting
//   CTA keeps about its share of the memory bandwidth busy, and what it prefetched stays in L2 until it
//   runs. The generated code says which tiles (evt_prefetch_<task>).
// - errors: the first CTA that fails CASes its code into ctl[CTL_ERROR], writes instance, element and extra,
//   and raises ctl[CTL_ABORT]; every CTA polls the abort flag in its spin loops and between tasks, so all
//   exit and the host can read the record after the kernel ends.
#pragma once
#include <evt_ptx.cuh>  // from the include path, so that a host build can substitute its emulation

namespace evt {

enum : int {
  CTL_ERROR = 0,
  CTL_INST = 1,
  CTL_ELEM = 2,
  CTL_EXTRA = 3,
  CTL_ABORT = 4,
  CTL_HEAD = 5,
  CTL_TAIL = 6,
  CTL_WORDS = 8,
};

enum : int {
  ERR_WAIT_TIMEOUT = 1,   // an instance waited too long on an element (inst, elem)
  ERR_QUEUE_TIMEOUT = 2,  // a CTA waited too long for ready-queue slot `extra` (dynamic schedule)
  ERR_OVER_NOTIFY = 3,    // inst notified elem after it had fired (extra: the counter's new value)
  ERR_INDEX = 4,          // a scalar index read out of bounds (extra: the checked site, debug builds)
};

// Host-built tables (int32 arrays on the device) and launch constants. Every field is 8 bytes; the host
// packs them in this order (codegen checks the offsets with static_asserts).
struct Sched {
  const int* inst_launch;  // instance -> launch index
  const int* inst_coord;   // instance -> coordinates, coord_stride ints each
  const int* wait_ptr;     // CSR: instance -> element ids it waits on
  const int* wait_elem;
  const int* notify_ptr;   // CSR: instance -> element ids it notifies
  const int* notify_elem;
  const int* waiter_ptr;   // CSR: element -> instances that wait on it (dynamic schedule)
  const int* waiter_inst;
  const int* queue_ptr;    // CSR: CTA -> its static queue
  const int* queue_inst;
  int* state;
  long long num_instances;
  long long num_elements;
  long long coord_stride;
  long long timeout_ns;
  long long dynamic;
  // Task timeline, or null: instance i's CTA writes trace[4 i ..] = %globaltimer when it took i, when i's
  // events had fired (its body starts), when its notifies were done, and (SM id << 32) | CTA.
  long long* trace;
};

__device__ __forceinline__ int* counters(const Sched& s) { return s.state + CTL_WORDS; }
__device__ __forceinline__ int* done_flags(const Sched& s) { return counters(s) + s.num_elements; }
__device__ __forceinline__ int* pending(const Sched& s) { return done_flags(s) + s.num_instances; }
__device__ __forceinline__ int* ring(const Sched& s) { return pending(s) + s.num_instances; }

__device__ __forceinline__ bool aborted(const int* ctl) {
  return *reinterpret_cast<const volatile int*>(ctl + CTL_ABORT) != 0;
}

// Record an error (the first one wins) and tell every CTA to stop.
__device__ __noinline__ void raise_error(int* ctl, int code, int inst, int elem, int extra) {
  if (atomicCAS(ctl + CTL_ERROR, 0, code) == 0) {
    ctl[CTL_INST] = inst;
    ctl[CTL_ELEM] = elem;
    ctl[CTL_EXTRA] = extra;
  }
  __threadfence();
  atomicExch(ctl + CTL_ABORT, 1);
}

// How a wait polls its counter: EVT_SPIN_MAX_NS caps the __nanosleep back-off (it doubles from 16 ns), and with
// EVT_SPIN_RELAXED the polls are relaxed loads and an acquire fence follows the one that saw the value.
// Many CTAs may poll one counter while its notifiers' atomics queue behind their loads at the same L2 slice.
#ifndef EVT_SPIN_MAX_NS
#define EVT_SPIN_MAX_NS 128
#endif
// Relaxed polls measured on the H200: the 8B SwiGLU at M = 1 went from 102.6 to 99.6 us, and with down tiles
// that all wait on one counter from 107.8 to 100.2 us (benchmarks/results/gemv-diagnose-h200-20261204-031834).
#ifndef EVT_SPIN_RELAXED
#define EVT_SPIN_RELAXED 1
#endif

__device__ __forceinline__ int poll_counter(const int* p) { return EVT_SPIN_RELAXED ? ld_relaxed(p) : ld_acquire(p); }

// Spin (polls as above) until *p satisfies ready(v). The abort flag and %globaltimer are checked every 8th
// poll, off the fast path. False on abort or timeout; a timeout raises `code` with (inst, elem, extra).
template <class Ready>
__device__ __forceinline__ bool spin_until(const Sched& s, const int* p, Ready ready, int code, int inst, int elem,
                                           int extra, int* value) {
  int v = ld_acquire(p);
  if (ready(v)) {
    *value = v;
    return true;
  }
  int* ctl = s.state;
  const unsigned long long t0 = globaltimer();
  unsigned ns = 16;
  for (unsigned it = 1;; ++it) {
    __nanosleep(ns);
    if (ns < EVT_SPIN_MAX_NS) ns *= 2;
    v = poll_counter(p);
    if (ready(v)) {
      if (EVT_SPIN_RELAXED) fence_acquire();
      *value = v;
      return true;
    }
    if ((it & 7) == 0) {
      if (aborted(ctl)) return false;
      if (globaltimer() - t0 > static_cast<unsigned long long>(s.timeout_ns)) {
        raise_error(ctl, code, inst, elem, extra);
        return false;
      }
    }
  }
}

// Prefetch while waiting: bytes per part (split among a task's prefetched tiles), parts at most, and the
// longest wait between two parts (about a CTA's share of the bandwidth: 32 KB in 2 us is 16 GB/s).
constexpr int PREFETCH_PART_BYTES = 32 * 1024;
constexpr int PREFETCH_MAX_PARTS = 16;
constexpr long long PREFETCH_PACE_NS = 2000;
// Host builds of the runtime's tests set this to 1: every instance that has wait elements runs all its
// prefetch parts, ready or not, so that one emulated CTA exercises the prefetch code.
#ifndef EVT_PREFETCH_ALWAYS
#define EVT_PREFETCH_ALWAYS 0
#endif

// Fired elements whose waiters one dynamic-schedule task hands to all its threads to push (more are pushed by
// thread 0 alone).
constexpr int MAX_FIRED = 32;

// What thread 0 publishes to its CTA for each task (shared memory): the instance (-1: exit), its launch and
// coordinates, its notify range and first notify element (prefetched before the task body runs), and in the
// dynamic schedule the elements its notifies fired; whether it must still wait (static schedule: some of its
// elements had not fired when thread 0 looked) and, while it waits, thread 0's verdict after each prefetch part.
template <int MAXC>
struct TaskSlot {
  int inst, launch, n0, n1, nel0, nfired, wp0, wp1, waiting, wstate;
  int coord[MAXC];
  int fired[MAX_FIRED];
};

// Thread 0: read instance `inst`'s tables (all independent loads, issued together) and, in the static schedule,
// look at its elements once: `wpos` is the first that has not fired (w1 when all have); fill `slot`. False on
// abort.
template <int MAXC>
__device__ __forceinline__ bool prepare_instance(const Sched& s, int inst, TaskSlot<MAXC>& slot, int& wpos,
                                                 int& wend) {
  const int ab = *reinterpret_cast<const volatile int*>(s.state + CTL_ABORT);
  const int launch = __ldg(s.inst_launch + inst);
  const int n0 = __ldg(s.notify_ptr + inst), n1 = __ldg(s.notify_ptr + inst + 1);
  int w0 = 0, w1 = 0;
  if (!s.dynamic) {
    w0 = __ldg(s.wait_ptr + inst);
    w1 = __ldg(s.wait_ptr + inst + 1);
  }
  int c[MAXC];
  const int* cp = s.inst_coord + static_cast<long long>(inst) * s.coord_stride;
#pragma unroll
  for (int k = 0; k < MAXC; ++k) c[k] = k < s.coord_stride ? __ldg(cp + k) : 0;
  const int nel0 = n0 < n1 ? __ldg(s.notify_elem + n0) : -1;
  int w = w0;
  while (w < w1 && ld_acquire(counters(s) + __ldg(s.wait_elem + w)) <= 0) ++w;
  if (ab) return false;
  wpos = w;
  wend = w1;
  slot.waiting = w < w1 || (EVT_PREFETCH_ALWAYS && w0 < w1);
  slot.launch = launch;
  slot.n0 = n0;
  slot.n1 = n1;
  slot.nel0 = nel0;
#pragma unroll
  for (int k = 0; k < MAXC; ++k) slot.coord[k] = c[k];
  return true;
}

// Thread 0: wait for elements [wpos, wend) to fire, advancing wpos. With budget_ns > 0, give up after that
// long. 0: all fired; 1: still waiting (budget spent); -1: abort or timeout (recorded).
__device__ __forceinline__ int wait_elements(const Sched& s, int inst, int& wpos, int wend, long long budget_ns) {
  const unsigned long long t0 = budget_ns > 0 ? globaltimer() : 0;
  int v;
  for (; wpos < wend; ++wpos) {
    const int el = __ldg(s.wait_elem + wpos);
    if (budget_ns <= 0) {
      if (!spin_until(s, counters(s) + el, [](int x) { return x <= 0; }, ERR_WAIT_TIMEOUT, inst, el, 0, &v))
        return -1;
      continue;
    }
    while (poll_counter(counters(s) + el) > 0) {
      if (aborted(s.state)) return -1;
      if (globaltimer() - t0 > static_cast<unsigned long long>(budget_ns)) return 1;
      __nanosleep(64);
    }
    if (EVT_SPIN_RELAXED) fence_acquire();
  }
  return 0;
}

// Thread 0, dynamic schedule: take a ticket and wait for its ready-queue slot; -1 when all work is taken.
// The first ticket of CTA b is b (as the static schedule deals its first instances), so the instances ready at
// the start spread over the SMs like static queues; later tickets come from the atomic head, after gridDim.x.
__device__ __forceinline__ int take_ticket(const Sched& s, bool first) {
  int* ctl = s.state;
  const int ticket = first ? static_cast<int>(blockIdx.x) : static_cast<int>(gridDim.x) + atomicAdd(ctl + CTL_HEAD, 1);
  if (ticket >= s.num_instances) return -1;
  int v;
  if (!spin_until(s, ring(s) + ticket, [](int i) { return i >= 0; }, ERR_QUEUE_TIMEOUT, -1, -1, ticket, &v))
    return -1;
  return v;
}

// A waiter of an element that just fired: push it if that was its last pending element. Entry ~w marks an
// element that is w's only pending one (host tables): push at once; the decrement's result is not needed.
__device__ __forceinline__ void push_if_ready(const Sched& s, int w) {
  if (w < 0) {
    w = ~w;
    atomicAdd(pending(s) + w, -1);
  } else if (atom_add_acq_rel(pending(s) + w, -1) != 1) {
    return;
  }
  st_release(ring(s) + atomicAdd(s.state + CTL_TAIL, 1), w);
}

// Thread 0, after the task body and a CTA barrier: release the task's writes through its notifies (each an
// acq_rel atomic, cumulative over the CTA's writes ordered by the barrier). Returns how many fired elements
// with waiters it left in slot.fired (dynamic schedule; beyond MAX_FIRED it pushes their waiters itself).
template <int MAXC>
__device__ __forceinline__ int notify_instance(const Sched& s, int inst, TaskSlot<MAXC>& slot) {
  int* ctl = s.state;
  int nf = 0;
  const int n0 = slot.n0, n1 = slot.n1;
  int wp0 = 0, wp1 = 0;  // waiters of the first notify element, loaded while its atomic is in flight
  if (s.dynamic && n0 < n1) {
    wp0 = __ldg(s.waiter_ptr + slot.nel0);
    wp1 = __ldg(s.waiter_ptr + slot.nel0 + 1);
  }
  for (int n = n0; n < n1; ++n) {
    const int el = n == n0 ? slot.nel0 : __ldg(s.notify_elem + n);
    const int old = atom_add_acq_rel(counters(s) + el, -1);
    if (old <= 0) {
      raise_error(ctl, ERR_OVER_NOTIFY, inst, el, old - 1);
      continue;
    }
    if (old != 1 || !s.dynamic) continue;
    if (nf < MAX_FIRED) {
      slot.fired[nf++] = el;
    } else {
      const int e1 = __ldg(s.waiter_ptr + el + 1);
      for (int e = __ldg(s.waiter_ptr + el); e < e1; ++e) push_if_ready(s, __ldg(s.waiter_inst + e));
    }
  }
  slot.wp0 = wp0;
  slot.wp1 = wp1;
  done_flags(s)[inst] = 1;
  return nf;
}

// Thread 0, task timeline: instance inst's notifies are done; where it ran.
__device__ __forceinline__ void trace_end(const Sched& s, int inst) {
  s.trace[4LL * inst + 2] = static_cast<long long>(globaltimer());
  s.trace[4LL * inst + 3] = (static_cast<long long>(smid()) << 32) | static_cast<long long>(blockIdx.x);
}

// The persistent loop every CTA (NT threads) runs: thread 0 takes an instance (the static queue's next id is
// prefetched a task ahead) and reads its tables; if it must wait, all threads prefetch(inst, launch, coords,
// part) its read-only tiles into L2 while thread 0 waits; all threads run(inst, launch, coords); thread 0
// notifies; in the dynamic schedule all threads then push the waiters of fired elements in parallel.
// prefetch returns whether parts remain after `part` (the same answer in every thread).
template <int MAXC, int NT, class Run, class Prefetch>
__device__ __forceinline__ void persistent_loop(const Sched& s, Run run, Prefetch prefetch) {
  __shared__ TaskSlot<MAXC> slot;
  const bool lead = threadIdx.x == 0;
  int qpos = 0, qend = 0, nid = -1, wpos = 0, wend = 0;
  bool first = true;
  if (lead && !s.dynamic) {
    qpos = __ldg(s.queue_ptr + blockIdx.x);
    qend = __ldg(s.queue_ptr + blockIdx.x + 1);
    nid = qpos < qend ? __ldg(s.queue_inst + qpos) : -1;
  }
  for (;;) {
    if (lead) {
      int inst;
      if (s.dynamic) {
        inst = take_ticket(s, first);
        first = false;
      } else {
        inst = nid;
        if (inst >= 0 && ++qpos < qend) nid = __ldg(s.queue_inst + qpos);
        else nid = -1;
      }
      if (inst >= 0 && s.trace) s.trace[4LL * inst] = static_cast<long long>(globaltimer());
      if (inst >= 0 && !prepare_instance(s, inst, slot, wpos, wend)) inst = -1;
      slot.inst = inst;
    }
    __syncthreads();
    const int inst = slot.inst;
    if (inst < 0) return;
    const int* coord =
        MAXC >= s.coord_stride ? slot.coord : s.inst_coord + static_cast<long long>(inst) * s.coord_stride;
    if (slot.waiting) {
      for (int part = 0;; ++part) {
        const bool more = prefetch(inst, slot.launch, coord, part) && part + 1 < PREFETCH_MAX_PARTS;
        if (lead) {
          const int w = wait_elements(s, inst, wpos, wend, more ? PREFETCH_PACE_NS : 0);
          slot.wstate = EVT_PREFETCH_ALWAYS && more && w == 0 ? 1 : w;
        }
        __syncthreads();
        const int w = slot.wstate;
        __syncthreads();  // every thread has read the verdict before thread 0 writes the next one
        if (w < 0) return;
        if (w == 0) break;
      }
    }
    if (lead && s.trace) s.trace[4LL * inst + 1] = static_cast<long long>(globaltimer());
    run(inst, slot.launch, coord);
    __syncthreads();
    if (lead) {
      slot.nfired = notify_instance(s, inst, slot);  // read only in the dynamic schedule
      if (s.trace) trace_end(s, inst);
    }
    if (!s.dynamic) continue;
    __syncthreads();
    const int nf = slot.nfired;
    for (int f = 0; f < nf; ++f) {
      const int el = slot.fired[f];
      const bool pre = f == 0 && el == slot.nel0;  // the first notify element's range is in the slot
      const int e1 = pre ? slot.wp1 : __ldg(s.waiter_ptr + el + 1);
      for (int e = (pre ? slot.wp0 : __ldg(s.waiter_ptr + el)) + threadIdx.x; e < e1; e += NT)
        push_if_ready(s, __ldg(s.waiter_inst + e));
    }
  }
}

// Debug builds: a scalar index read that is out of bounds records ERR_INDEX and reads index 0 instead.
__device__ __forceinline__ long long checked_index(bool ok, long long flat, int* ctl, int inst, int site) {
  if (ok) return flat;
  raise_error(ctl, ERR_INDEX, inst, -1, site);
  return 0;
}

}  // namespace evt
