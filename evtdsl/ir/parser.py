"""Reads the IR's text form (``printer.py``; grammar in ``grammar.lark``) back into IR nodes.

Every operation's type is inferred again with ``ops.infer``; a name takes the type of its declaration in
scope (parameters; coordinates, dims and loop variables are i32; assignments their annotated type), so text
that is not type-correct raises ``TypeMismatchError``. Expressions take the location of their statement.

>>> p = parse_program('program p(x: tensor<f32>[N]) dims(N)')
>>> p.param("x").type.shape
(Sym(name='N'),)
"""
from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path

from lark import Lark, Token, Tree, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import EvtError, SourceLoc, TypeMismatchError
from . import dims as D
from . import nodes as N
from . import ops
from .printer import literal_dtype
from .types import VOID, ScalarType, TensorType, TileType, Type

_I32 = ScalarType(dt.i32)
_INFIX_OPS = {sym: name for name, sym in ops.INFIX.items()}
_PREFIX_OPS = {sym: name for name, sym in ops.PREFIX.items()}
_SIZE_OPS = ("+", "-", "*", "//", "%")
_SIZE_FUNCS = ("cdiv", "min", "max")
_NUMBERS = {"INT": int, "FLOAT": float, "INF": float, "NEG_INF": float, "NAN": float,
            "TRUE": lambda s: True, "FALSE": lambda s: False}


class IRParseError(EvtError):
    """IR text that does not parse or names something undeclared; says where, and shows the line."""

    def __init__(self, message: str, text: str, line: int, column: int):
        self.line, self.column = line, column
        source = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
        super().__init__(f"IR text line {line}, column {column}: {message}\n    {source}\n    {' ' * (column - 1)}^")


