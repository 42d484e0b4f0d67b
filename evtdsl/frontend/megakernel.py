"""``@evt.task``, ``@evt.megakernel`` and ``EventTensor``.

A megakernel body is ordinary Python, run once with symbolic stand-ins for its parameters (tracing): task
calls become launches, ``EventTensor(...)`` declarations become event tensors, and edge maps (einsum strings
or lambdas) are evaluated on symbolic coordinates. Python loops in the body unroll (one launch per layer).
"""
from __future__ import annotations

import inspect
import linecache
import re
from typing import Any, Callable

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import (ArgumentError, EdgeMapError, EvtError, SourceLoc, TypeMismatchError, caller_loc,
                      user_facing)
from ..ir import dims as D
from ..ir import nodes as N
from ..ir.types import ScalarType, TensorType
from .task_parser import annotations_of, parse_task

_TRACE: list["_Trace"] = []


class TensorProxy:
    """A megakernel tensor parameter while tracing. ``t[i, j]`` reads an index tensor in an edge map."""

    def __init__(self, name: str, type: TensorType):
        self.name = name
        self.type = type

    @property
    def shape(self) -> tuple[D.IntExpr, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __getitem__(self, idx) -> D.Load:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) != self.type.ndim:
            raise EdgeMapError(f"{self.name}[...] needs {self.type.ndim} indices, got {len(idx)}", caller_loc())
        if not self.type.dtype.is_int:
            raise TypeMismatchError(f"{self.name} is read in an edge map, grid or wait count, so it must be an "
                                    f"integer index tensor; it is {self.type.dtype}", caller_loc())
        return D.Load(self.name, tuple(D.as_expr(i) for i in idx))

    def __repr__(self) -> str:
        return f"<{self.name}: {self.type}>"


class ScalarProxy:
    """A float scalar parameter of a megakernel, passed through to tasks."""

    def __init__(self, name: str, dtype: DType):
        self.name = name
        self.dtype = dtype


class Edge:
    """``E["ik->i"]`` or ``E[lambda i, k: (topk[i, k],)]``: how a task's coordinates pick elements of E."""

    def __init__(self, event: "EventTensor", spec, loc: SourceLoc | None):
        self.event, self.spec, self.loc = event, spec, loc

    def resolve(self, coords: tuple[str, ...], task: str, role: str) -> N.EdgeMap:
        ev = self.event
        if isinstance(self.spec, str):
            m = re.fullmatch(r"\s*([A-Za-z]*)\s*->\s*([A-Za-z]*)\s*", self.spec)
            if not m:
                raise EdgeMapError(f"edge map {self.spec!r} is not of the form 'ij->i'", self.loc)
            lhs, rhs = m.groups()
            if len(set(lhs)) != len(lhs):
                raise EdgeMapError(f"edge map {self.spec!r} repeats a coordinate letter", self.loc)
            if len(lhs) != len(coords):
                raise EdgeMapError(
                    f"edge map {self.spec!r} names {len(lhs)} task coordinate(s) but task `{task}` has a "
                    f"{len(coords)}-d grid ({', '.join(coords)})", self.loc)
            if len(rhs) != len(ev.shape):
                raise EdgeMapError(
                    f"edge map {self.spec!r} gives {len(rhs)} event index(es) but event tensor {ev.name} is "
                    f"{len(ev.shape)}-d", self.loc)
            letter = dict(zip(lhs, coords))
            index = tuple(D.Sym(letter[c]) if c in letter else None for c in rhs)
            return N.EdgeMap(ev.name, coords, index, loc=self.loc, source=self.spec)
        if callable(self.spec):
            try:
                params = list(inspect.signature(self.spec).parameters)
            except (TypeError, ValueError):
                params = None
            if params is not None and len(params) != len(coords):
                raise EdgeMapError(
                    f"the {role} map of task `{task}` takes {len(params)} coordinate(s) but the task has a "
                    f"{len(coords)}-d grid ({', '.join(coords)})", self.loc)
            out = self.spec(*(D.Sym(c) for c in coords))
            out = out if isinstance(out, tuple) else (out,)
            if len(out) != len(ev.shape):
                raise EdgeMapError(
                    f"the {role} map of task `{task}` returns {len(out)} index(es) but event tensor {ev.name} is "
                    f"{len(ev.shape)}-d", self.loc)
            index = tuple(None if (isinstance(o, slice) and o == slice(None)) else D.as_expr(o) for o in out)
            return N.EdgeMap(ev.name, coords, index, loc=self.loc, source="lambda")
        raise EdgeMapError(f"an edge is E['ij->i'] or E[lambda i, j: (i,)], got {self.spec!r}", self.loc)


