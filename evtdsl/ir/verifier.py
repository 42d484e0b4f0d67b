"""Structural checks of a Program: every name defined before use, types as the op registry infers them,
variables keep one type, launches fit their tasks and event tensors."""
from __future__ import annotations

from ..errors import EdgeMapError, EvtError, TypeMismatchError
from . import nodes as N
from . import ops
from .. import dtypes as dt
from .types import ScalarType, TensorType


class VerifyError(EvtError):
    """The IR breaks a structural rule (only malformed hand-written or generated IR gets here)."""


def verify(p: N.Program) -> None:
    names = {t.name for t in p.tasks}
    if len(names) != len(p.tasks):
        raise VerifyError(f"program {p.name} defines a task name twice", p.loc)
    for t in p.tasks:
        verify_task(t)
    params = {q.name: q for q in p.params}
    events = {e.name: e for e in p.events}
    if len(events) != len(p.events):
        raise VerifyError(f"program {p.name} declares an event tensor name twice", p.loc)
    for L in p.launches:
        if L.task not in names:
            raise VerifyError(f"launch {L.label} calls unknown task {L.task}", L.loc)
        t = p.task(L.task)
        if [a for a, _ in L.args] != [q.name for q in t.params]:
            raise VerifyError(f"launch {L.label} binds {[a for a, _ in L.args]}, task {t.name} takes "
                              f"{[q.name for q in t.params]}", L.loc)
        for (name, arg), q in zip(L.args, t.params):
            if isinstance(q.type, TensorType):
                if not (isinstance(arg, str) and arg in params and isinstance(params[arg].type, TensorType)):
                    raise VerifyError(f"launch {L.label}: argument {name} must name a tensor parameter", L.loc)
                if params[arg].type.dtype != q.type.dtype:
                    raise TypeMismatchError(f"launch {L.label}: argument {name} is {params[arg].type.dtype}, "
                                            f"task {t.name} expects {q.type.dtype}", L.loc)
        if len(L.grid) != len(t.coords):
            raise EdgeMapError(f"launch {L.label} has {len(L.grid)} grid axes, task {t.name} has "
                               f"{len(t.coords)} coordinates", L.loc)
        for m in (*L.waits, *L.notifies):
            if m.event not in events:
                raise VerifyError(f"launch {L.label} uses unknown event tensor {m.event}", m.loc or L.loc)
            if len(m.vars) != len(t.coords):
                raise EdgeMapError(f"an edge of {L.label} names {len(m.vars)} coordinates, task {t.name} has "
                                   f"{len(t.coords)}", m.loc or L.loc)
            if len(m.index) != len(events[m.event].shape):
                raise EdgeMapError(f"an edge of {L.label} gives {len(m.index)} indices, event tensor {m.event} "
                                   f"is {len(events[m.event].shape)}-d", m.loc or L.loc)


def verify_task(t: N.TaskDef) -> None:
    scope: dict[str, object] = {c: ScalarType(dt.i32) for c in t.coords}
    for d in t.dims:
        scope[d] = ScalarType(dt.i32)
    for q in t.params:
        scope[q.name] = q.type
    _block(t.body, [scope], t)


def _lookup(scopes, name):
    for s in reversed(scopes):
        if name in s:
            return s[name]
    return None


def _expr(e: N.Expr, scopes, t) -> None:
    if isinstance(e, N.Const):
        return
    if isinstance(e, N.Var):
        typ = _lookup(scopes, e.name)
        if typ is None:
            raise VerifyError(f"task {t.name}: {e.name} is used before it is defined", e.loc)
        if typ != e.type:
            raise TypeMismatchError(f"task {t.name}: {e.name} has type {typ}, used as {e.type}", e.loc)
        return
    if isinstance(e, N.Op):
        for a in e.args:
            _expr(a, scopes, t)
        try:
            typ = ops.infer(e.name, e.args, dict(e.attrs))
        except TypeMismatchError as err:
            raise TypeMismatchError(f"task {t.name}: {err.message}", e.loc) from None
        if typ != e.type:
            raise TypeMismatchError(f"task {t.name}: {e.name} gives {typ}, recorded as {e.type}", e.loc)
        return
    raise VerifyError(f"task {t.name}: unknown expression node {type(e).__name__}", getattr(e, "loc", None))


def _block(stmts, scopes, t) -> None:
    for s in stmts:
        if isinstance(s, N.Assign):
            _expr(s.value, scopes, t)
            prev = _lookup(scopes, s.target)
            if prev is None:
                scopes[-1][s.target] = s.value.type
            elif prev != s.value.type:
                raise TypeMismatchError(f"task {t.name}: {s.target} was {prev}, assigned {s.value.type}", s.loc)
        elif isinstance(s, N.Eval):
            _expr(s.value, scopes, t)
            if not ops.REGISTRY[s.value.name].effect:
                raise VerifyError(f"task {t.name}: {s.value.name} is evaluated for nothing", s.loc)
        elif isinstance(s, N.For):
            for b in (s.start, s.stop, s.step):
                _expr(b, scopes, t)
                if not (isinstance(b.type, ScalarType) and b.type.dtype.is_int):
                    raise TypeMismatchError(f"task {t.name}: loop bounds must be integer scalars", s.loc)
            _block(s.body, scopes + [{s.var: ScalarType(dt.i32)}], t)
        elif isinstance(s, N.If):
            _expr(s.cond, scopes, t)
            if not isinstance(s.cond.type, ScalarType):
                raise TypeMismatchError(f"task {t.name}: an if condition must be a scalar", s.loc)
            _block(s.then, scopes + [{}], t)
            _block(s.orelse, scopes + [{}], t)
        else:
            raise VerifyError(f"task {t.name}: unknown statement {type(s).__name__}", getattr(s, "loc", None))