@functools.cache
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_program(text: str) -> N.Program:
    """The Program that ``text`` (as written by ``print_program``) describes."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise IRParseError(_describe(e), text, e.line, e.column) from None
    return _Builder(text).program(tree)


def _describe(e: UnexpectedInput) -> str:
    if isinstance(e, UnexpectedCharacters):
        return f"unexpected character {e.char!r}"
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        return f"unexpected {e.token.value!r}; expected {_expected(e.expected)}"
    expected = getattr(e, "expected", None)
    return "unexpected end of text" + (f"; expected {_expected(expected)}" if expected else "")


def _expected(names: Iterable[str]) -> str:
    """Terminals as the user would write them: `')'` for RPAR, NAME for a name."""
    patterns = {t.name: t.pattern for t in _lark().terminals}

    def show(name: str) -> str:
        pattern = patterns.get(name)
        if isinstance(pattern, PatternStr):
            return repr(pattern.value)
        return "end of text" if name == "$END" else name

    return ", ".join(sorted(map(show, names)))


def _items(tree: Tree | None) -> list:
    """The children of an optional list rule (``[names]``); none if it was absent."""
    return [] if tree is None else tree.children


def _position(where: Token | Tree) -> tuple[int, int]:
    return (where.line, where.column) if isinstance(where, Token) else (where.meta.line, where.meta.column)


def _number(tok: Token) -> bool | int | float:
    """A numeric or boolean literal: ``3``, ``-0.5``, ``1e-05``, ``inf``, ``nan``, ``True``."""
    return _NUMBERS[tok.type](str(tok))


class _Builder:
    """Builds nodes from the parse tree, tracking the names in scope and the current statement's loc."""

    def __init__(self, text: str):
        self.text = text
        self.scopes: list[dict[str, Type]] = []
        self.stmt_loc: SourceLoc | None = None
        self.tasks: dict[str, N.TaskDef] = {}

    def error(self, message: str, where: Token | Tree) -> IRParseError:
        return IRParseError(message, self.text, *_position(where))

    def type_error(self, message: str, where: Token | Tree) -> TypeMismatchError:
        line, column = _position(where)
        return TypeMismatchError(f"{message} (IR text line {line}, column {column})", self.stmt_loc)

    # -- program ---------------------------------------------------------------------------------
    def program(self, tree: Tree) -> N.Program:
        name, params, dims, loc, *items = tree.children
        by_kind: dict[str, list] = {"task": [], "event": [], "launch": []}
        for item in items:
            by_kind[item.data].append(getattr(self, item.data)(item))
        return N.Program(str(name), tuple(self.param(p) for p in _items(params)), self.names(dims),
                         tuple(by_kind["task"]), tuple(by_kind["event"]), tuple(by_kind["launch"]),
                         loc=self.loc(loc))

    def param(self, tree: Tree) -> N.Param:
        name, type_tree = tree.children
        t = self.type(type_tree)
        if not isinstance(t, (TensorType, ScalarType)):
            raise self.error(f"parameter {name} must be a tensor or a scalar, not {t}", type_tree)
        return N.Param(str(name), t)

    @staticmethod
    def names(tree: Tree | None) -> tuple[str, ...]:
        return tuple(map(str, _items(tree)))

    def string(self, tok: Token) -> str:
        try:
            return json.loads(tok)
        except json.JSONDecodeError as e:
            raise self.error(f"bad string {tok}: {e.msg}", tok) from None

    def ident(self, tree: Tree) -> str:
        tok = tree.children[0]
        return self.string(tok) if tok.type == "STRING" else str(tok)

    def loc(self, tree: Tree | None) -> SourceLoc | None:
        if tree is None:
            return None
        file, line, col = tree.children
        return SourceLoc(self.string(file), int(line), int(col))

    # -- types and sizes -------------------------------------------------------------------------
    def dtype(self, tok: Token) -> DType:
        if str(tok) not in dt.ALL:
            raise self.error(f"unknown dtype {tok}; expected one of {', '.join(dt.ALL)}", tok)
        return dt.ALL[str(tok)]

    def type(self, tree: Tree) -> Type:
        kind, ch = tree.data, tree.children
        if kind == "scalar_type":
            return ScalarType(self.dtype(ch[0]))
        if kind == "tile_type":
            return TileType(tuple(int(i) for i in _items(ch[1])), self.dtype(ch[0]))
        if kind in ("tensor_type", "inout_type"):
            return TensorType(self.iexprs(ch[1]), self.dtype(ch[0]), kind == "inout_type")
        return VOID

    def iexprs(self, tree: Tree | None) -> tuple[D.IntExpr, ...]:
        return tuple(self.iexpr(e) for e in _items(tree))

    def iexpr(self, tree: Tree) -> D.IntExpr:
        """A size expression, built as printed: no folding or simplification."""
        kind, ch = tree.data, tree.children
        if kind == "iconst":
            return D.Const(int(ch[0]))
        if kind == "isym":
            return D.Sym(str(ch[0]))
        if kind == "ibinop":
            a, op, b = ch
            if op not in _SIZE_OPS:
                raise self.error(f"`{op}` is not a size operator; sizes use {', '.join(_SIZE_OPS)}", op)
            return D.BinOp(str(op), self.iexpr(a), self.iexpr(b))
        if kind == "ifunc":
            fn, a, b = ch
            if fn not in _SIZE_FUNCS:
                raise self.error(f"unknown size function {fn}; expected one of {', '.join(_SIZE_FUNCS)}", fn)
            return D.Func(str(fn), self.iexpr(a), self.iexpr(b))
        return D.Load(str(ch[0]), self.iexprs(ch[1]))

    # -- tasks -----------------------------------------------------------------------------------
    def task(self, tree: Tree) -> N.TaskDef:
        name, coords, params, dims, grid, loc, *body = tree.children
        ps = tuple(self.param(p) for p in _items(params))
        scope: dict[str, Type] = {c: _I32 for c in self.names(coords)}
        scope.update({p.name: p.type for p in ps})
        scope.update({d: _I32 for d in self.names(dims)})
        t = N.TaskDef(str(name), self.names(coords), ps, self.names(dims), self.iexprs(grid),
                      self.block(body, scope), loc=self.loc(loc))
        self.tasks[t.name] = t
        return t

    def block(self, stmts: list[Tree], scope: dict[str, Type]) -> list[N.Stmt]:
        """Statements in a nested scope: names first assigned in it are not visible after it."""
        self.scopes.append(scope)
        body = [getattr(self, f"stmt_{s.data}")(s) for s in stmts]
        self.scopes.pop()
        return body

    def lookup(self, name: str) -> Type | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def stmt_assign(self, tree: Tree) -> N.Assign:
        target, type_tree, value_tree, loc = tree.children
        self.stmt_loc = self.loc(loc)
        value = self.expr(value_tree)
        declared = self.type(type_tree)
        if value.type != declared:
            raise self.type_error(f"{target} is declared {declared} but its value is {value.type}", value_tree)
        previous = self.lookup(str(target))
        if previous is None:
            self.scopes[-1][str(target)] = declared
        elif previous != declared:
            raise self.type_error(f"{target} was {previous} and would become {declared}: a variable keeps "
                                  f"one type", target)
        return N.Assign(str(target), value, loc=self.stmt_loc)

    def stmt_eval(self, tree: Tree) -> N.Eval:
        call, loc = tree.children
        self.stmt_loc = self.loc(loc)
        return N.Eval(self.expr(call), loc=self.stmt_loc)

    def stmt_for(self, tree: Tree) -> N.For:
        var, start, stop, step, loc, body = tree.children
        self.stmt_loc = loc = self.loc(loc)
        bounds = [self.expr(e) for e in (start, stop, step)]
        return N.For(str(var), *bounds, self.block(body.children, {str(var): _I32}), loc=loc)

    def stmt_if(self, tree: Tree) -> N.If:
        cond, loc, then, orelse = tree.children
        self.stmt_loc = loc = self.loc(loc)
        c = self.expr(cond)
        return N.If(c, self.block(then.children, {}), self.block(_items(orelse), {}), loc=loc)

    # -- expressions -----------------------------------------------------------------------------
    def expr(self, tree: Tree) -> N.Expr:
        kind, ch = tree.data, tree.children
        if kind == "var":
            t = self.lookup(str(ch[0]))
            if t is None:
                raise self.error(f"name {ch[0]} is not defined here", ch[0])
            return N.Var(t, str(ch[0]), loc=self.stmt_loc)
        if kind == "const":
            return self.const(*ch)
        if kind == "binop":
            return self.op(_INFIX_OPS[str(ch[1])], [self.expr(ch[0]), self.expr(ch[2])], {}, tree)
        if kind == "prefix":
            return self.op(_PREFIX_OPS[str(ch[0])], [self.expr(ch[1])], {}, tree)
        return self.call(tree)

    def const(self, tok: Token, weak: Token | None, type_tree: Tree | None) -> N.Const:
        value = _number(tok)
        if type_tree is None:
            return N.Const(ScalarType(literal_dtype(value)), value, True, loc=self.stmt_loc)
        return N.Const(self.type(type_tree), value, weak is not None, loc=self.stmt_loc)

    def call(self, tree: Tree) -> N.Op:
        name, args = tree.children
        operands: list[N.Expr] = []
        attrs: dict[str, N.AttrValue] = {}
        for a in _items(args):
            if a.data == "kwarg":
                attrs[str(a.children[0])] = self.attr(a.children[1])
            elif attrs:
                raise self.error("an operand follows an attribute; attributes (key=value) come last", a)
            else:
                operands.append(self.expr(a))
        return self.op(str(name), operands, attrs, tree)

    def op(self, name: str, args: list[N.Expr], attrs: dict[str, N.AttrValue], tree: Tree) -> N.Op:
        try:
            t = ops.infer(name, args, attrs)
        except TypeMismatchError as e:
            raise self.type_error(e.message, tree) from None
        return N.Op(t, name, tuple(args), tuple(attrs.items()), loc=self.stmt_loc)

    def attr(self, node: Token | Tree) -> N.AttrValue:
        if isinstance(node, Token):
            return self.string(node) if node.type == "STRING" else _number(node)
        if node.data == "attr_tuple":
            return tuple(self.attr(c) for c in node.children)
        return self.dtype(node.children[0])

    # -- events and launches ---------------------------------------------------------------------
    def event(self, tree: Tree) -> N.EventDecl:
        name, shape, count_vars, wait, loc = tree.children
        return N.EventDecl(self.ident(name), self.iexprs(shape), self.iexpr(wait), self.names(count_vars),
                           loc=self.loc(loc))

    def launch(self, tree: Tree) -> N.Launch:
        label, task, args, loc, binds, axes, *edges = tree.children
        if str(task) not in self.tasks:
            raise self.error(f"launch of task {task}, which is not defined above", task)
        t = self.tasks[str(task)]
        dims = tuple((str(b.children[0]), self.iexpr(b.children[1])) for b in _items(binds))
        grid = tuple(N.GridAxis(*(self.iexpr(b) for b in a.children)) for a in _items(axes))
        waits = tuple(self.edge(e.children[0]) for e in edges if e.data == "wait")
        notifies = tuple(self.edge(e.children[0]) for e in edges if e.data == "notify")
        return N.Launch(self.ident(label), t.name, tuple(self.launch_arg(t, a) for a in _items(args)), dims, grid,
                        waits, notifies, loc=self.loc(loc))

    def launch_arg(self, t: N.TaskDef, tree: Tree) -> tuple[str, N.LaunchArg]:
        """A float literal; a bare name: a size for an int parameter, else a megakernel parameter's name;
        else a size expression."""
        name, value = tree.children
        try:
            p = t.param(str(name))
        except KeyError:
            raise self.error(f"task {t.name} has no parameter {name}", name) from None
        if isinstance(value, Token):
            return str(name), _number(value)
        takes_size = isinstance(p.type, ScalarType) and p.type.dtype.is_int
        if value.data == "isym" and not takes_size:
            return str(name), str(value.children[0])
        return str(name), self.iexpr(value)

    def edge(self, tree: Tree) -> N.EdgeMap:
        event, coords, index, source, loc = tree.children
        entries = tuple(None if i.data == "every" else self.iexpr(i) for i in _items(index))
        return N.EdgeMap(self.ident(event), self.names(coords), entries, loc=self.loc(loc),
                         source=self.string(source) if source is not None else "")