class EventTensor:
    """An N-d array of counters for one launch. Each element starts at ``wait_count`` (an int, a size
    expression, or a lambda of the element's index that may read an index tensor); ``notify`` edges
    decrement it; at zero it has fired and its waiters may start.

    >>> E = evt.EventTensor((evt.cdiv(M, 16),), wait_count=K // 64)   # inside a megakernel
    """

    def __init__(self, shape, wait_count=1, name: str | None = None):
        if not _TRACE:
            raise EvtError("EventTensor(...) is declared inside an @evt.megakernel function", caller_loc())
        trace = _TRACE[-1]
        shape = shape if isinstance(shape, tuple) else (shape,)
        self.loc = caller_loc()
        try:
            self.shape = tuple(D.as_expr(s) for s in shape)
        except TypeError as e:
            raise TypeMismatchError(f"event tensor shape: {e}", self.loc) from None
        self.name = trace.unique(name or _assigned_name(self.loc) or f"E{len(trace.events)}", trace.event_names)
        if callable(wait_count):
            vars_ = tuple(inspect.signature(wait_count).parameters)
            if len(vars_) != len(self.shape):
                raise EdgeMapError(f"the wait_count lambda takes {len(vars_)} index(es) but the event tensor is "
                                   f"{len(self.shape)}-d", self.loc)
            self.count_vars = vars_
            self.wait_count = D.as_expr(wait_count(*(D.Sym(v) for v in vars_)))
        else:
            self.count_vars = ()
            try:
                self.wait_count = D.as_expr(wait_count)
            except TypeError as e:
                raise TypeMismatchError(f"wait_count: {e}", self.loc) from None
        trace.events.append(self)

    def __getitem__(self, spec) -> Edge:
        return Edge(self, spec, caller_loc())

    def decl(self) -> N.EventDecl:
        return N.EventDecl(self.name, self.shape, self.wait_count, self.count_vars, loc=self.loc)


def _assigned_name(loc: SourceLoc | None) -> str | None:
    """``E`` for a declaration written ``E = evt.EventTensor(...)``."""
    if loc is None:
        return None
    m = re.match(r"\s*([A-Za-z_]\w*)\s*=\s*(?:[\w.]+\.)?EventTensor\(", linecache.getline(loc.file, loc.line))
    return m.group(1) if m else None


class _Trace:
    def __init__(self, params: dict[str, Any]):
        self.params = params
        self.events: list[EventTensor] = []
        self.event_names: set[str] = set()
        self.launches: list[N.Launch] = []
        self.labels: set[str] = set()
        self.tasks: dict[str, N.TaskDef] = {}

    @staticmethod
    def unique(base: str, taken: set[str]) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name


def _as_edges(v, what: str, loc) -> list[Edge]:
    if v is None:
        return []
    items = v if isinstance(v, (list, tuple)) else [v]
    for e in items:
        if not isinstance(e, Edge):
            raise EdgeMapError(f"`{what}=` takes edges such as E['ij->i'] (or a list of them), got {e!r}", loc)
    return list(items)


