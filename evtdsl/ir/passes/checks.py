"""Checks of a traced Program before any run: the verifier, then wait counts compared symbolically with
the number of notifications the notify edges send. What cannot be decided here is checked at launch
(``graph.build_graph``)."""
from __future__ import annotations

import math

from ...errors import EventCountError
from .. import dims as D
from ..nodes import EventDecl, Program
from ..verifier import verify


def check_program(p: Program) -> None:
    verify(p)
    for ev in p.events:
        _check_event_count(p, ev)


def notifications_per_element(p: Program, ev: EventDecl) -> tuple[D.IntExpr, list[str]] | None:
    """The number of notifications every element of ``ev`` receives, as a size expression, when the notify
    edges are plain einsum maps over full grid axes; otherwise None (decided at run time)."""
    total: D.IntExpr = D.Const(0)
    parts: list[str] = []
    for L in p.launches:
        for m in L.notifies:
            if m.event != ev.name:
                continue
            coord_axis = {v: k for k, v in enumerate(m.vars)}
            if any(ax.lo != D.Const(0) or ax.hi.loads() or ax.hi.syms() & set(m.vars) for ax in L.grid):
                return None
            used = set()
            for k, ix in enumerate(m.index):
                if ix is None:
                    continue
                if not (isinstance(ix, D.Sym) and ix.name in coord_axis):
                    return None
                # a coordinate that indexes an event axis must cover exactly that axis
                if not D.provably_equal(L.grid[coord_axis[ix.name]].hi, ev.shape[k]):
                    return None
                used.add(ix.name)
            free = [L.grid[coord_axis[v]].hi for v in m.vars if v not in used]
            n = math.prod(free, start=D.Const(1)) if free else D.Const(1)
            total = total + n
            parts.append(f"`{L.label}` gives {n}")
    return total, parts


def _check_event_count(p: Program, ev: EventDecl):
    if ev.count_vars or ev.wait_count.loads():
        return
    found = notifications_per_element(p, ev)
    if found is None:
        return
    got, parts = found
    if D.provably_equal(got, ev.wait_count):
        return
    cex = D.counterexample(got, ev.wait_count)
    if cex is None and (got.syms() or ev.wait_count.syms()):
        return
    at = ", ".join(f"{k}={v}" for k, v in (cex or {}).items())
    example = (f" (at {at}: {ev.wait_count.eval(cex)} expected, {got.eval(cex)} sent)" if cex else "")
    who = "; ".join(parts) if parts else "no task notifies it"
    raise EventCountError(
        f"event {ev.name} expects {ev.wait_count} notification(s) per element but its notifiers send {got}"
        f"{example}: {who}. wait_count should be {got}", ev.loc)
