"""Host-built task tables of one launch shape: flat int32 arrays the persistent kernel walks.

From a TaskGraph (``ir.passes.graph.build_graph``): instance -> (launch, coordinates); per instance the
element ids it waits on and notifies (CSR); per element the instances waiting on it (CSR; ~inst for an
instance whose only pending element it is); the static
queues (topological order dealt round-robin over the CTAs, as ``cpu.simulator.static_queues``); and the
initial state the kernel starts from (see ``include/evt_sched.cuh``):

    ctl[8] | counters[elements] | done[instances] | pending[instances] | ring[instances]

Element ids number the elements of all event tensors: event k's flat index f is ``base[k] + f``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import EventCountError
from ...ir.passes.graph import Element, TaskGraph

CTL_WORDS = 8
CTL_ERROR, CTL_INST, CTL_ELEM, CTL_EXTRA, CTL_ABORT, CTL_HEAD, CTL_TAIL = range(7)
ERR_WAIT_TIMEOUT, ERR_QUEUE_TIMEOUT, ERR_OVER_NOTIFY, ERR_INDEX = 1, 2, 3, 4
TABLE_NAMES = ("inst_launch", "inst_coord", "wait_ptr", "wait_elem", "notify_ptr", "notify_elem", "waiter_ptr",
               "waiter_inst", "queue_ptr", "queue_inst")


@dataclass
class TaskTables:
    graph: TaskGraph
    workers: int
    element_base: dict[str, int]
    num_elements: int
    coord_stride: int
    arrays: dict[str, np.ndarray]
    init_state: np.ndarray

    @property
    def num_instances(self) -> int:
        return len(self.graph.instances)

    def element_id(self, el: Element) -> int:
        return self.element_base[el[0]] + el[1]

    def element(self, eid: int) -> Element:
        for name, b in self.element_base.items():
            if b <= eid < b + len(self.graph.wait_counts[name]):
                return name, eid - b
        raise IndexError(f"element id {eid} is outside the {self.num_elements} event elements")

    def state_words(self, dynamic: bool) -> int:
        """Words of state a launch resets: the ready queue only matters to the dynamic schedule."""
        n = self.num_instances
        return CTL_WORDS + self.num_elements + n + (2 * n if dynamic else 0)

    def counters(self, state: np.ndarray) -> np.ndarray:
        return state[CTL_WORDS:CTL_WORDS + self.num_elements]

    def done(self, state: np.ndarray) -> np.ndarray:
        o = CTL_WORDS + self.num_elements
        return state[o:o + self.num_instances]

    def pending(self, state: np.ndarray) -> np.ndarray:
        o = CTL_WORDS + self.num_elements + self.num_instances
        return state[o:o + self.num_instances]


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    flat = np.fromiter((x for r in rows for x in r), dtype=np.int64, count=int(ptr[-1]))
    return ptr, flat


def _int32(name: str, a: np.ndarray) -> np.ndarray:
    if a.size and (a.max() >= 2**31 or a.min() < -2**31):
        raise EventCountError(f"the task tables of this launch do not fit 32-bit ints ({name})")
    # empty tables still get one word, so every device pointer is valid
    return a.astype(np.int32) if a.size else np.zeros(1, dtype=np.int32)


def build_tables(graph: TaskGraph, workers: int) -> TaskTables:
    """The tables of ``graph`` for ``workers`` CTAs."""
    g = graph
    base: dict[str, int] = {}
    nel = 0
    for ev in g.program.events:
        base[ev.name] = nel
        nel += len(g.wait_counts[ev.name])
    n = len(g.instances)
    stride = max((len(i.coords) for i in g.instances), default=0) or 1
    coords = np.zeros((n, stride), dtype=np.int64)
    for inst in g.instances:
        coords[inst.id, :len(inst.coords)] = inst.coords
    wait_ptr, wait_elem = _csr([[base[e] + f for e, f in w] for w in g.waits])
    notify_ptr, notify_elem = _csr([[base[e] + f for e, f in w] for w in g.notifies])
    queue_ptr, queue_inst = _csr([g.order[w::workers] for w in range(workers)])
    counts = np.concatenate([g.wait_counts[ev.name] for ev in g.program.events]) if nel else np.zeros(0, np.int64)
    pending = np.array([sum(1 for e, f in w if counts[base[e] + f] > 0) for w in g.waits], dtype=np.int64)
    # A waiter for which this element is its only pending one is stored as ~inst: when the element fires,
    # the kernel pushes it without waiting for the result of the pending decrement.
    waiters: list[list[int]] = [[] for _ in range(nel)]
    for (e, f), who in g.waiters.items():
        waiters[base[e] + f] = [~w if pending[w] == 1 else w for w in who]
    waiter_ptr, waiter_inst = _csr(waiters)
    ready = [i for i in g.order if pending[i] == 0]
    ring = np.full(n, -1, dtype=np.int64)
    ring[:len(ready)] = ready
    ctl = np.zeros(CTL_WORDS, dtype=np.int64)
    ctl[CTL_TAIL] = len(ready)
    state = np.concatenate([ctl, counts, np.zeros(n, np.int64), pending, ring])
    arrays = {
        "inst_launch": np.array([i.launch for i in g.instances], dtype=np.int64),
        "inst_coord": coords.reshape(-1),
        "wait_ptr": wait_ptr, "wait_elem": wait_elem, "notify_ptr": notify_ptr, "notify_elem": notify_elem,
        "waiter_ptr": waiter_ptr, "waiter_inst": waiter_inst, "queue_ptr": queue_ptr, "queue_inst": queue_inst,
    }
    return TaskTables(g, workers, base, nel, stride, {k: _int32(k, v) for k, v in arrays.items()},
                      _int32("state", state))
