"""Instantiate a Program at concrete sizes: every task instance, every event element, who notifies and
who waits on it, the wait counts, and a topological order. Counts that do not match, indices out of range
and cycles are reported here, naming tasks, events and the user's lines."""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from ...errors import DeadlockError, EdgeMapError, EventCountError
from .. import dims as D
from ..nodes import EdgeMap, Launch, Program

Element = tuple[str, int]  # (event name, flat index)


@dataclass
class Instance:
    id: int
    launch: int
    coords: tuple[int, ...]
    label: str

    def __str__(self) -> str:
        return self.label


@dataclass
class TaskGraph:
    program: Program
    env: dict[str, int]
    instances: list[Instance]
    event_shapes: dict[str, tuple[int, ...]]
    wait_counts: dict[str, np.ndarray]  # flat int64 per event
    waits: list[list[Element]]
    notifies: list[list[Element]]
    notifiers: dict[Element, list[int]]
    waiters: dict[Element, list[int]]
    preds: list[set[int]] = field(default_factory=list)
    order: list[int] = field(default_factory=list)

    def element_str(self, el: Element) -> str:
        name, flat = el
        idx = np.unravel_index(flat, self.event_shapes[name]) if self.event_shapes[name] else ()
        return f"{name}[{', '.join(str(int(i)) for i in idx)}]"


def instance_label(task_label: str, coord_names: tuple[str, ...], coords: tuple[int, ...]) -> str:
    return f"{task_label}({', '.join(f'{n}={c}' for n, c in zip(coord_names, coords))})"


def _grid_points(launch: Launch, coord_names, env, load) -> list[tuple[int, ...]]:
    points: list[tuple[int, ...]] = []

    def rec(prefix: tuple[int, ...]):
        k = len(prefix)
        if k == len(launch.grid):
            points.append(prefix)
            return
        local = {**env, **dict(zip(coord_names, prefix))}
        ax = launch.grid[k]
        lo, hi = ax.lo.eval(local, load), ax.hi.eval(local, load)
        for c in range(lo, hi):
            rec(prefix + (c,))

    rec(())
    return points


def _elements(m: EdgeMap, coords: tuple[int, ...], shape: tuple[int, ...], env, load, who: str) -> list[int]:
    local = {**env, **dict(zip(m.vars, coords))}
    axes = []
    for k, ix in enumerate(m.index):
        if ix is None:
            axes.append(range(shape[k]))
            continue
        v = ix.eval(local, load)
        if not 0 <= v < shape[k]:
            shown = ", ".join("*" if i is None else str(i) for i in m.index)
            raise EdgeMapError(
                f"{who} maps to {m.event}[{shown}] = index {v} on axis {k}, outside the event tensor's shape "
                f"{list(shape)}", m.loc)
        axes.append((v,))
    if not shape:
        return [0]
    return [int(np.ravel_multi_index(ix, shape)) for ix in itertools.product(*axes)]


def index_loader(program: Program, arrays: Mapping[str, np.ndarray]) -> Callable[[str, tuple[int, ...]], int]:
    """``load(tensor, index)`` for ``build_graph``: reads host arrays of the index tensors, bounds-checked."""

    def load(tensor: str, idx: tuple[int, ...]) -> int:
        arr = arrays[tensor]
        if len(idx) != arr.ndim or not all(0 <= i < n for i, n in zip(idx, arr.shape)):
            raise EdgeMapError(f"{tensor}[{', '.join(map(str, idx))}] is out of bounds for shape {list(arr.shape)}",
                               program.loc)
        return int(arr[idx])

    return load


