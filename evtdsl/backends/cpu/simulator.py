"""Simulates a persistent kernel of W workers on the CPU.

static: the host orders all task instances topologically and deals them round-robin into per-worker
queues; each worker waits on its task's events, runs it, notifies.
dynamic: a ready queue; an event that fires pushes the tasks whose waits are now all met; idle workers pop.

Every wait, run and notify is one atomic step; which enabled worker steps next is drawn from a seeded RNG,
so each seed is one interleaving. Simulated time (for the timeline) charges each task the number of tile
ops it ran; a task starts when its worker is free and its events have fired.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import DeadlockError
from ...ir.passes.graph import Element, TaskGraph


@dataclass(frozen=True)
class Span:
    worker: int
    instance: int
    label: str
    launch: str
    start: float
    end: float


def static_queues(graph: TaskGraph, workers: int) -> list[list[int]]:
    """The static schedule: topological order dealt round-robin over ``workers`` queues."""
    return [graph.order[w::workers] for w in range(workers)]


class Simulator:
    def __init__(self, graph: TaskGraph, workers: int, schedule: str, seed: int,
                 execute: Callable[[int], int]):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if schedule not in ("static", "dynamic"):
            raise ValueError(f"schedule must be 'static' or 'dynamic', got {schedule!r}")
        self.g, self.W, self.schedule, self.execute = graph, workers, schedule, execute
        self.rng = random.Random(seed)
        self.remaining = {name: c.copy() for name, c in graph.wait_counts.items()}
        self.fire_time: dict[Element, float] = {}
        self.done = np.zeros(len(graph.instances), dtype=bool)
        self.timeline: list[Span] = []

    def fired(self, el: Element) -> bool:
        return self.remaining[el[0]][el[1]] <= 0

    def _notify(self, el: Element, t: float):
        name, flat = el
        self.remaining[name][flat] -= 1
        self.fire_time[el] = max(self.fire_time.get(el, 0.0), t)
        return self.remaining[name][flat] == 0

    def _run(self, w: int, inst: int, ready: float) -> float:
        cost = max(1, self.execute(inst))
        start = ready
        end = start + cost
        g = self.g
        self.timeline.append(Span(w, inst, g.instances[inst].label,
                                  g.program.launches[g.instances[inst].launch].label, start, end))
        self.done[inst] = True
        return end

    def run(self) -> list[Span]:
        return self._run_static() if self.schedule == "static" else self._run_dynamic()

    def _ready_time(self, inst: int) -> float:
        return max((self.fire_time.get(el, 0.0) for el in self.g.waits[inst]), default=0.0)

    # -- static ----------------------------------------------------------------------------------
    def _run_static(self) -> list[Span]:
        g = self.g
        queues = static_queues(g, self.W)
        pos = [0] * self.W
        phase = ["wait"] * self.W  # wait -> run -> notify
        step = [0] * self.W
        clock = [0.0] * self.W
        end = [0.0] * self.W

        def enabled(w):
            if pos[w] >= len(queues[w]):
                return False
            if phase[w] == "wait":
                waits = g.waits[queues[w][pos[w]]]
                return step[w] >= len(waits) or self.fired(waits[step[w]])
            return True

        while True:
            ready = [w for w in range(self.W) if enabled(w)]
            if not ready:
                break
            w = self.rng.choice(ready)
            inst = queues[w][pos[w]]
            if phase[w] == "wait":
                if step[w] < len(g.waits[inst]):
                    step[w] += 1
                else:
                    phase[w], step[w] = "run", 0
            elif phase[w] == "run":
                end[w] = self._run(w, inst, max(clock[w], self._ready_time(inst)))
                phase[w] = "notify"
            else:
                if step[w] < len(g.notifies[inst]):
                    self._notify(g.notifies[inst][step[w]], end[w])
                    step[w] += 1
                else:
                    clock[w] = end[w]
                    pos[w] += 1
                    phase[w], step[w] = "wait", 0
        if not self.done.all():
            stuck = [(w, queues[w][pos[w]]) for w in range(self.W) if pos[w] < len(queues[w])]
            self._deadlock(stuck)
        return self.timeline

    # -- dynamic ---------------------------------------------------------------------------------
    def _run_dynamic(self) -> list[Span]:
        g = self.g
        pending = [sum(1 for el in g.waits[i] if not self.fired(el)) for i in range(len(g.instances))]
        queue = deque(i for i in range(len(g.instances)) if pending[i] == 0)
        task: list[int | None] = [None] * self.W
        phase = ["pop"] * self.W
        step = [0] * self.W
        clock = [0.0] * self.W
        end = [0.0] * self.W

        def enabled(w):
            return bool(queue) if phase[w] == "pop" else True

        while True:
            ready = [w for w in range(self.W) if enabled(w)]
            if not ready:
                break
            w = self.rng.choice(ready)
            if phase[w] == "pop":
                task[w] = queue.popleft()
                phase[w] = "run"
            elif phase[w] == "run":
                inst = task[w]
                end[w] = self._run(w, inst, max(clock[w], self._ready_time(inst)))
                phase[w], step[w] = "notify", 0
            else:
                inst = task[w]
                if step[w] < len(g.notifies[inst]):
                    el = g.notifies[inst][step[w]]
                    if self._notify(el, end[w]):
                        for waiter in g.waiters.get(el, ()):
                            pending[waiter] -= 1
                            if pending[waiter] == 0:
                                queue.append(waiter)
                    step[w] += 1
                else:
                    clock[w] = end[w]
                    phase[w], task[w] = "pop", None
        if not self.done.all():
            self._deadlock([(None, i) for i in np.flatnonzero(~self.done)[:8]])
        return self.timeline

    def _deadlock(self, stuck: list[tuple[int | None, int]]):
        g = self.g
        lines = []
        for w, inst in stuck[:6]:
            unfired = [el for el in g.waits[inst] if not self.fired(el)]
            if not unfired:
                lines.append(f"{g.instances[inst].label} is queued behind blocked tasks")
                continue
            el = unfired[0]
            left = int(self.remaining[el[0]][el[1]])
            pending_notifiers = [g.instances[i].label for i in g.notifiers.get(el, []) if not self.done[i]]
            why = (f"waiting for {', '.join(pending_notifiers[:3])}" if pending_notifiers
                   else "no task that has not run yet will notify it")
            who = f"worker {w}: " if w is not None else ""
            lines.append(f"{who}{g.instances[inst].label} waits on {g.element_str(el)} with {left} notification(s) "
                         f"outstanding ({why})")
        n = int((~self.done).sum())
        first = stuck[0][1]
        raise DeadlockError(f"deadlock: {n} task(s) can never start; " + "; ".join(lines),
                            g.program.launches[g.instances[first].launch].loc)
