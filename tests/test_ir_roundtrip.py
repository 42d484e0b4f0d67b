"""The IR's text form round-trips: random valid Programs, built directly as IR nodes (every Op typed by
``ops.infer``), print, parse and print again to the same text, with and without source locations.
(No ``from __future__ import annotations``: the front end evaluates a task's annotations where it is defined.)"""
import keyword
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evtdsl import dtypes as dt
from evtdsl.errors import SourceLoc, TypeMismatchError
from evtdsl.ir import dims as D
from evtdsl.ir import nodes as N
from evtdsl.ir import ops
from evtdsl.ir.parser import IRParseError, parse_program
from evtdsl.ir.printer import print_program, print_task
from evtdsl.ir.types import ScalarType, TensorType, TileType, Type

DTYPES = list(dt.ALL.values())
MOSTLY_F32 = st.sampled_from(DTYPES) | st.just(dt.f32)  # f32 half the time, so dot and load find operands
INT_DTYPES = [d for d in DTYPES if d.is_int]
I32 = ScalarType(dt.i32)
SIZES = (1, 2, 4, 8)

# Names a program may legally use that look like the text form's keywords, op or dtype names.
TRICKY_NAMES = ("loc", "dims", "grid", "wait", "notify", "task", "event", "launch", "program", "tensor", "inout",
                "void", "range", "sum", "exp", "load", "f32", "i64", "info", "nanny", "Trueish", "α", "x_1", "_")
RESERVED = set(keyword.kwlist) | {"inf", "nan"}
# Event names and launch labels are any strings; these print quoted.
ODD_LABELS = ("my event", "ev-1", "1st", 'q"uote', "back\\slash", "tab\there", "ünï", "")
FILES = ("k.py", "/a/b c/model.py", 'we"ird\\.py', "ünï.py")
SOURCES = ("", "lambda", "ik->i", "i->", 'odd "source"')


class Names:
    """Hands out names not used before in the program (so scopes never clash by accident)."""

    def __init__(self, draw):
        self.draw = draw
        self.used: set[str] = set(RESERVED)

    def fresh(self, upper: bool = False) -> str:
        base = self.draw(st.sampled_from(TRICKY_NAMES) | st.from_regex(
            r"[A-Z][A-Z0-9]{0,2}" if upper else r"[a-z_][a-z0-9_]{0,4}", fullmatch=True))
        name, k = base, 0
        while name in self.used:
            name, k = f"{base}{k}", k + 1
        self.used.add(name)
        return name

    def label(self) -> str:
        return self.draw(st.sampled_from(ODD_LABELS)) + self.fresh()


locs = st.none() | st.builds(SourceLoc, st.sampled_from(FILES), st.integers(1, 5000), st.integers(0, 120))


# ---------------------------------------------------------------------------------------------
# Size expressions


