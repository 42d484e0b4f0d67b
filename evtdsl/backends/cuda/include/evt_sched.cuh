// evt_sched.cuh: event counters, bounded waits, the static and dynamic schedules, and the error record.
//
// State (one int32 buffer per launch, reset from a pristine copy on the stream before each launch):
//   ctl[CTL_WORDS] | counters[num_elements] | done[num_instances] | pending[num_instances] | ring[num_instances]
// - counters: one per event element, starting at its wait count; a notify decrements it (acq_rel atomic);
//   the element has fired at zero.
// - static schedule: CTA b runs queue_inst[queue_ptr[b] .. queue_ptr[b + 1]) in order, waiting on each
//   instance's elements (acquire loads, __nanosleep back-off, bounded by timeout_ns on %globaltimer).
// - dynamic schedule: pending[i] counts i's wait elements that have not fired; ring holds ready instances.
//   Each instance is pushed exactly once, so the ring never wraps: a CTA takes a ticket (atomic head) and
//   waits for that slot to be filled; a ticket >= num_instances means all work is taken, and it exits.
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

// Spin (acquire loads, __nanosleep back-off) until *p satisfies ready(v). False on abort or timeout; a
// timeout raises `code` with (inst, elem, extra).
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
  unsigned ns = 32;
  for (;;) {
    __nanosleep(ns);
    if (ns < 256) ns *= 2;
    v = ld_acquire(p);
    if (ready(v)) {
      *value = v;
      return true;
    }
    if (aborted(ctl)) return false;
    if (globaltimer() - t0 > static_cast<unsigned long long>(s.timeout_ns)) {
      raise_error(ctl, code, inst, elem, extra);
      return false;
    }
  }
}

// Thread 0: the next instance this CTA runs, with all its events fired; -1 when there is none (or on abort).
__device__ __forceinline__ int next_instance(const Sched& s, int& qpos, int qend) {
  int* ctl = s.state;
  if (aborted(ctl)) return -1;
  int v;
  if (!s.dynamic) {
    if (qpos >= qend) return -1;
    const int inst = __ldg(s.queue_inst + qpos++);
    const int w1 = __ldg(s.wait_ptr + inst + 1);
    for (int w = __ldg(s.wait_ptr + inst); w < w1; ++w) {
      const int el = __ldg(s.wait_elem + w);
      if (!spin_until(s, counters(s) + el, [](int c) { return c <= 0; }, ERR_WAIT_TIMEOUT, inst, el, 0, &v))
        return -1;
    }
    return inst;
  }
  const int ticket = atomicAdd(ctl + CTL_HEAD, 1);
  if (ticket >= s.num_instances) return -1;
  if (!spin_until(s, ring(s) + ticket, [](int i) { return i >= 0; }, ERR_QUEUE_TIMEOUT, -1, -1, ticket, &v))
    return -1;
  return v;
}

// Thread 0, after the task body and a CTA barrier: release the task's writes through its notifies; in the
// dynamic schedule, push every waiter whose last pending element just fired.
__device__ __forceinline__ void finish_instance(const Sched& s, int inst) {
  int* ctl = s.state;
  __threadfence();
  const int n1 = __ldg(s.notify_ptr + inst + 1);
  for (int n = __ldg(s.notify_ptr + inst); n < n1; ++n) {
    const int el = __ldg(s.notify_elem + n);
    const int old = atom_add_acq_rel(counters(s) + el, -1);
    if (old <= 0) {
      raise_error(ctl, ERR_OVER_NOTIFY, inst, el, old - 1);
      continue;
    }
    if (old != 1 || !s.dynamic) continue;
    const int e1 = __ldg(s.waiter_ptr + el + 1);
    for (int e = __ldg(s.waiter_ptr + el); e < e1; ++e) {
      const int w = __ldg(s.waiter_inst + e);
      if (atom_add_acq_rel(pending(s) + w, -1) == 1) st_release(ring(s) + atomicAdd(ctl + CTL_TAIL, 1), w);
    }
  }
  done_flags(s)[inst] = 1;
}

// The persistent loop every CTA runs: take an instance, wait, run(inst) with all threads, notify.
template <class Run>
__device__ __forceinline__ void persistent_loop(const Sched& s, Run run) {
  __shared__ int s_inst;
  int qpos = 0, qend = 0;
  if (threadIdx.x == 0 && !s.dynamic) {
    qpos = __ldg(s.queue_ptr + blockIdx.x);
    qend = __ldg(s.queue_ptr + blockIdx.x + 1);
  }
  for (;;) {
    if (threadIdx.x == 0) {
      const int inst = next_instance(s, qpos, qend);
      if (inst >= 0) __threadfence();
      s_inst = inst;
    }
    __syncthreads();
    const int inst = s_inst;
    if (inst < 0) return;
    run(inst);
    __syncthreads();
    if (threadIdx.x == 0) finish_instance(s, inst);
  }
}

// Debug builds: a scalar index read that is out of bounds records ERR_INDEX and reads index 0 instead.
__device__ __forceinline__ long long checked_index(bool ok, long long flat, int* ctl, int inst, int site) {
  if (ok) return flat;
  raise_error(ctl, ERR_INDEX, inst, -1, site);
  return 0;
}

}  // namespace evt
