"""Python AST of an ``@evt.task`` body -> typed task IR.

Each AST node type is handled by one method of ``_Builder`` (``stmt_<Name>`` / ``expr_<Name>``);
anything else is refused with "`ast.X` is not supported in a task", the file, line and a caret.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import operator
import textwrap
from dataclasses import dataclass
from typing import Any

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import SourceLoc, TypeMismatchError, UnsupportedSyntaxError
from ..ir import dims as D
from ..ir import nodes as N
from ..ir import ops
from ..ir.types import ScalarType, TensorType, TileType
from . import tile_ops


@dataclass
class Static:
    """A value known while compiling: an int, float, dtype, module, function, shape tuple."""

    value: Any


_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "truediv", ast.FloorDiv: "floordiv",
           ast.Mod: "mod", ast.Pow: "pow", ast.BitAnd: "and", ast.BitOr: "or"}
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_PYCMP = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge, "eq": operator.eq,
          "ne": operator.ne}
_PYFOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "truediv": lambda a, b: a / b, "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b,
           "pow": lambda a, b: a**b}

# evt functions the parser knows, by identity, with the op they become.
_SIMPLE_UNARY = {getattr(tile_ops, n): n for n in tile_ops.UNARY}


class _Builder:
    def __init__(self, fn, grid: tuple, file: str, first_line: int, col_shift: int):
        self.fn = fn
        self.file = file
        self.first_line = first_line
        self.col_shift = col_shift
        self.scope = dict(fn.__globals__)
        if fn.__closure__:
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
                try:
                    self.scope[name] = cell.cell_contents
                except ValueError:
                    pass
        self.grid = grid
        self.params: dict[str, N.Param] = {}
        self.coords: tuple[str, ...] = ()
        self.dims: list[str] = []
        # block-structured variable scopes: name -> type
        self.blocks: list[dict[str, Any]] = [{}]
        self.outer_names: dict[str, None] = {}

    # -- locations and errors ------------------------------------------------------------------
    def loc(self, node: ast.AST) -> SourceLoc:
        return SourceLoc(self.file, self.first_line + node.lineno - 1, node.col_offset + self.col_shift)

    def unsupported(self, node: ast.AST, what: str | None = None):
        what = what or f"`ast.{type(node).__name__}` is not supported in a task"
        raise UnsupportedSyntaxError(what, self.loc(node))

    def type_error(self, node: ast.AST, msg: str):
        raise TypeMismatchError(msg, self.loc(node))

    # -- variables -----------------------------------------------------------------------------
    def lookup_var(self, name: str):
        for b in reversed(self.blocks):
            if name in b:
                return b[name]
        return None

    def define(self, name: str, typ, node: ast.AST):
        self.blocks[-1][name] = typ

    # -- signature -----------------------------------------------------------------------------
    def signature(self, fdef: ast.FunctionDef):
        args = fdef.args
        if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs or args.defaults:
            self.unsupported(fdef, "task parameters are plain positional names (no *args, **kwargs, defaults)")
        rank = len(self.grid)
        if len(args.args) < rank:
            self.type_error(fdef, f"a task with a {rank}-d grid takes {rank} coordinate parameters first, "
                                  f"got {len(args.args)} parameters")
        annotations = annotations_of(self.fn)
        coords = []
        for a in args.args[:rank]:
            ann = annotations.get(a.arg)
            if ann not in (None, int):
                self.type_error(a, f"coordinate parameter {a.arg} is an int (a grid index), not {ann!r}; "
                                   f"the grid has {rank} axes, so the first {rank} parameters are coordinates")
            coords.append(a.arg)
            self.define(a.arg, ScalarType(dt.i32), a)
        self.coords = tuple(coords)
        params: list[N.Param] = []
        for a in args.args[rank:]:
            ann = annotations.get(a.arg)
            if isinstance(ann, TensorType):
                params.append(N.Param(a.arg, ann))
            elif isinstance(ann, DType):
                params.append(N.Param(a.arg, ScalarType(ann)))
            elif ann in (int, float):
                params.append(N.Param(a.arg, ScalarType(dt.i32 if ann is int else dt.f32)))
            else:
                self.type_error(a, f"parameter {a.arg} needs an annotation: evt.Tensor[..., dtype], "
                                   f"evt.InOut[..., dtype], or a dtype for a scalar; got {ann!r}")
            self.params[a.arg] = params[-1]
            self.define(a.arg, params[-1].type, a)
        dims: list[str] = []
        for p in params:
            if isinstance(p.type, TensorType):
                for s in p.type.shape:
                    for sym in sorted(s.syms()):
                        if sym not in dims and sym not in self.params:
                            dims.append(sym)
        scalar_ints = {p.name for p in params if isinstance(p.type, ScalarType) and p.type.dtype.is_int}
        for g in self.grid:
            for sym in sorted(D.as_expr(g).syms()):
                if sym not in dims and sym not in scalar_ints:
                    self.type_error(fdef, f"the grid names size {sym}, which no tensor parameter's shape and no "
                                          f"int parameter of task `{fdef.name}` provides")
        for d in dims:
            self.define(d, ScalarType(dt.i32), fdef)
        self.dims = dims
        return params

    # -- statements ----------------------------------------------------------------------------
    def block(self, stmts: list[ast.stmt]) -> list[N.Stmt]:
        out: list[N.Stmt] = []
        for s in stmts:
            handler = getattr(self, f"stmt_{type(s).__name__}", None)
            if handler is None:
                self.unsupported(s)
            r = handler(s)
            if r is not None:
                out.append(r)
        return out

    def stmt_Pass(self, node):
        return None

    def stmt_Expr(self, node: ast.Expr):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None  # docstring
        v = self.expr(node.value)
        if isinstance(v, N.Op) and ops.REGISTRY[v.name].effect:
            return N.Eval(v, loc=self.loc(node))
        self.unsupported(node, "an expression statement must be a store or atomic_add; its value is unused")

    def stmt_Return(self, node: ast.Return):
        if node.value is not None:
            self.unsupported(node, "a task returns nothing: write results with evt.store")
        self.unsupported(node, "`return` is not supported in a task; use `if` around the work instead")

    def _assign(self, name: str, value: N.Expr, node: ast.AST) -> N.Assign:
        if name in self.params or name in self.coords or name in self.dims:
            self.type_error(node, f"{name} is a task parameter, coordinate or size and cannot be assigned")
        prev = self.lookup_var(name)
        if prev is not None and prev != value.type:
            if isinstance(prev, ScalarType) and isinstance(value.type, ScalarType):
                value = N.Op(prev, "cast", (value,), (("dtype", prev.dtype),), loc=self.loc(node))
            elif isinstance(prev, TileType) and isinstance(value.type, TileType) and prev.shape == value.type.shape:
                self.type_error(node, f"{name} was {prev} and would become {value.type}: a variable keeps one "
                                      f"type; write `.to(evt.{prev.dtype})`")
            else:
                self.type_error(node, f"{name} was {prev} and would become {value.type}: a variable keeps one type")
        elif prev is None:
            self.define(name, value.type, node)
        return N.Assign(name, value, loc=self.loc(node))

    def stmt_Assign(self, node: ast.Assign):
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            self.unsupported(node, "assign to one plain name at a time (`x = ...`)")
        return self._assign(node.targets[0].id, self.as_ir(self.expr(node.value), node.value), node)

    def stmt_AugAssign(self, node: ast.AugAssign):
        if not isinstance(node.target, ast.Name):
            self.unsupported(node, "augmented assignment works on plain names (`acc += ...`)")
        op = _BINOPS.get(type(node.op))
        if op is None:
            self.unsupported(node, f"`{type(node.op).__name__}=` is not supported in a task")
        cur = self.expr(ast.Name(node.target.id, ast.Load(), lineno=node.lineno, col_offset=node.col_offset))
        return self._assign(node.target.id, self.binary(op, cur, self.expr(node.value), node), node)

    def stmt_For(self, node: ast.For):
        if node.orelse:
            self.unsupported(node, "`for ... else` is not supported in a task")
        if not isinstance(node.target, ast.Name):
            self.unsupported(node, "a loop variable is one plain name")
        it = node.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                and self.scope.get("range", builtins.range) is builtins.range and not it.keywords
                and 1 <= len(it.args) <= 3):
            self.unsupported(it, "a task loops only over `range(stop)`, `range(start, stop)` or "
                                 "`range(start, stop, step)`")
        bounds = [self.expr(a) for a in it.args]
        if len(bounds) == 1:
            bounds = [Static(0), bounds[0]]
        if len(bounds) == 2:
            bounds.append(Static(1))
        step = bounds[2]
        if not (isinstance(step, Static) and isinstance(step.value, int) and step.value != 0):
            self.type_error(it, "the step of a loop must be a nonzero static int (a literal or a global constant)")
        start, stop, step_e = (self.scalar_int(b, it) for b in bounds)
        var = node.target.id
        if self.lookup_var(var) is not None:
            self.type_error(node.target, f"loop variable {var} shadows an existing name")
        body = self.sub_block(node.body, {var: ScalarType(dt.i32)})
        return N.For(var, start, stop, step_e, body, loc=self.loc(node))

    def stmt_If(self, node: ast.If):
        cond = self.expr(node.test)
        if isinstance(cond, Static):
            # a static condition picks its branch while compiling
            return self._inline(node.body if cond.value else node.orelse)
        cond = self.as_ir(cond, node.test)
        if not isinstance(cond.type, ScalarType):
            self.type_error(node.test, f"an `if` condition is a scalar, got {cond.type}; use evt.where for tiles")
        if cond.type.dtype != dt.bool_:
            cond = N.Op(ScalarType(dt.bool_), "ne", (cond, N.Const(cond.type, 0, True)), loc=self.loc(node.test))
        then = self.sub_block(node.body, {})
        orelse = self.sub_block(node.orelse, {})
        return N.If(cond, then, orelse, loc=self.loc(node))

    def sub_block(self, stmts, initial: dict) -> list[N.Stmt]:
        """Statements in a nested scope; names first assigned there are not visible after it."""
        self.blocks.append(dict(initial))
        body = self.block(stmts)
        inner = self.blocks.pop()
        for name in inner:
            if name not in initial and self.lookup_var(name) is None:
                self.outer_names[name] = None
        return body

    def _inline(self, stmts):
        body = self.block(stmts)
        return N.If(N.Const(ScalarType(dt.bool_), True), body, []) if body else None

    # -- expressions ---------------------------------------------------------------------------
    def expr(self, node: ast.expr) -> N.Expr | Static:
        handler = getattr(self, f"expr_{type(node).__name__}", None)
        if handler is None:
            self.unsupported(node)
        return handler(node)

    def as_ir(self, v, node: ast.AST) -> N.Expr:
        if isinstance(v, N.Expr):
            return v
        val = v.value
        if isinstance(val, bool):
            return N.Const(ScalarType(dt.bool_), val, True, loc=self.loc(node))
        if isinstance(val, int):
            if not -2**31 <= val < 2**31:  # too large for i32: an i64 that promotes what it meets
                return N.Const(ScalarType(dt.i64), val, False, loc=self.loc(node))
            return N.Const(ScalarType(dt.i32), val, True, loc=self.loc(node))
        if isinstance(val, float):
            return N.Const(ScalarType(dt.f32), val, True, loc=self.loc(node))
        if isinstance(val, D.IntExpr):
            return self.size_expr(val, node)
        self.type_error(node, f"{val!r} ({type(val).__name__}) cannot be used as a value in a task")

    def size_expr(self, e: D.IntExpr, node: ast.AST) -> N.Expr:
        """A symbolic size as task code: its dims become the task's size variables."""
        loc = self.loc(node)
        i32 = ScalarType(dt.i32)
        if isinstance(e, D.Const):
            return N.Const(i32, e.value, True, loc=loc)
        if isinstance(e, D.Sym):
            if self.lookup_var(e.name) is None or (e.name not in self.dims and e.name not in self.params):
                self.type_error(node, f"size {e.name} is not known in this task: no tensor parameter's shape names it")
            return N.Var(i32, e.name, loc=loc)
        if isinstance(e, D.BinOp):
            op = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "%": "mod"}[e.op]
            return N.Op(i32, op, (self.size_expr(e.a, node), self.size_expr(e.b, node)), loc=loc)
        if isinstance(e, D.Func):
            a, b = self.size_expr(e.a, node), self.size_expr(e.b, node)
            if e.fn == "cdiv":
                one = N.Const(i32, 1, True, loc=loc)
                num = N.Op(i32, "sub", (N.Op(i32, "add", (a, b), loc=loc), one), loc=loc)
                return N.Op(i32, "floordiv", (num, b), loc=loc)
            return N.Op(i32, "minimum" if e.fn == "min" else "maximum", (a, b), loc=loc)
        self.type_error(node, f"size {e} cannot be used in a task")

    def scalar_int(self, v, node) -> N.Expr:
        e = self.as_ir(v, node)
        if not (isinstance(e.type, ScalarType) and e.type.dtype.is_int):
            self.type_error(node, f"expected an integer scalar, got {e.type}")
        return e

    def static(self, v, node, what: str):
        if not isinstance(v, Static):
            self.type_error(node, f"{what} must be known while compiling (a literal or a global constant)")
        return v.value

    def static_shape(self, node: ast.expr, what: str) -> tuple[int, ...]:
        v = self.expr(node)
        val = self.static(v, node, what)
        if isinstance(val, int) and not isinstance(val, bool):
            val = (val,)
        if not (isinstance(val, tuple) and val and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in val)):
            self.type_error(node, f"{what} must be a tuple of positive static ints, got {val!r}")
        return val

    def expr_Constant(self, node: ast.Constant):
        if isinstance(node.value, (bool, int, float)):
            return Static(node.value)
        self.unsupported(node, f"constant {node.value!r} is not supported in a task")

    def expr_Name(self, node: ast.Name):
        typ = self.lookup_var(node.id)
        if typ is not None:
            return N.Var(typ, node.id, loc=self.loc(node))
        if node.id in self.outer_names:
            self.type_error(node, f"{node.id} is assigned inside a loop or branch and used after it; "
                                  f"assign it before the block")
        if node.id in self.scope:
            return Static(self.scope[node.id])
        if hasattr(builtins, node.id):
            return Static(getattr(builtins, node.id))
        self.type_error(node, f"name {node.id} is not defined")

    def expr_Tuple(self, node: ast.Tuple):
        items = [self.expr(e) for e in node.elts]
        if all(isinstance(i, Static) for i in items):
            return Static(tuple(i.value for i in items))
        return Static(tuple(i if isinstance(i, N.Expr) else i.value for i in items))

    expr_List = expr_Tuple

    def expr_Attribute(self, node: ast.Attribute):
        base = self.expr(node.value)
        if isinstance(base, Static):
            try:
                return Static(getattr(base.value, node.attr))
            except AttributeError:
                self.type_error(node, f"{ast.unparse(node.value)} has no attribute {node.attr}")
        t = base.type
        if node.attr == "shape":
            if isinstance(t, TensorType):
                return Static(tuple(self.size_expr(s, node) if not isinstance(s, D.Const) else s.value for s in t.shape))
            if isinstance(t, TileType):
                return Static(t.shape)
        if node.attr == "T":
            return self.op("trans", (base,), {}, node)
        if node.attr == "to":
            return Static(("method_to", base))
        if node.attr == "dtype" and hasattr(t, "dtype"):
            return Static(t.dtype)
        self.type_error(node, f"{t} has no attribute {node.attr} in task code")

    def expr_Subscript(self, node: ast.Subscript):
        base = self.expr(node.value)
        idx = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if isinstance(base, Static):
            if isinstance(base.value, tuple):
                i = self.static(self.expr(node.slice), node.slice, "a shape index")
                item = base.value[i]
                return item if isinstance(item, N.Expr) else Static(item)
            self.type_error(node, f"cannot index {base.value!r} in a task")
        t = base.type
        if isinstance(t, TensorType):
            offs = [self.scalar_int(self.expr(i), i) for i in idx]
            return self.op("load_scalar", (base, *offs), {}, node)
        if isinstance(t, TileType):
            # only `t[:, None]`-style axis insertion
            out = base
            axis = 0
            for i in idx:
                if isinstance(i, ast.Slice) and i.lower is None and i.upper is None and i.step is None:
                    axis += 1
                elif isinstance(i, ast.Constant) and i.value is None:
                    out = self.op("expand_dims", (out,), {"axis": axis}, node)
                    axis += 1
                else:
                    self.unsupported(i, "tiles are indexed only with `:` and `None` (to add an axis)")
            return out
        self.type_error(node, f"cannot index a {t}")

    def expr_BinOp(self, node: ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            self.unsupported(node, f"operator {type(node.op).__name__} is not supported in a task")
        return self.binary(op, self.expr(node.left), self.expr(node.right), node)

    def binary(self, op: str, a, b, node):
        if isinstance(a, Static) and isinstance(b, Static):
            if isinstance(a.value, D.IntExpr) or isinstance(b.value, D.IntExpr):
                a, b = self.as_ir(a, node), self.as_ir(b, node)
            else:
                if op in _PYFOLD:
                    try:
                        return Static(_PYFOLD[op](a.value, b.value))
                    except Exception as e:  # noqa: BLE001
                        self.type_error(node, f"cannot compute {a.value!r} {op} {b.value!r}: {e}")
                self.type_error(node, f"cannot apply {op} to {a.value!r} and {b.value!r}")
        if op == "pow":
            b_static = b.value if isinstance(b, Static) else None
            if b_static == 2:
                a = self.as_ir(a, node)
                return self.op("mul", (a, a), {}, node)
        return self.op(op, (self.as_ir(a, node), self.as_ir(b, node)), {}, node)

    def expr_UnaryOp(self, node: ast.UnaryOp):
        v = self.expr(node.operand)
        if isinstance(node.op, ast.UAdd):
            return v
        if isinstance(v, Static) and not isinstance(v.value, D.IntExpr):
            if isinstance(node.op, ast.USub):
                return Static(-v.value)
            if isinstance(node.op, ast.Not):
                return Static(not v.value)
        name = {ast.USub: "neg", ast.Not: "not", ast.Invert: "not"}.get(type(node.op))
        if name is None:
            self.unsupported(node)
        return self.op(name, (self.as_ir(v, node),), {}, node)

    def expr_Compare(self, node: ast.Compare):
        if len(node.ops) != 1:
            self.unsupported(node, "chained comparisons are not supported in a task; combine with `&`")
        op = _CMPOPS.get(type(node.ops[0]))
        if op is None:
            self.unsupported(node, f"comparison {type(node.ops[0]).__name__} is not supported in a task")
        a, b = self.expr(node.left), self.expr(node.comparators[0])
        if isinstance(a, Static) and isinstance(b, Static) and not isinstance(a.value, D.IntExpr) \
                and not isinstance(b.value, D.IntExpr):
            return Static(_PYCMP[op](a.value, b.value))
        return self.op(op, (self.as_ir(a, node), self.as_ir(b, node)), {}, node)

    def expr_BoolOp(self, node: ast.BoolOp):
        name = "and" if isinstance(node.op, ast.And) else "or"
        vals = [self.as_ir(self.expr(v), v) for v in node.values]
        for v, n in zip(vals, node.values):
            if not isinstance(v.type, ScalarType):
                self.type_error(n, f"`{name}` works on scalars; for tiles use `&` / `|`")
        out = vals[0]
        for v in vals[1:]:
            out = self.op(name, (out, v), {}, node)
        return out

    def expr_IfExp(self, node: ast.IfExp):
        c = self.as_ir(self.expr(node.test), node.test)
        return self.op("where", (c, self.as_ir(self.expr(node.body), node.body),
                                 self.as_ir(self.expr(node.orelse), node.orelse)), {}, node)

    def op(self, name: str, args, attrs: dict, node) -> N.Op:
        try:
            typ = ops.infer(name, args, attrs)
        except TypeMismatchError as e:
            self.type_error(node, e.message)
        return N.Op(typ, name, tuple(args), tuple(attrs.items()), loc=self.loc(node))

    # -- calls ---------------------------------------------------------------------------------
    def expr_Call(self, node: ast.Call):
        fv = self.expr(node.func)
        if isinstance(fv, Static) and isinstance(fv.value, tuple) and fv.value and fv.value[0] == "method_to":
            if len(node.args) != 1 or node.keywords:
                self.type_error(node, "`.to(dtype)` takes one dtype")
            d = self.static(self.expr(node.args[0]), node.args[0], "the dtype")
            return self.op("cast", (fv.value[1],), {"dtype": self._dtype(d, node)}, node)
        if not isinstance(fv, Static):
            self.type_error(node, f"{ast.unparse(node.func)} is not callable in a task")
        f = fv.value
        if f in _SIMPLE_UNARY:
            a = self._bind(f, node)
            x = a["a"]
            if isinstance(x, Static) and _SIMPLE_UNARY[f] == "abs":
                return Static(builtins.abs(x.value))
            return self.op(_SIMPLE_UNARY[f], (self.as_ir(x, node),), {}, node)
        handler = _CALLS.get(f)
        if handler is None:
            name = getattr(f, "__name__", repr(f))
            self.unsupported(node, f"calling {name} is not supported in a task (only evt tile functions, "
                                   f"min, max, abs, float and int)")
        return handler(self, node)

    def _bind(self, f, node: ast.Call) -> dict[str, Any]:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.unsupported(node, "*args and **kwargs are not supported in a task")
        try:
            bound = inspect.signature(f).bind(*node.args, **{k.arg: k.value for k in node.keywords})
        except TypeError as e:
            self.type_error(node, f"evt.{f.__name__}: {e}")
        bound.apply_defaults()
        out = {}
        for k, v in bound.arguments.items():
            if isinstance(v, ast.AST):
                out[k] = self.expr(v)
                out["__node_" + k] = v
            else:
                out[k] = Static(v) if not isinstance(v, tuple) or k != "args" else tuple(self.expr(x) for x in v)
                out["__node_" + k] = node
        return out

    def _dtype(self, d, node) -> DType:
        if d is float:
            return dt.f32
        if d is int:
            return dt.i32
        if not isinstance(d, DType):
            self.type_error(node, f"expected a dtype (evt.f32, evt.bf16, ...), got {d!r}")
        return d

    def _offsets(self, v, node, tensor_t) -> list[N.Expr]:
        if isinstance(v, Static) and isinstance(v.value, tuple):
            items = v.value
        elif isinstance(v, Static) and isinstance(v.value, int):
            items = (v.value,)
        elif isinstance(v, N.Expr):
            items = (v,)
        else:
            self.type_error(node, f"offsets must be a tuple of integer scalars, got {v!r}")
        return [self.scalar_int(i if isinstance(i, N.Expr) else Static(i), node) for i in items]

    def _tensor(self, v, node, fname) -> N.Var:
        if not (isinstance(v, N.Var) and isinstance(v.type, TensorType)):
            self.type_error(node, f"evt.{fname}: the first argument must be a tensor parameter of the task")
        return v

    def call_load(self, node):
        a = self._bind(tile_ops.load, node)
        t = self._tensor(a["tensor"], node, "load")
        offs = self._offsets(a["offsets"], a["__node_offsets"], t.type)
        shape = self.static_shape(a["__node_shape"], "the tile shape")
        other = self.static(a["other"], node, "`other`")
        return self.op("load", (t, *offs), {"shape": shape, "other": other}, node)

    def _store_like(self, node, fn, name):
        a = self._bind(fn, node)
        t = self._tensor(a["tensor"], node, name)
        offs = self._offsets(a["offsets"], a["__node_offsets"], t.type)
        val = self.as_ir(a["value"], node)
        return self.op(name, (t, *offs, val), {}, node)

    def call_store(self, node):
        return self._store_like(node, tile_ops.store, "store")

    def call_atomic_add(self, node):
        return self._store_like(node, tile_ops.atomic_add, "atomic_add")

    def call_zeros(self, node):
        a = self._bind(tile_ops.zeros, node)
        shape = self.static_shape(a["__node_shape"], "the tile shape")
        d = self._dtype(self.static(a["dtype"], node, "the dtype"), node)
        return self.op("zeros", (), {"shape": shape, "dtype": d}, node)

    def call_full(self, node):
        a = self._bind(tile_ops.full, node)
        shape = self.static_shape(a["__node_shape"], "the tile shape")
        d = self._dtype(self.static(a["dtype"], node, "the dtype"), node)
        v = self.as_ir(a["value"], node)
        if not isinstance(v.type, ScalarType):
            self.type_error(node, f"evt.full: the value must be a scalar, got {v.type}")
        return self.op("full", (v,), {"shape": shape, "dtype": d}, node)

    def call_arange(self, node):
        a = self._bind(tile_ops.arange, node)
        n = self.static(a["n"], node, "the length of arange")
        return self.op("arange", (), {"n": n}, node)

    def call_dot(self, node):
        a = self._bind(tile_ops.dot, node)
        return self.op("dot", (self.as_ir(a["a"], node), self.as_ir(a["b"], node)), {}, node)

    def call_trans(self, node):
        a = self._bind(tile_ops.trans, node)
        return self.op("trans", (self.as_ir(a["a"], node),), {}, node)

    def call_reshape(self, node):
        a = self._bind(tile_ops.reshape, node)
        shape = self.static_shape(a["__node_shape"], "the new shape")
        return self.op("reshape", (self.as_ir(a["a"], node),), {"shape": shape}, node)

    def call_broadcast_to(self, node):
        a = self._bind(tile_ops.broadcast_to, node)
        shape = self.static_shape(a["__node_shape"], "the new shape")
        return self.op("broadcast_to", (self.as_ir(a["a"], node),), {"shape": shape}, node)

    def call_expand_dims(self, node):
        a = self._bind(tile_ops.expand_dims, node)
        axis = self.static(a["axis"], node, "the axis")
        return self.op("expand_dims", (self.as_ir(a["a"], node),), {"axis": axis}, node)

    def call_cast(self, node):
        a = self._bind(tile_ops.cast, node)
        d = self._dtype(self.static(a["dtype"], node, "the dtype"), node)
        return self.op("cast", (self.as_ir(a["a"], node),), {"dtype": d}, node)

    def call_where(self, node):
        a = self._bind(tile_ops.where, node)
        return self.op("where", tuple(self.as_ir(a[k], node) for k in ("cond", "a", "b")), {}, node)

    def _pair(self, node, fn, name):
        a = self._bind(fn, node)
        x, y = a["a"], a["b"]
        if isinstance(x, Static) and isinstance(y, Static) and not isinstance(x.value, D.IntExpr) \
                and not isinstance(y.value, D.IntExpr):
            return Static((builtins.max if name == "maximum" else builtins.min)(x.value, y.value))
        return self.op(name, (self.as_ir(x, node), self.as_ir(y, node)), {}, node)

    def call_maximum(self, node):
        return self._pair(node, tile_ops.maximum, "maximum")

    def call_minimum(self, node):
        return self._pair(node, tile_ops.minimum, "minimum")

    def call_cdiv(self, node):
        a = self._bind(tile_ops.cdiv, node)
        x, y = a["a"], a["b"]
        if isinstance(x, Static) and isinstance(y, Static):
            return Static(D.cdiv(x.value, y.value))
        x, y = self.scalar_int(x, node), self.scalar_int(y, node)
        one = N.Const(ScalarType(dt.i32), 1, True, loc=self.loc(node))
        return self.op("floordiv", (self.op("sub", (self.op("add", (x, y), {}, node), one), {}, node), y), {}, node)

    def _reduce_or_pair(self, node, fn, name):
        a = self._bind(fn, node)
        args = a["args"]
        if a["axis"].value is None:
            if len(args) != 2:
                self.type_error(node, f"evt.{name} takes a tile and axis=..., or two values")
            x, y = args
            if isinstance(x, Static) and isinstance(y, Static) and not isinstance(x.value, D.IntExpr) \
                    and not isinstance(y.value, D.IntExpr):
                return Static((builtins.max if name == "max" else builtins.min)(x.value, y.value))
            return self.op("maximum" if name == "max" else "minimum",
                           (self.as_ir(x, node), self.as_ir(y, node)), {}, node)
        if len(args) != 1:
            self.type_error(node, f"evt.{name}(tile, axis=...) takes one tile")
        return self._reduce(name, args[0], a, node)

    def _reduce(self, name, x, a, node):
        axis = self.static(a["axis"], node, "the axis")
        keep = self.static(a["keepdims"], node, "keepdims")
        return self.op(name, (self.as_ir(x, node),), {"axis": axis, "keepdims": bool(keep)}, node)

    def call_sum(self, node):
        a = self._bind(tile_ops.sum, node)
        return self._reduce("sum", a["a"], a, node)

    def call_max(self, node):
        return self._reduce_or_pair(node, tile_ops.max, "max")

    def call_min(self, node):
        return self._reduce_or_pair(node, tile_ops.min, "min")

    def call_builtin_minmax(self, node, name):
        if node.keywords or len(node.args) != 2:
            self.type_error(node, f"{name}() in a task takes two values")
        x, y = (self.expr(a) for a in node.args)
        if isinstance(x, Static) and isinstance(y, Static) and not isinstance(x.value, D.IntExpr) \
                and not isinstance(y.value, D.IntExpr):
            return Static(getattr(builtins, name)(x.value, y.value))
        return self.op("maximum" if name == "max" else "minimum",
                       (self.as_ir(x, node), self.as_ir(y, node)), {}, node)

    def call_builtin_conv(self, node, d):
        if node.keywords or len(node.args) != 1:
            self.type_error(node, "float()/int() take one value")
        arg = node.args[0]
        if d == dt.f32 and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            try:
                return Static(float(arg.value))  # float("-inf")
            except ValueError:
                self.type_error(arg, f"float({arg.value!r}) is not a number")
        v = self.expr(arg)
        if isinstance(v, Static) and not isinstance(v.value, D.IntExpr):
            return Static(float(v.value) if d == dt.f32 else int(v.value))
        return self.op("cast", (self.as_ir(v, node),), {"dtype": d}, node)


_CALLS = {
    tile_ops.load: _Builder.call_load,
    tile_ops.store: _Builder.call_store,
    tile_ops.atomic_add: _Builder.call_atomic_add,
    tile_ops.zeros: _Builder.call_zeros,
    tile_ops.full: _Builder.call_full,
    tile_ops.arange: _Builder.call_arange,
    tile_ops.dot: _Builder.call_dot,
    tile_ops.trans: _Builder.call_trans,
    tile_ops.reshape: _Builder.call_reshape,
    tile_ops.broadcast_to: _Builder.call_broadcast_to,
    tile_ops.expand_dims: _Builder.call_expand_dims,
    tile_ops.cast: _Builder.call_cast,
    tile_ops.where: _Builder.call_where,
    tile_ops.maximum: _Builder.call_maximum,
    tile_ops.minimum: _Builder.call_minimum,
    tile_ops.cdiv: _Builder.call_cdiv,
    D.cdiv: _Builder.call_cdiv,
    tile_ops.sum: _Builder.call_sum,
    tile_ops.max: _Builder.call_max,
    tile_ops.min: _Builder.call_min,
    builtins.min: lambda self, node: self.call_builtin_minmax(node, "min"),
    builtins.max: lambda self, node: self.call_builtin_minmax(node, "max"),
    builtins.float: lambda self, node: self.call_builtin_conv(node, dt.f32),
    builtins.int: lambda self, node: self.call_builtin_conv(node, dt.i32),
}


def annotations_of(fn) -> dict[str, Any]:
    """The function's annotations, evaluated where they are strings (``from __future__ import annotations``)
    with its globals and closure variables in scope."""
    closure = {}
    if fn.__closure__:
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__):
            try:
                closure[name] = cell.cell_contents
            except ValueError:
                pass
    try:
        return inspect.get_annotations(fn, locals=closure, eval_str=True)
    except NameError as e:
        loc = SourceLoc(fn.__code__.co_filename, fn.__code__.co_firstlineno, 0)
        raise TypeMismatchError(
            f"cannot evaluate the annotations of {fn.__name__}: {e}. Under `from __future__ import annotations` "
            f"they are strings, and names local to an enclosing function are not visible to them; drop that "
            f"import in this module", loc) from None


def parse_task(fn, grid: tuple) -> N.TaskDef:
    """Compile the body of ``fn`` to a TaskDef. ``grid`` is a tuple of ints / size expressions."""
    try:
        lines, first_line = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as e:
        raise UnsupportedSyntaxError(f"cannot read the source of task {fn.__name__}: {e}; tasks must be "
                                     f"defined in a file or a notebook cell") from None
    src = "".join(lines)
    dedented = textwrap.dedent(src)
    shift = len(lines[0]) - len(lines[0].lstrip()) if lines else 0
    tree = ast.parse(dedented)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise UnsupportedSyntaxError(f"@evt.task decorates a plain `def` function, not {type(fdef).__name__}",
                                     SourceLoc(file, first_line, 0))
    b = _Builder(fn, grid, file, first_line, shift)
    params = b.signature(fdef)
    body = b.block(fdef.body)
    return N.TaskDef(fdef.name, b.coords, tuple(params), tuple(b.dims), tuple(D.as_expr(g) for g in grid), body,
                     loc=b.loc(fdef))