@st.composite
def int_exprs(draw, syms: list[str], loads: list[tuple[str, int]], depth: int = 2) -> D.IntExpr:
    """IntExprs built with the dataclass constructors (no simplification). Right operands of + and * are
    never + - or * // % themselves: ``a + (b - c)`` prints as ``a + b - c``, which reads back left-nested."""
    leaf = st.integers(-3, 64).map(D.Const)
    if syms:
        leaf = leaf | st.sampled_from(syms).map(D.Sym)
    kinds = ["leaf"] if depth == 0 else ["leaf", "binop", "func"] + (["load"] if loads else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "leaf":
        return draw(leaf)
    sub = int_exprs(syms, loads, depth - 1)
    if kind == "binop":
        op = draw(st.sampled_from(["+", "-", "*", "//", "%"]))
        a, b = draw(sub), draw(sub)
        if op in "+*" and isinstance(b, D.BinOp) and b.prec() == D.BinOp(op, a, a).prec():
            b = draw(leaf)
        return D.BinOp(op, a, b)
    if kind == "func":
        return D.Func(draw(st.sampled_from(["cdiv", "min", "max"])), draw(sub), draw(sub))
    tensor, ndim = draw(st.sampled_from(loads))
    return D.Load(tensor, tuple(draw(sub) for _ in range(ndim)))


# ---------------------------------------------------------------------------------------------
# Task bodies: every expression is generated for a target type, and ops.infer confirms it.


def op(name: str, *args: N.Expr, **attrs) -> N.Op:
    return N.Op(ops.infer(name, args, attrs), name, args, tuple(attrs.items()))


def make(shape: tuple[int, ...], dtype: dt.DType) -> Type:
    return TileType(shape, dtype) if shape else ScalarType(dtype)


class Body:
    """Random statements for one task, tracking the variables in scope as the parser will."""

    def __init__(self, draw, names: Names, task_scope: dict[str, Type], tensors: list[tuple[str, TensorType]]):
        self.draw, self.names, self.tensors = draw, names, tensors
        self.scopes: list[dict[str, Type]] = [task_scope]
        self.assigned: set[str] = set()

    def visible(self) -> dict[str, Type]:
        out: dict[str, Type] = {}
        for s in self.scopes:
            out.update(s)
        return out

    def block(self, depth: int, initial: dict[str, Type]) -> list[N.Stmt]:
        self.scopes.append(dict(initial))
        body = [self.stmt(depth) for _ in range(self.draw(st.integers(0, 4 if depth else 2)))]
        self.scopes.pop()
        return body

    def stmt(self, depth: int) -> N.Stmt:
        d = self.draw
        reassignable = [n for n, t in self.visible().items() if n in self.assigned]
        kinds = ["assign", "assign"] + (["reassign"] if reassignable else []) + (["store"] if self.tensors else [])
        kinds += ["for", "if"] if depth else []
        kind = d(st.sampled_from(kinds))
        loc = d(locs)
        if kind == "assign":
            value = self.value(self.some_type(), 3)
            name = self.names.fresh()
            self.scopes[-1][name] = value.type
            self.assigned.add(name)
            return N.Assign(name, value, loc=loc)
        if kind == "reassign":
            name = d(st.sampled_from(reassignable))
            return N.Assign(name, self.value(self.visible()[name], 2), loc=loc)
        if kind == "store":
            return N.Eval(self.store(), loc=loc)
        if kind == "for":
            bounds = [self.value(ScalarType(d(st.sampled_from(INT_DTYPES))), 1) for _ in range(3)]
            var = self.names.fresh()
            return N.For(var, *bounds, self.block(depth - 1, {var: I32}), loc=loc)
        cond = self.value(ScalarType(dt.bool_), 2)
        then = self.block(depth - 1, {})
        return N.If(cond, then, self.block(depth - 1, {}) if d(st.booleans()) else [], loc=loc)

    def some_type(self) -> Type:
        shape = tuple(self.draw(st.lists(st.sampled_from(SIZES), max_size=3)))
        return make(shape, self.draw(MOSTLY_F32))

    def store(self) -> N.Op:
        d = self.draw
        name, t = d(st.sampled_from(self.tensors))
        atomic = t.dtype in (dt.f32, dt.i32, dt.f16, dt.bf16, dt.i64) and d(st.booleans())
        kinds = [x for x in DTYPES if x.is_float == t.dtype.is_float or dt.bool_ in (x, t.dtype)]
        shape = tuple(d(st.lists(st.sampled_from(SIZES), max_size=t.ndim)))
        value = self.value(make(shape, d(st.sampled_from(kinds))), 2)
        return op("atomic_add" if atomic else "store", N.Var(t, name), *self.offsets(t), value)

    def offsets(self, t: TensorType) -> list[N.Expr]:
        return [self.value(ScalarType(self.draw(st.sampled_from(INT_DTYPES))), 1) for _ in range(t.ndim)]

    def sub_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A shape that broadcasts against ``shape`` to ``shape``."""
        d = self.draw
        tail = shape[d(st.integers(0, len(shape))):]
        return tuple(1 if d(st.booleans()) else s for s in tail)

    def value(self, t: Type, depth: int) -> N.Expr:
        """A random expression of type ``t`` (a scalar or a tile)."""
        d = self.draw
        shape, dtype = (t.shape if isinstance(t, TileType) else ()), t.dtype
        same = [n for n, v in self.visible().items() if v == t]
        leaves = (["var"] if same else []) + (["const"] if not shape else ["zeros", "full"])
        kinds = list(leaves)
        if depth > 0:
            kinds += ["cast", "where", "unary_same"]
            kinds += ["arith"] if dtype != dt.bool_ else ["compare", "logical", "not"]
            kinds += ["math"] if dtype.is_float or dtype == dt.f32 else []
            kinds += ["load"] if shape and self.loadable(shape, dtype) else []
            kinds += ["load_scalar"] if not shape and self.loadable((), dtype) else []
            kinds += ["arange"] if len(shape) == 1 and dtype == dt.i32 else []
            kinds += ["dot"] if len(shape) == 2 and dtype == dt.f32 else []
            kinds += ["trans"] if len(shape) == 2 else []
            kinds += ["expand_dims"] if 1 in shape else []
            kinds += ["reshape", "broadcast_to"] if shape else []
            kinds += ["reduce"] if len(shape) < 3 else []
        kind = d(st.sampled_from(kinds))
        e = getattr(self, f"v_{kind}")(shape, dtype, depth - 1)
        assert e.type == t, (kind, e.type, t)
        return e

    def loadable(self, shape: tuple[int, ...], dtype: dt.DType) -> list[tuple[str, TensorType]]:
        return [(n, t) for n, t in self.tensors if t.dtype == dtype and t.ndim >= max(len(shape), 1)]

    def v_var(self, shape, dtype, depth) -> N.Expr:
        t = make(shape, dtype)
        return N.Var(t, self.draw(st.sampled_from([n for n, v in self.visible().items() if v == t])))

    def v_const(self, shape, dtype, depth) -> N.Expr:
        d = self.draw
        if dtype == dt.bool_:
            value = d(st.booleans())
        elif dtype.is_int:
            value = d(st.integers(-2**40, 2**40))
        else:
            value = d(st.floats() | st.integers(-5, 5))
        return N.Const(ScalarType(dtype), value, d(st.booleans()))

    def v_zeros(self, shape, dtype, depth) -> N.Expr:
        return op("zeros", shape=shape, dtype=dtype)

    def v_full(self, shape, dtype, depth) -> N.Expr:
        fill = self.value(ScalarType(self.draw(st.sampled_from(DTYPES))), max(depth, 0))
        return op("full", fill, shape=shape, dtype=dtype)

    def pair(self, shape, dtype_a, dtype_b, depth) -> tuple[N.Expr, N.Expr]:
        """Two operands that broadcast to ``shape``, in either order."""
        a = self.value(make(shape, dtype_a), depth)
        b = self.value(make(self.sub_shape(shape), dtype_b), depth)
        return (a, b) if self.draw(st.booleans()) else (b, a)

    def v_arith(self, shape, dtype, depth) -> N.Expr:
        names = ["add", "sub", "mul", "maximum", "minimum", "pow"]
        names += ["truediv"] if dtype.is_float else ["floordiv", "mod"]
        return op(self.draw(st.sampled_from(names)), *self.pair(shape, dtype, dtype, depth))

    def v_compare(self, shape, dtype, depth) -> N.Expr:
        a, b = self.draw(st.sampled_from(DTYPES)), self.draw(st.sampled_from(DTYPES))
        return op(self.draw(st.sampled_from(ops.COMPARE)), *self.pair(shape, a, b, depth))

    def v_logical(self, shape, dtype, depth) -> N.Expr:
        return op(self.draw(st.sampled_from(ops.LOGICAL)), *self.pair(shape, dt.bool_, dt.bool_, depth))

    def v_not(self, shape, dtype, depth) -> N.Expr:
        return op("not", self.value(make(shape, dt.bool_), depth))

    def v_unary_same(self, shape, dtype, depth) -> N.Expr:
        return op(self.draw(st.sampled_from(ops.UNARY_SAME)), self.value(make(shape, dtype), depth))

    def v_math(self, shape, dtype, depth) -> N.Expr:
        src = dtype if dtype.is_float else self.draw(st.sampled_from([x for x in DTYPES if not x.is_float]))
        return op(self.draw(st.sampled_from(ops.UNARY_MATH)), self.value(make(shape, src), depth))

    def v_cast(self, shape, dtype, depth) -> N.Expr:
        return op("cast", self.value(make(shape, self.draw(st.sampled_from(DTYPES))), depth), dtype=dtype)

    def v_where(self, shape, dtype, depth) -> N.Expr:
        cond = self.value(make(self.sub_shape(shape), dt.bool_), depth)
        return op("where", cond, *self.pair(shape, dtype, dtype, depth))

    def v_load(self, shape, dtype, depth) -> N.Expr:
        name, t = self.draw(st.sampled_from(self.loadable(shape, dtype)))
        other = self.draw(st.sampled_from([0, 0.0, float("-inf"), True, -1]))
        return op("load", N.Var(t, name), *self.offsets(t), shape=shape, other=other)

    def v_load_scalar(self, shape, dtype, depth) -> N.Expr:
        name, t = self.draw(st.sampled_from(self.loadable(shape, dtype)))
        return op("load_scalar", N.Var(t, name), *self.offsets(t))

    def v_arange(self, shape, dtype, depth) -> N.Expr:
        return op("arange", n=shape[0])

    def v_dot(self, shape, dtype, depth) -> N.Expr:
        k = self.draw(st.sampled_from(SIZES))
        floats = st.sampled_from([x for x in DTYPES if x.is_float])
        a = self.value(TileType((shape[0], k), self.draw(floats)), depth)
        return op("dot", a, self.value(TileType((k, shape[1]), self.draw(floats)), depth))

    def v_trans(self, shape, dtype, depth) -> N.Expr:
        return op("trans", self.value(TileType(shape[::-1], dtype), depth))

    def v_expand_dims(self, shape, dtype, depth) -> N.Expr:
        axis = self.draw(st.sampled_from([i for i, s in enumerate(shape) if s == 1]))
        return op("expand_dims", self.value(make(shape[:axis] + shape[axis + 1:], dtype), depth), axis=axis)

    def v_reshape(self, shape, dtype, depth) -> N.Expr:
        src = self.draw(st.sampled_from([(math.prod(shape),), shape[::-1], shape + (1,)]))
        return op("reshape", self.value(make(src, dtype), depth), shape=shape)

    def v_broadcast_to(self, shape, dtype, depth) -> N.Expr:
        return op("broadcast_to", self.value(make(self.sub_shape(shape), dtype), depth), shape=shape)

    def v_reduce(self, shape, dtype, depth) -> N.Expr:
        d = self.draw
        names = ["max", "min"]
        sum_sources = {dt.f32: [x for x in DTYPES if x.is_float], dt.i32: [dt.i32, dt.i8, dt.bool_], dt.i64: [dt.i64]}
        if dtype in sum_sources:
            names.append("sum")
        name = d(st.sampled_from(names))
        src_dtype = d(st.sampled_from(sum_sources[dtype])) if name == "sum" else dtype
        axis = d(st.integers(0, len(shape)))
        keep = axis < len(shape) and shape[axis] == 1 and d(st.booleans())
        rest = shape[axis + 1:] if keep else shape[axis:]
        src = shape[:axis] + (d(st.sampled_from(SIZES)),) + rest
        axis_attr = axis - len(src) if d(st.booleans()) else axis
        return op(name, self.value(TileType(src, src_dtype), depth), axis=axis_attr, keepdims=keep)


# ---------------------------------------------------------------------------------------------
# Programs


@st.composite
def task_defs(draw, names: Names) -> N.TaskDef:
    dims = [names.fresh(upper=True) for _ in range(draw(st.integers(0, 2)))]
    coords = [names.fresh() for _ in range(draw(st.integers(0, 3)))]
    params: list[N.Param] = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            shape = tuple(draw(int_exprs(dims, [], 1)) for _ in range(draw(st.integers(1, 3))))
            params.append(N.Param(names.fresh(), TensorType(shape, draw(MOSTLY_F32), draw(st.booleans()))))
        else:
            params.append(N.Param(names.fresh(), ScalarType(draw(st.sampled_from(DTYPES)))))
    int_params = [p.name for p in params if isinstance(p.type, ScalarType) and p.type.dtype.is_int]
    grid = tuple(draw(int_exprs(dims + int_params, [], 2)) for _ in coords)
    scope: dict[str, Type] = {c: I32 for c in coords}
    scope.update({p.name: p.type for p in params})
    scope.update({n: I32 for n in dims})
    tensors = [(p.name, p.type) for p in params if isinstance(p.type, TensorType)]
    body = Body(draw, names, scope, tensors).block(2, {})
    return N.TaskDef(names.fresh(), tuple(coords), tuple(params), tuple(dims), grid, body, loc=draw(locs))


@st.composite
def programs(draw) -> N.Program:
    names = Names(draw)
    dims = [names.fresh(upper=True) for _ in range(draw(st.integers(1, 3)))]
    params: list[N.Param] = []
    for _ in range(draw(st.integers(0, 2))):  # index tensors, read by grids, edges and wait counts
        shape = tuple(draw(int_exprs(dims, [], 1)) for _ in range(draw(st.integers(1, 2))))
        params.append(N.Param(names.fresh(), TensorType(shape, draw(st.sampled_from(INT_DTYPES)))))
    loads = [(p.name, p.type.ndim) for p in params]
    for _ in range(draw(st.integers(0, 3))):
        shape = tuple(draw(int_exprs(dims, loads, 1)) for _ in range(draw(st.integers(1, 3))))
        params.append(N.Param(names.fresh(), TensorType(shape, draw(st.sampled_from(DTYPES)), draw(st.booleans()))))
    for _ in range(draw(st.integers(0, 3))):
        params.append(N.Param(names.fresh(), ScalarType(draw(st.sampled_from([dt.f32, dt.bf16, dt.i32])))))
    tensor_names = [p.name for p in params if isinstance(p.type, TensorType)]
    float_names = [p.name for p in params if isinstance(p.type, ScalarType) and p.type.dtype.is_float]
    sizes = dims + [p.name for p in params if p.type == I32]

    tasks = [draw(task_defs(names)) for _ in range(draw(st.integers(1, 3)))]
    events = []
    for _ in range(draw(st.integers(0, 3))):
        shape = tuple(draw(int_exprs(dims, loads, 1)) for _ in range(draw(st.integers(0, 2))))
        count_vars = tuple(names.fresh() for _ in shape) if draw(st.booleans()) else ()
        wait = draw(int_exprs(sizes + list(count_vars), loads, 2))
        events.append(N.EventDecl(names.label(), shape, wait, count_vars, loc=draw(locs)))

    def edge(t: N.TaskDef) -> N.EdgeMap:
        ev = draw(st.sampled_from(events))
        index = tuple(draw(st.none() | int_exprs(list(t.coords) + dims, loads, 2)) for _ in ev.shape)
        return N.EdgeMap(ev.name, t.coords, index, loc=draw(locs), source=draw(st.sampled_from(SOURCES)))

    def arg(p: N.Param) -> N.LaunchArg:
        if isinstance(p.type, ScalarType) and p.type.dtype.is_int:
            return draw(int_exprs(sizes, loads, 2))
        if isinstance(p.type, TensorType):
            return draw(st.sampled_from(tensor_names or [p.name]))
        return draw(st.sampled_from(float_names) | st.floats()) if float_names else draw(st.floats())

    launches = []
    for _ in range(draw(st.integers(0, 4))):
        t = draw(st.sampled_from(tasks))
        grid = tuple(N.GridAxis(draw(int_exprs(sizes + list(t.coords[:k]), loads, 1)),
                                draw(int_exprs(sizes + list(t.coords[:k]), loads, 2))) for k in range(len(t.coords)))
        n_edges = st.integers(0, 2) if events else st.just(0)
        launches.append(N.Launch(
            names.label(), t.name, tuple((p.name, arg(p)) for p in t.params),
            tuple((n, draw(int_exprs(sizes, loads, 1))) for n in t.dims), grid,
            tuple(edge(t) for _ in range(draw(n_edges))), tuple(edge(t) for _ in range(draw(n_edges))),
            loc=draw(locs)))
    return N.Program(names.fresh(), tuple(params), tuple(dims), tuple(tasks), tuple(events), tuple(launches),
                     loc=draw(locs))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_programs_round_trip(p: N.Program):
    for locs_on in (False, True):
        text = print_program(p, locs=locs_on)
        assert print_program(parse_program(text), locs=locs_on) == text


# ---------------------------------------------------------------------------------------------
# Hand-written cases

ROWSUM = """\
program rowsum(x: tensor<f32>[M, K], part: tensor<f32>[M, 4], y: tensor<f32>[M], eps: f32) dims(M, K) loc("r.py":20:0)

task partial(i, k; x: tensor<f32>[M, K], part: tensor<f32>[M, 4]) dims(M, K) grid(cdiv(M, 16), 4) loc("r.py":3:0) {
  t: f32[16, 64] = load(x, i * 16, k * 64, shape=(16, 64), other=0) loc("r.py":5:4)
  store(part, i * 16, k, sum(t, axis=1, keepdims=False)) loc("r.py":6:4)
}

task final(i; part: tensor<f32>[M, 4], y: tensor<f32>[M], eps: f32) dims(M) grid(cdiv(M, 16)) loc("r.py":9:0) {
  s: f32[16] = sum(load(part, i * 16, 0, shape=(16, 4), other=0), axis=-1, keepdims=False) loc("r.py":11:4)
  if i * 16 < M loc("r.py":12:4) {
    s: f32[16] = s + eps * 2 loc("r.py":13:8)
  }
  store(y, i * 16, cast(s, dtype=bf16)) loc("r.py":14:4)
}

event E[cdiv(M, 16)] wait 4 loc("r.py":22:4)

launch partial = partial(x=x, part=part) loc("r.py":23:4) {
  dims(M=M, K=K)
  grid([0, cdiv(M, 16)), [0, 4))
  notify E[(i, k) -> (i)] "ik->i" loc("r.py":23:40)
}

launch final = final(part=part, y=y, eps=eps) loc("r.py":24:4) {
  dims(M=M)
  grid([0, cdiv(M, 16)))
  wait E[(i) -> (i)] "i->i" loc("r.py":24:40)
}
"""


def test_example_text_round_trips_and_rebuilds_nodes():
    p = parse_program(ROWSUM)
    assert print_program(p, locs=True) == ROWSUM
    final = p.task("final")
    branch = final.body[1]
    assert isinstance(branch, N.If) and branch.loc == SourceLoc("r.py", 12, 4)
    assert branch.cond.type == ScalarType(dt.bool_) and branch.cond.loc == branch.loc
    assert final.body[2].value.args[2].type == TileType((16,), dt.bf16)
    assert p.launches[1].waits[0].index == (D.Sym("i"),) and p.launches[1].waits[0].source == "i->i"
    assert print_task(final).startswith("task final(i; part: tensor<f32>[M, 4], y: tensor<f32>[M], eps: f32)")


def test_without_locs_every_loc_is_none():
    p = parse_program(print_program(parse_program(ROWSUM)))
    stmts = [s for t in p.tasks for s in t.body]
    assert p.loc is None and all(s.loc is None for s in stmts) and all(t.loc is None for t in p.tasks)
    assert "loc(" not in print_program(p, locs=True)


@pytest.mark.parametrize("text, value, dtype, weak", [
    ("3", 3, dt.i32, True), ("3:i64", 3, dt.i64, False), ("3:~i64", 3, dt.i64, True), ("-7", -7, dt.i32, True),
    ("0.5", 0.5, dt.f32, True), ("1.5:bf16", 1.5, dt.bf16, False), ("1e-05", 1e-05, dt.f32, True),
    ("-0.0", -0.0, dt.f32, True), ("inf", math.inf, dt.f32, True), ("-inf:f16", -math.inf, dt.f16, False),
    ("True", True, dt.bool_, True), ("False:bool", False, dt.bool_, False), ("2:~f32", 2, dt.f32, True),
])
def test_constants(text: str, value, dtype: dt.DType, weak: bool):
    t = f"s: {dtype} = cast({text}, dtype={dtype})" if dtype != dt.bool_ else f"s: bool = {text} & True"
    p = parse_program(f"program p() dims()\ntask t(;) dims() grid() {{\n  {t}\n}}\n")
    c = p.tasks[0].body[0].value.args[0]
    assert isinstance(c, N.Const) and c.type == ScalarType(dtype) and c.weak is weak
    assert repr(c.value) == repr(value) and type(c.value) is type(value)
    assert f"({text}," in print_program(p) or f" {text} &" in print_program(p)


def test_nan_constant():
    p = parse_program("program p() dims()\ntask t(;) dims() grid() {\n  s: f32 = nan * 2\n}\n")
    assert math.isnan(p.tasks[0].body[0].value.args[0].value)


def test_parse_error_names_line_and_column():
    text = "program p() dims()\ntask t(i; n: i32) dims() grid(n) {\n  s: f32 = 1 + \n}\n"
    with pytest.raises(IRParseError) as err:
        parse_program(text)
    assert (err.value.line, err.value.column) == (4, 1)
    assert "IR text line 4, column 1: unexpected '}'" in str(err.value)
    assert "'('" in str(err.value) and "NAME" in str(err.value)


def test_parse_error_on_bad_character():
    with pytest.raises(IRParseError, match=r"line 1, column 12: unexpected character '\$'"):
        parse_program("program p()$ dims()")


def test_undefined_name_is_a_parse_error():
    text = "program p() dims()\ntask t(i;) dims() grid(4) {\n  s: i32 = i + j\n}\n"
    with pytest.raises(IRParseError, match=r"line 3, column 16: name j is not defined here"):
        parse_program(text)


def test_names_do_not_outlive_their_block():
    text = ("program p() dims()\ntask t(i;) dims() grid(4) {\n"
            "  for k in range(0, 4, 1) {\n    s: i32 = k\n  }\n  u: i32 = s\n}\n")
    with pytest.raises(IRParseError, match="name s is not defined"):
        parse_program(text)


def test_type_error_in_text():
    text = ("program p() dims()\ntask t(;) dims() grid() {\n"
            "  a: f32[16, 32] = zeros(shape=(16, 32), dtype=f32)\n"
            "  b: f32[16, 64] = zeros(shape=(16, 64), dtype=f32)\n"
            "  c: f32[16, 64] = dot(a, b) loc(\"m.py\":7:4)\n}\n")
    with pytest.raises(TypeMismatchError, match=r"dot: inner sizes differ.*\(IR text line 5, column 20\)") as err:
        parse_program(text)
    assert err.value.loc == SourceLoc("m.py", 7, 4)


def test_declared_type_must_match_value():
    text = "program p() dims()\ntask t(;) dims() grid() {\n  a: f16 = 1.5:f32\n}\n"
    with pytest.raises(TypeMismatchError, match="a is declared f16 but its value is f32"):
        parse_program(text)


def test_launch_args_by_parameter_kind():
    text = ("program p(x: tensor<f32>[N], a: f32, n: i32) dims(N)\n"
            "task t(;x: tensor<f32>[N], a: f32, n: i32) dims(N) grid() {\n}\n"
            "launch t = t(x=x, a=a, n=n) {\n  dims(N=N)\n  grid()\n}\n"
            "launch t2 = t(x=x, a=-inf, n=N // 2) {\n  dims(N=N)\n  grid()\n}\n")
    first, second = parse_program(text).launches
    assert first.args == (("x", "x"), ("a", "a"), ("n", D.Sym("n")))
    assert second.arg("a") == -math.inf and second.arg("n") == D.BinOp("//", D.Sym("N"), D.Const(2))


def test_frontend_task_round_trips():
    from evtdsl.frontend import tile_ops as evt
    from evtdsl.frontend.annotations import Tensor
    from evtdsl.frontend.megakernel import task

    M, K = D.dim("M"), D.dim("K")

    @task(grid=(D.cdiv(M, 16), 4))
    def partial(i, k, x: Tensor[M, K, dt.f32], part: Tensor[M, 4, dt.f32]):
        acc = evt.zeros((16,), dt.f32)
        for kk in range(k * 64, K, 256):
            acc += evt.sum(evt.load(x, (i * 16, kk), (16, 64), other=-math.inf), axis=1)
        if i < 3:
            acc = evt.where(acc > 0.5, acc * 2.0, -acc)
        evt.store(part, (i * 16, k), acc[:, None])

    t = partial.ir
    event = N.EventDecl("E", (D.Func("cdiv", M, D.Const(16)),), D.Const(4))
    launch = N.Launch("partial", "partial", (("x", "x"), ("part", "part")), (("M", M), ("K", K)),
                      tuple(N.GridAxis(D.Const(0), g) for g in t.grid), (),
                      (N.EdgeMap("E", t.coords, (D.Sym("i"), None), source="ik->i"),))
    p = N.Program("rowsum", t.params, ("M", "K"), (t,), (event,), (launch,))
    text = print_program(p, locs=True)
    assert print_program(parse_program(text), locs=True) == text
    assert print_task(t) in print_program(p)


def test_only_inf_and_nan_are_reserved_names():
    """Where the grammar accepts a name, the keywords it also accepts there are no Python identifiers (or
    are `inf`/`nan`, which read as floats), so any IR name prints and parses back as itself."""
    from lark.lexer import PatternStr

    from evtdsl.ir.parser import _lark

    lark = _lark()
    word_keywords = {t.name: t.pattern.value for t in lark.terminals
                     if isinstance(t.pattern, PatternStr) and t.pattern.value.isidentifier()}
    type_words = {"tensor", "inout", "void"}  # accepted only where a dtype name is
    clashes = set()
    for actions in lark.parser.parser.parser.parse_table.states.values():
        if "NAME" in actions:
            clashes |= {word_keywords[k] for k in actions if k in word_keywords}
    assert clashes - set(keyword.kwlist) - type_words == {"inf", "nan"}