def build_graph(program: Program, env: Mapping[str, int], load: Callable | None = None,
                verify_counts: bool = True) -> TaskGraph:
    """``env`` binds every size; ``load(tensor, index)`` reads index tensors for data-dependent maps."""
    env = dict(env)
    shapes: dict[str, tuple[int, ...]] = {}
    counts: dict[str, np.ndarray] = {}
    for ev in program.events:
        shape = tuple(s.eval(env, load) for s in ev.shape)
        if any(s < 0 for s in shape):
            raise EdgeMapError(f"event tensor {ev.name} has a negative shape {list(shape)}", ev.loc)
        shapes[ev.name] = shape
        if ev.count_vars:
            c = np.empty(int(np.prod(shape)), dtype=np.int64)
            for flat, idx in enumerate(itertools.product(*(range(s) for s in shape))):
                c[flat] = ev.wait_count.eval({**env, **dict(zip(ev.count_vars, idx))}, load)
        else:
            c = np.full(int(np.prod(shape)), ev.wait_count.eval(env, load), dtype=np.int64)
        if (c < 0).any():
            raise EventCountError(f"event tensor {ev.name} has a negative wait count {int(c.min())}", ev.loc)
        counts[ev.name] = c

    instances: list[Instance] = []
    waits: list[list[Element]] = []
    notifies: list[list[Element]] = []
    notifiers: dict[Element, list[int]] = {}
    waiters: dict[Element, list[int]] = {}
    for li, launch in enumerate(program.launches):
        task = program.task(launch.task)
        lenv = {**env, **{k: v.eval(env, load) for k, v in launch.dims}}
        lenv.update({k: v.eval(env, load) for k, v in launch.args if isinstance(v, D.IntExpr)})
        for coords in _grid_points(launch, task.coords, env, load):
            inst = Instance(len(instances), li, coords, instance_label(launch.label, task.coords, coords))
            instances.append(inst)
            w_list: list[Element] = []
            for m in launch.waits:
                for flat in _elements(m, coords, shapes[m.event], env, load, f"wait of {inst.label}"):
                    w_list.append((m.event, flat))
                    waiters.setdefault((m.event, flat), []).append(inst.id)
            n_list: list[Element] = []
            for m in launch.notifies:
                for flat in _elements(m, coords, shapes[m.event], env, load, f"notify of {inst.label}"):
                    n_list.append((m.event, flat))
                    notifiers.setdefault((m.event, flat), []).append(inst.id)
            waits.append(w_list)
            notifies.append(n_list)

    g = TaskGraph(program, env, instances, shapes, counts, waits, notifies, notifiers, waiters)
    if verify_counts:
        _verify_counts(g)
    g.preds = [set() for _ in instances]
    for i, w_list in enumerate(waits):
        for el in w_list:
            g.preds[i].update(notifiers.get(el, ()))
    g.order = _toposort(g)
    return g


def _verify_counts(g: TaskGraph):
    for ev in g.program.events:
        got = np.zeros_like(g.wait_counts[ev.name])
        for (name, flat), who in g.notifiers.items():
            if name == ev.name:
                got[flat] = len(who)
        want = g.wait_counts[ev.name]
        bad = np.flatnonzero(got != want)
        if not len(bad):
            continue
        flat = int(bad[0])
        el = (ev.name, flat)
        who = g.notifiers.get(el, [])
        names = sorted({g.program.launches[g.instances[i].launch].label for i in who})
        shown = ", ".join(g.instances[i].label for i in who[:4]) + (", ..." if len(who) > 4 else "")
        fate = ("it would never fire, and its waiters would deadlock" if got[flat] < want[flat]
                else "it would fire before all of them arrive")
        waiting = ", ".join(g.instances[i].label for i in g.waiters.get(el, [])[:3]) or "no task"
        raise EventCountError(
            f"event {g.element_str(el)} waits for {int(want[flat])} notification(s) but receives {int(got[flat])}"
            + (f" (from {shown})" if who else " (no task notifies it)")
            + f": {fate}. Waiting on it: {waiting}. {len(bad)} element(s) of {ev.name} disagree"
            + (f"; notifying tasks: {', '.join('`' + n + '`' for n in names)}" if names else ""), ev.loc)


def _toposort(g: TaskGraph) -> list[int]:
    n = len(g.instances)
    indeg = [len(p) for p in g.preds]
    succs: list[list[int]] = [[] for _ in range(n)]
    for v, ps in enumerate(g.preds):
        for p in ps:
            succs[p].append(v)
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        v = heapq.heappop(heap)
        order.append(v)
        for s in succs[v]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, s)
    if len(order) < n:
        raise DeadlockError(_cycle_message(g, {v for v in range(n) if indeg[v] > 0}),
                            g.program.launches[g.instances[min(v for v in range(n) if indeg[v] > 0)].launch].loc)
    return order


def _cycle_message(g: TaskGraph, stuck: set[int]) -> str:
    # walk predecessors inside the stuck set until a node repeats: that is a cycle
    v = min(stuck)
    path: list[int] = []
    seen: dict[int, int] = {}
    while v not in seen:
        seen[v] = len(path)
        path.append(v)
        v = min(p for p in g.preds[v] if p in stuck)
    cycle = list(reversed(path[seen[v]:]))
    steps = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1]):
        el = next(el for el in g.waits[b] if a in g.notifiers.get(el, ()))
        steps.append(f"{g.instances[b].label} waits on {g.element_str(el)}, notified by {g.instances[a].label}")
    return (f"deadlock: {len(stuck)} task(s) can never start because their events form a cycle: "
            + "; ".join(steps))