class Task:
    """A tile function with a grid; see ``evt.task``."""

    def __init__(self, fn: Callable, grid: tuple):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.ir = parse_task(fn, grid)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<evt.task {self.ir.name} grid=({', '.join(map(str, self.ir.grid))})>"

    @user_facing
    def __call__(self, *args, wait=None, notify=None, grid=None, name: str | None = None):
        loc = caller_loc()
        if not _TRACE:
            raise EvtError(f"task `{self.ir.name}` is called inside an @evt.megakernel function, which "
                           f"launches it; to run one task alone, wrap it in a megakernel", loc)
        trace = _TRACE[-1]
        t = self.ir
        trace.tasks.setdefault(t.name, t)
        if trace.tasks[t.name] is not t:
            raise EvtError(f"two different tasks are named `{t.name}` in one megakernel; rename one", loc)
        sig = inspect.Signature([inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                 for p in t.params])
        try:
            bound = sig.bind(*args)
        except TypeError as e:
            raise ArgumentError(f"task `{t.name}`: {e}", loc) from None
        dims: dict[str, D.IntExpr] = {}
        launch_args: list[tuple[str, N.LaunchArg]] = []
        for p in t.params:
            a = bound.arguments[p.name]
            if isinstance(p.type, TensorType):
                launch_args.append((p.name, self._bind_tensor(p, a, dims, loc)))
            else:
                launch_args.append((p.name, self._bind_scalar(p, a, dims, loc)))
        for d_ in t.dims:
            if d_ not in dims:
                raise TypeMismatchError(f"task `{t.name}`: size {d_} is not bound by any argument", loc)
        env = {**dims, **{k: v for k, v in launch_args if isinstance(v, D.IntExpr)}}
        default_grid = tuple(N.GridAxis(D.Const(0), g.subst(env)) for g in t.grid)
        axes = default_grid if grid is None else self._grid(grid, loc)
        label = trace.unique(name or t.name, trace.labels)
        waits = tuple(e.resolve(t.coords, t.name, "wait") for e in _as_edges(wait, "wait", loc))
        notifies = tuple(e.resolve(t.coords, t.name, "notify") for e in _as_edges(notify, "notify", loc))
        for m in (*waits, *notifies):
            for ix in m.index:
                if ix is not None:
                    self._check_loads(ix, trace, loc)
        launch = N.Launch(label, t.name, tuple(launch_args), tuple(dims.items()), axes, waits, notifies, loc=loc)
        trace.launches.append(launch)
        return launch

    @staticmethod
    def _check_loads(e: D.IntExpr, trace: _Trace, loc):
        for name in e.loads():
            if name not in trace.params:
                raise EdgeMapError(f"an edge map reads {name}, which is not a megakernel parameter", loc)

    def _grid(self, grid, loc) -> tuple[N.GridAxis, ...]:
        t = self.ir
        grid = grid if isinstance(grid, tuple) else (grid,)
        if len(grid) != len(t.coords):
            raise EdgeMapError(f"`grid=` gives {len(grid)} axes but task `{t.name}` has {len(t.coords)} "
                               f"coordinates ({', '.join(t.coords)})", loc)
        axes = []
        for k, g in enumerate(grid):
            if callable(g):
                n = len(inspect.signature(g).parameters)
                if n != k:
                    raise EdgeMapError(f"grid axis {k} of task `{t.name}` is a lambda of the {k} earlier "
                                       f"coordinate(s), but it takes {n}", loc)
                g = g(*(D.Sym(c) for c in t.coords[:k]))
            if isinstance(g, tuple):
                if len(g) != 2:
                    raise EdgeMapError(f"a grid axis is an extent or a (lo, hi) pair, got {g!r}", loc)
                axes.append(N.GridAxis(D.as_expr(g[0]), D.as_expr(g[1])))
            else:
                axes.append(N.GridAxis(D.Const(0), D.as_expr(g)))
        return tuple(axes)

    def _bind_tensor(self, p: N.Param, a, dims: dict, loc) -> str:
        t = self.ir
        if not isinstance(a, TensorProxy):
            raise ArgumentError(f"argument {p.name} of task `{t.name}` is a tensor ({p.type}); pass a tensor "
                                f"parameter of the megakernel, got {a!r}", loc)
        want, got = p.type, a.type
        if want.dtype != got.dtype:
            raise TypeMismatchError(f"argument {p.name} of task `{t.name}`: expected dtype {want.dtype}, got "
                                    f"{got.dtype} (megakernel parameter {a.name})", loc)
        if want.ndim != got.ndim:
            raise TypeMismatchError(f"argument {p.name} of task `{t.name}`: expected a {want.ndim}-d tensor "
                                    f"{want}, got {a.name}: {got}", loc)
        for axis, (w, g) in enumerate(zip(want.shape, got.shape)):
            if isinstance(w, D.Sym) and w.name in t.dims and w.name not in dims:
                dims[w.name] = g
                continue
            w_sub = w.subst(dims)
            if D.provably_equal(w_sub, g):
                continue
            cex = D.counterexample(w_sub, g)
            if cex is not None or (not w_sub.syms() and not g.syms()):
                sizes = ", ".join(f"{k}={v}" for k, v in (cex or {}).items())
                raise TypeMismatchError(
                    f"argument {p.name} of task `{t.name}`: axis {axis} must be {w} = {w_sub}, but "
                    f"{a.name} has {g}" + (f" (they differ at {sizes})" if sizes else ""), loc)
            # not decidable now: the launch checks it with the actual sizes
        return a.name

    def _bind_scalar(self, p: N.Param, a, dims: dict, loc) -> N.LaunchArg:
        t = self.ir
        d = p.type.dtype
        if d.is_int:
            if isinstance(a, (int, D.IntExpr)) and not isinstance(a, bool):
                return D.as_expr(a)
            raise ArgumentError(f"argument {p.name} of task `{t.name}` is an {d} scalar; pass an int or a "
                                f"size expression, got {a!r}", loc)
        if isinstance(a, ScalarProxy):
            return a.name
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return float(a)
        raise ArgumentError(f"argument {p.name} of task `{t.name}` is a {d} scalar; pass a number or a scalar "
                            f"parameter of the megakernel, got {a!r}", loc)


