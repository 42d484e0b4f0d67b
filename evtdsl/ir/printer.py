"""The IR's text form. ``print_program`` writes it; ``parser.parse_program`` reads it back, so that
``print_program(parse_program(text)) == text`` for any printed program. A split-K row sum:

    program rowsum(x: tensor<f32>[M, K], part: tensor<f32>[M, 4], y: tensor<f32>[M]) dims(M, K)

    task partial(i, k; x: tensor<f32>[M, K], part: tensor<f32>[M, 4]) dims(M, K) grid(cdiv(M, 16), 4) {
      t: f32[16, 64] = load(x, i * 16, k * 64, shape=(16, 64), other=0)
      store(part, i * 16, k, sum(t, axis=1, keepdims=False))
    }

    event E[cdiv(M, 16)] wait 4

    launch partial = partial(x=x, part=part) {
      dims(M=M, K=K)
      grid([0, cdiv(M, 16)), [0, 4))
      notify E[(i, k) -> (i)] "ik->i"
    }

Constants carry their dtype unless it is the default of a weak literal: ``3`` (weak i32), ``0.5`` (weak
f32), ``True``; ``3:i64`` is strong, ``3:~i64`` weak with a dtype of its own. With ``locs=True`` the
program, tasks, statements, events, launches and edges end in ``loc("file.py":12:4)``.
"""
from __future__ import annotations

import json
import math
import re

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import SourceLoc
from . import nodes as N
from .ops import INFIX, PREFIX
from .types import ScalarType

_INDENT = "  "
_NAME = re.compile(r"(?!\d)\w+")

# Binding strength of operators, Python's order: comparisons (never chained) loosest, atoms tightest.
_COMPARE = frozenset({"<", "<=", ">", ">=", "==", "!="})
_PREC = {**dict.fromkeys(_COMPARE, 1), "|": 2, "&": 3, "+": 4, "-": 4, "*": 5, "/": 5, "//": 5, "%": 5}
_PREFIX_PREC = 6
_ATOM_PREC = 7


def literal_dtype(value: bool | int | float) -> DType:
    """The dtype of a weak literal that prints without one: ``True`` bool, ``3`` i32, ``0.5`` f32."""
    if isinstance(value, bool):
        return dt.bool_
    return dt.i32 if isinstance(value, int) else dt.f32


def print_program(p: N.Program, locs: bool = False) -> str:
    """The text of ``p``: header, tasks, events, launches; with source locations if ``locs``."""
    return _Printer(locs).program(p)


def print_task(t: N.TaskDef, locs: bool = False) -> str:
    """The text of one task definition, as it appears in ``print_program``."""
    return "\n".join(_Printer(locs).task(t)) + "\n"


