"""Race and uninitialised-read detection for a CPU run.

Every load, store and atomic add reports the box it touches. Reads of output tensors are checked against
the elements written so far (outputs start poisoned). After the run, each pair of accesses to overlapping
boxes where one writes must be ordered by events (happens-before through notify -> wait), whatever order
the simulation happened to run them in.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import RaceError, SourceLoc, UninitializedReadError
from ...ir.passes.graph import TaskGraph

_KIND = {"r": 0, "w": 1, "a": 2}
_WORD = {0: "reads", 1: "writes", 2: "atomically adds to"}


def _box_str(tensor: str, lo, hi) -> str:
    return f"{tensor}[{', '.join(f'{l}' if h - l == 1 else f'{l}:{h}' for l, h in zip(lo, hi))}]"


@dataclass
class _TensorLog:
    records: set = field(default_factory=set)  # (instance, kind, lo, hi, loc)


class AccessChecker:
    """Listens to a run: tracks written elements of outputs and logs every access for the race check."""

    def __init__(self, graph: TaskGraph, outputs: dict[str, np.ndarray], writers: dict[str, list[str]]):
        self.graph = graph
        self.written = {name: np.zeros(arr.shape, dtype=bool) for name, arr in outputs.items()}
        self.writers = writers
        self.logs: dict[str, _TensorLog] = {}
        self.current = -1
        self.param_of: dict[str, str] = {}  # task-local tensor name -> megakernel parameter

    def begin(self, instance: int, param_of: dict[str, str]):
        self.current = instance
        self.param_of = param_of

    def access(self, tensor: str, kind: str, lo, hi, loc: SourceLoc | None) -> None:
        name = self.param_of[tensor]
        box = tuple(slice(l, h) for l, h in zip(lo, hi))
        if name in self.written:
            if kind in "ra" and not self.written[name][box].all():
                self._uninitialised(name, kind, lo, hi, box, loc)
            if kind in "wa":
                self.written[name][box] = True
        self.logs.setdefault(name, _TensorLog()).records.add((self.current, _KIND[kind], lo, hi, loc))

    def _uninitialised(self, name, kind, lo, hi, box, loc):
        missing = np.argwhere(~self.written[name][box])[0]
        at = tuple(int(l + m) for l, m in zip(lo, missing))
        who = self.graph.instances[self.current].label
        writers = ", ".join(f"`{w}`" for w in self.writers.get(name, [])) or "no task"
        verb = "reads" if kind == "r" else "atomically adds to"
        raise UninitializedReadError(
            f"task {who} {verb} {_box_str(name, lo, hi)}, but {name}[{', '.join(map(str, at))}] has not been "
            f"written: {name} is an output (written by {writers}) and starts poisoned. Either a wait on the "
            f"event its writer notifies is missing, or, if the caller initialises {name}, declare it "
            f"evt.InOut[...]", loc)

    def check_races(self) -> None:
        g = self.graph
        anc = [0] * len(g.instances)
        for v in g.order:
            a = 0
            for p in g.preds[v]:
                a |= anc[p] | (1 << p)
            anc[v] = a
        for name, log in sorted(self.logs.items()):
            recs = sorted(log.records, key=lambda r: (r[0], r[1], r[2], r[3]))
            if not any(r[1] for r in recs):
                continue
            inst = np.array([r[0] for r in recs])
            kind = np.array([r[1] for r in recs])
            lo = np.array([r[2] for r in recs]).reshape(len(recs), -1)
            hi = np.array([r[3] for r in recs]).reshape(len(recs), -1)
            for i in np.flatnonzero(kind > 0):
                overlap = np.all((lo < hi[i]) & (lo[i] < hi), axis=1) & (inst != inst[i])
                overlap &= ~((kind == 2) & (kind[i] == 2))  # atomic adds commute
                for j in np.flatnonzero(overlap):
                    a, b = int(inst[i]), int(inst[j])
                    if (anc[b] >> a) & 1 or (anc[a] >> b) & 1:
                        continue
                    self._race(name, recs[i], recs[j], lo, hi, i, j)

    def _race(self, name, ri, rj, lo, hi, i, j):
        g = self.graph
        both_lo = np.maximum(lo[i], lo[j])
        both_hi = np.minimum(hi[i], hi[j])
        region = _box_str(name, both_lo, both_hi)
        a, b = g.instances[ri[0]], g.instances[rj[0]]
        where_a = f" (at {ri[4].file}:{ri[4].line})" if ri[4] else ""
        where_b = f" (at {rj[4].file}:{rj[4].line})" if rj[4] else ""
        raise RaceError(
            f"race on {region}: task {a.label} {_WORD[ri[1]]} it{where_a} and task {b.label} {_WORD[rj[1]]} it"
            f"{where_b}, and no event orders them: add a wait in {b.label if ri[1] else a.label} on an event "
            f"that {a.label if ri[1] else b.label} notifies", g.program.launches[b.launch].loc)