def task(grid) -> Callable[[Callable], Task]:
    """Declare a tile function. ``grid`` gives the number of tasks along each axis (ints or size
    expressions); the function's first ``len(grid)`` parameters are the task's coordinates.

    >>> @evt.task(grid=(evt.cdiv(M, 16),))
    ... def scale(i, x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
    ...     evt.store(y, (i * 16,), 2.0 * evt.load(x, (i * 16,), (16,)))
    """
    grid = grid if isinstance(grid, tuple) else (grid,)

    @user_facing
    def deco(fn):
        for g in grid:
            if not isinstance(g, (int, D.IntExpr)) or isinstance(g, bool):
                raise TypeMismatchError(f"grid entries are ints or size expressions, got {g!r}", caller_loc())
        return Task(fn, grid)

    return deco


class Megakernel:
    """A traced megakernel: ``.ir`` is its Program (``print(mk.ir)`` shows the text form); calling it runs
    it (``mk(*arrays)``; options through ``mk.run(*arrays, backend=..., ...)``)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self.ir = _trace(fn)
        from ..ir.passes.checks import check_program

        check_program(self.ir)

    def __repr__(self) -> str:
        return f"<evt.megakernel {self.ir.name}>"

    @user_facing
    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)

    @user_facing
    def run(self, *args, backend: str | None = None, **options):
        """Run on ``backend`` ("cpu" or "cuda"; by default where the arrays live). CPU options: ``workers``,
        ``schedule`` ("static" or "dynamic"), ``seed``, ``check`` (races, uninitialised reads)."""
        from ..backends import dispatch

        return dispatch.run(self, args, backend, options)


def _trace(fn) -> N.Program:
    loc = SourceLoc(inspect.getsourcefile(fn) or "<unknown>", fn.__code__.co_firstlineno, 0)
    annotations = annotations_of(fn)
    sig = inspect.signature(fn)
    params: list[N.Param] = []
    proxies: list[Any] = []
    for name in sig.parameters:
        ann = annotations.get(name)
        if isinstance(ann, TensorType):
            params.append(N.Param(name, ann))
            proxies.append(TensorProxy(name, ann))
        elif ann in (int, dt.i32, dt.i64):
            params.append(N.Param(name, ScalarType(dt.i32)))
            proxies.append(D.Sym(name))
        elif isinstance(ann, DType) and ann.is_float or ann is float:
            d = dt.f32 if ann is float else ann
            params.append(N.Param(name, ScalarType(d)))
            proxies.append(ScalarProxy(name, d))
        else:
            raise TypeMismatchError(f"megakernel parameter {name} needs an annotation: evt.Tensor[..., dtype], "
                                    f"evt.InOut[..., dtype], int, or a float dtype; got {ann!r}", loc)
    dims: list[str] = []
    for p in params:
        if isinstance(p.type, TensorType):
            for s in p.type.shape:
                for sym in sorted(s.syms()):
                    if sym not in dims and sym not in sig.parameters:
                        dims.append(sym)
    trace = _Trace({p.name: p for p in params})
    trace.event_names.update(p.name for p in params)
    _TRACE.append(trace)
    try:
        fn(*proxies)
    finally:
        _TRACE.pop()
    return N.Program(fn.__name__, tuple(params), tuple(dims), tuple(trace.tasks.values()),
                     tuple(e.decl() for e in trace.events), tuple(trace.launches), loc=loc)


@user_facing
def megakernel(fn: Callable) -> Megakernel:
    """Compose tasks into one persistent kernel. The body calls tasks with their tensor arguments and
    ``wait=`` / ``notify=`` edges on EventTensors."""
    return Megakernel(fn)