class _Printer:
    def __init__(self, locs: bool):
        self.locs = locs

    def loc(self, loc: SourceLoc | None) -> str:
        if not self.locs or loc is None:
            return ""
        return f" loc({json.dumps(loc.file)}:{loc.line}:{loc.col})"

    def program(self, p: N.Program) -> str:
        params = ", ".join(_param(q) for q in p.params)
        sections = [[f"program {p.name}({params}) dims({', '.join(p.dims)}){self.loc(p.loc)}"]]
        sections += [self.task(t) for t in p.tasks]
        if p.events:
            sections.append([self.event(e) for e in p.events])
        sections += [self.launch(launch) for launch in p.launches]
        return "\n\n".join("\n".join(s) for s in sections) + "\n"

    def task(self, t: N.TaskDef) -> list[str]:
        params = ", ".join(_param(q) for q in t.params)
        head = (f"task {t.name}({', '.join(t.coords)};{' ' + params if params else ''}) "
                f"dims({', '.join(t.dims)}) grid({', '.join(map(str, t.grid))}){self.loc(t.loc)} {{")
        return [head, *self.block(t.body, 1), "}"]

    def block(self, body: list[N.Stmt], depth: int) -> list[str]:
        lines: list[str] = []
        for s in body:
            lines += self.stmt(s, _INDENT * depth, depth)
        return lines

    def stmt(self, s: N.Stmt, ind: str, depth: int) -> list[str]:
        loc = self.loc(s.loc)
        if isinstance(s, N.Assign):
            return [f"{ind}{s.target}: {s.value.type} = {expr(s.value)}{loc}"]
        if isinstance(s, N.Eval):
            return [f"{ind}{_call(s.value)}{loc}"]
        if isinstance(s, N.For):
            bounds = ", ".join(expr(e) for e in (s.start, s.stop, s.step))
            return [f"{ind}for {s.var} in range({bounds}){loc} {{", *self.block(s.body, depth + 1), f"{ind}}}"]
        if isinstance(s, N.If):
            lines = [f"{ind}if {expr(s.cond)}{loc} {{", *self.block(s.then, depth + 1)]
            if s.orelse:
                lines += [f"{ind}}} else {{", *self.block(s.orelse, depth + 1)]
            return [*lines, f"{ind}}}"]
        raise TypeError(f"not a statement: {s!r}")

    def event(self, e: N.EventDecl) -> str:
        count = f"lambda {', '.join(e.count_vars)}: " if e.count_vars else ""
        shape = ", ".join(map(str, e.shape))
        return f"event {_ident(e.name)}[{shape}] wait {count}{e.wait_count}{self.loc(e.loc)}"

    def launch(self, launch: N.Launch) -> list[str]:
        args = ", ".join(f"{k}={_launch_arg(v)}" for k, v in launch.args)
        binds = ", ".join(f"{k}={v}" for k, v in launch.dims)
        axes = ", ".join(f"[{a.lo}, {a.hi})" for a in launch.grid)
        return [f"launch {_ident(launch.label)} = {launch.task}({args}){self.loc(launch.loc)} {{",
                f"{_INDENT}dims({binds})",
                f"{_INDENT}grid({axes})",
                *(f"{_INDENT}wait {self.edge(m)}" for m in launch.waits),
                *(f"{_INDENT}notify {self.edge(m)}" for m in launch.notifies),
                "}"]

    def edge(self, m: N.EdgeMap) -> str:
        index = ", ".join("*" if i is None else str(i) for i in m.index)
        source = f" {json.dumps(m.source)}" if m.source else ""
        return f"{_ident(m.event)}[({', '.join(m.vars)}) -> ({index})]{source}{self.loc(m.loc)}"


def _param(p: N.Param) -> str:
    return f"{p.name}: {p.type}"


def _ident(name: str) -> str:
    """Event names and launch labels are user strings: bare when they are names, else quoted."""
    return name if _NAME.fullmatch(name) else json.dumps(name)


def _launch_arg(v: N.LaunchArg) -> str:
    return _float(v) if isinstance(v, float) else str(v)


def expr(e: N.Expr) -> str:
    """A task expression: infix and prefix operators where ``ops`` has them, calls for the rest."""
    return _expr(e)[0]


def _expr(e: N.Expr) -> tuple[str, int]:
    """Text of ``e`` and how tightly it binds."""
    if isinstance(e, N.Const):
        return _const(e), _ATOM_PREC
    if isinstance(e, N.Var):
        return e.name, _ATOM_PREC
    if not isinstance(e, N.Op):
        raise TypeError(f"not an expression: {e!r}")
    if not e.attrs and len(e.args) == 2 and e.name in INFIX:
        sym = INFIX[e.name]
        prec = _PREC[sym]
        left = _operand(e.args[0], prec, strict=sym in _COMPARE)
        right = _operand(e.args[1], prec, strict=True)
        return f"{left} {sym} {right}", prec
    if not e.attrs and len(e.args) == 1 and e.name in PREFIX:
        text, prec = _expr(e.args[0])
        # a constant's sign would glue to `-` (`-(1)` is neg of 1, `-1` the constant)
        if prec < _PREFIX_PREC or isinstance(e.args[0], N.Const):
            text = f"({text})"
        return PREFIX[e.name] + text, _PREFIX_PREC
    return _call(e), _ATOM_PREC


def _operand(e: N.Expr, prec: int, strict: bool) -> str:
    """An operand of a binary operator of strength ``prec``; ``strict`` also brackets equal strength."""
    text, p = _expr(e)
    return f"({text})" if p < prec or (strict and p == prec) else text


def _call(e: N.Op) -> str:
    items = [expr(a) for a in e.args] + [f"{k}={_attr(v)}" for k, v in e.attrs]
    return f"{e.name}({', '.join(items)})"


def _const(c: N.Const) -> str:
    v = c.value
    text = _attr(v)
    if c.weak and c.type == ScalarType(literal_dtype(v)):
        return text
    return f"{text}:{'~' if c.weak else ''}{c.type}"


def _float(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _attr(v: N.AttrValue) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return f"({_attr(v[0])},)" if len(v) == 1 else f"({', '.join(map(_attr, v))})"
    raise TypeError(f"cannot print attribute value {v!r}")
