"""Symbolic integer expressions: sizes, grids, event shapes, wait counts and edge maps.

A dim is a named size bound at launch from the arguments' shapes. Expressions of dims are values:

>>> M = dim("M")
>>> str(cdiv(M, 16) * 2)
'cdiv(M, 16) * 2'
>>> (cdiv(M, 16) * 2).eval({"M": 33})
6
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Mapping, Union

IntLike = Union["IntExpr", int]

# Binary operators: printed form, precedence, Python evaluation.
_OPS: dict[str, tuple[int, Callable[[int, int], int]]] = {
    "+": (1, lambda a, b: a + b),
    "-": (1, lambda a, b: a - b),
    "*": (2, lambda a, b: a * b),
    "//": (2, lambda a, b: a // b),
    "%": (2, lambda a, b: a % b),
}
_FUNCS: dict[str, Callable[[int, int], int]] = {
    "cdiv": lambda a, b: -(-a // b),
    "min": min,
    "max": max,
}


class IntExpr:
    """Base of symbolic integer expressions. Subclasses are frozen dataclasses (structural equality)."""

    def __add__(self, o: IntLike) -> IntExpr:
        return binop("+", self, o)

    def __radd__(self, o: IntLike) -> IntExpr:
        return binop("+", o, self)

    def __sub__(self, o: IntLike) -> IntExpr:
        return binop("-", self, o)

    def __rsub__(self, o: IntLike) -> IntExpr:
        return binop("-", o, self)

    def __mul__(self, o: IntLike) -> IntExpr:
        return binop("*", self, o)

    def __rmul__(self, o: IntLike) -> IntExpr:
        return binop("*", o, self)

    def __floordiv__(self, o: IntLike) -> IntExpr:
        return binop("//", self, o)

    def __rfloordiv__(self, o: IntLike) -> IntExpr:
        return binop("//", o, self)

    def __mod__(self, o: IntLike) -> IntExpr:
        return binop("%", self, o)

    def __rmod__(self, o: IntLike) -> IntExpr:
        return binop("%", o, self)

    def __neg__(self) -> IntExpr:
        return binop("-", 0, self)

    def __bool__(self) -> bool:
        raise TypeError(
            f"the symbolic size {self} has no truth value before launch; "
            "use evt.min/evt.max/evt.cdiv to build sizes, or evt.where in task code"
        )

    def __index__(self) -> int:
        if isinstance(self, Const):
            return self.value
        raise TypeError(f"the symbolic size {self} is not known before launch")

    # evaluation and inspection -----------------------------------------------------------------
    def eval(self, env: Mapping[str, int], load: Callable[[str, tuple[int, ...]], int] | None = None) -> int:
        raise NotImplementedError

    def syms(self) -> set[str]:
        raise NotImplementedError

    def loads(self) -> set[str]:
        """Names of the index tensors this expression reads."""
        raise NotImplementedError

    def subst(self, mapping: Mapping[str, IntExpr]) -> IntExpr:
        raise NotImplementedError

    def prec(self) -> int:
        return 9


@dataclass(frozen=True, eq=True)
class Const(IntExpr):
    value: int

    def eval(self, env, load=None):
        return self.value

    def syms(self):
        return set()

    def loads(self):
        return set()

    def subst(self, mapping):
        return self

    def __str__(self):
        return str(self.value)

    def prec(self):
        return 9 if self.value >= 0 else 0

    __hash__ = lambda self: hash(("c", self.value))  # noqa: E731


@dataclass(frozen=True, eq=True)
class Sym(IntExpr):
    """A named size (``evt.dim("M")``), a task coordinate in an edge map, or a scalar parameter."""

    name: str

    def eval(self, env, load=None):
        try:
            return int(env[self.name])
        except KeyError:
            raise KeyError(f"size {self.name} is not bound") from None

    def syms(self):
        return {self.name}

    def loads(self):
        return set()

    def subst(self, mapping):
        return as_expr(mapping[self.name]) if self.name in mapping else self

    def __str__(self):
        return self.name

    __hash__ = lambda self: hash(("s", self.name))  # noqa: E731


@dataclass(frozen=True, eq=True)
class BinOp(IntExpr):
    op: str
    a: IntExpr
    b: IntExpr

    def eval(self, env, load=None):
        x, y = self.a.eval(env, load), self.b.eval(env, load)
        if self.op in ("//", "%") and y == 0:
            raise ZeroDivisionError(f"division by zero in {self}")
        return _OPS[self.op][1](x, y)

    def syms(self):
        return self.a.syms() | self.b.syms()

    def loads(self):
        return self.a.loads() | self.b.loads()

    def subst(self, mapping):
        return binop(self.op, self.a.subst(mapping), self.b.subst(mapping))

    def prec(self):
        return _OPS[self.op][0]

    def __str__(self):
        p = self.prec()
        left = str(self.a) if self.a.prec() >= p else f"({self.a})"
        # operators associate to the left: a right operand of the same precedence needs brackets
        right = str(self.b) if self.b.prec() > p else f"({self.b})"
        return f"{left} {self.op} {right}"

    __hash__ = lambda self: hash(("b", self.op, self.a, self.b))  # noqa: E731


@dataclass(frozen=True, eq=True)
class Func(IntExpr):
    """``cdiv(a, b)``, ``min(a, b)`` or ``max(a, b)``."""

    fn: str
    a: IntExpr
    b: IntExpr

    def eval(self, env, load=None):
        x, y = self.a.eval(env, load), self.b.eval(env, load)
        if self.fn == "cdiv" and y == 0:
            raise ZeroDivisionError(f"division by zero in {self}")
        return _FUNCS[self.fn](x, y)

    def syms(self):
        return self.a.syms() | self.b.syms()

    def loads(self):
        return self.a.loads() | self.b.loads()

    def subst(self, mapping):
        return func(self.fn, self.a.subst(mapping), self.b.subst(mapping))

    def __str__(self):
        return f"{self.fn}({self.a}, {self.b})"

    __hash__ = lambda self: hash(("f", self.fn, self.a, self.b))  # noqa: E731


@dataclass(frozen=True, eq=True)
class Load(IntExpr):
    """An element of an integer index tensor, read at run time: ``indptr[e + 1]``."""

    tensor: str
    index: tuple[IntExpr, ...]

    def eval(self, env, load=None):
        if load is None:
            raise ValueError(f"{self} reads tensor {self.tensor}, which is not available here")
        return int(load(self.tensor, tuple(i.eval(env, load) for i in self.index)))

    def syms(self):
        out: set[str] = set()
        for i in self.index:
            out |= i.syms()
        return out

    def loads(self):
        out = {self.tensor}
        for i in self.index:
            out |= i.loads()
        return out

    def subst(self, mapping):
        return Load(self.tensor, tuple(i.subst(mapping) for i in self.index))

    def __str__(self):
        return f"{self.tensor}[{', '.join(map(str, self.index))}]"

    __hash__ = lambda self: hash(("l", self.tensor, self.index))  # noqa: E731


def as_expr(x: IntLike) -> IntExpr:
    if isinstance(x, IntExpr):
        return x
    if isinstance(x, bool) or not isinstance(x, int):
        try:
            import numpy as np

            if isinstance(x, np.integer):
                return Const(int(x))
        except ImportError:  # pragma: no cover
            pass
        raise TypeError(f"expected an int or a size expression, got {type(x).__name__} {x!r}")
    return Const(x)


def binop(op: str, a: IntLike, b: IntLike) -> IntExpr:
    a, b = as_expr(a), as_expr(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(BinOp(op, a, b).eval({}))
    # identities that keep printed sizes readable
    if op == "+" and a == Const(0):
        return b
    if op in ("+", "-") and b == Const(0):
        return a
    if op == "*" and (a == Const(1) or b == Const(1)):
        return b if a == Const(1) else a
    if op == "//" and b == Const(1):
        return a
    return BinOp(op, a, b)


def func(fn: str, a: IntLike, b: IntLike) -> IntExpr:
    a, b = as_expr(a), as_expr(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(_FUNCS[fn](a.value, b.value))
    if fn == "cdiv" and b == Const(1):
        return a
    if fn in ("min", "max") and a == b:
        return a
    return Func(fn, a, b)


def dim(name: str) -> Sym:
    """A symbolic size, bound at launch from the shape of the argument it annotates."""
    if not name.isidentifier():
        raise ValueError(f"dim name must be an identifier, got {name!r}")
    return Sym(name)


def cdiv(a: IntLike, b: IntLike) -> IntLike:
    """Ceiling division: the number of tiles of size ``b`` that cover ``a``. ``cdiv(33, 16) == 3``."""
    if isinstance(a, int) and isinstance(b, int):
        return -(-a // b)
    return func("cdiv", a, b)


def minimum(a: IntLike, b: IntLike) -> IntLike:
    if isinstance(a, int) and isinstance(b, int):
        return min(a, b)
    return func("min", a, b)


def maximum(a: IntLike, b: IntLike) -> IntLike:
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return func("max", a, b)


# ---------------------------------------------------------------------------------------------
# Deciding equality of two sizes: a polynomial normal form proves equality; random evaluation finds
# counterexamples; anything else is left to run time.


def _poly(e: IntExpr) -> dict[tuple[str, ...], int]:
    """Polynomial over atoms (dims and non-polynomial subterms): {sorted atom names: coefficient}."""
    if isinstance(e, Const):
        return {(): e.value} if e.value else {}
    if isinstance(e, Sym):
        return {(e.name,): 1}
    if isinstance(e, BinOp) and e.op in "+-":
        out = dict(_poly(e.a))
        sign = 1 if e.op == "+" else -1
        for m, c in _poly(e.b).items():
            out[m] = out.get(m, 0) + sign * c
        return {m: c for m, c in out.items() if c}
    if isinstance(e, BinOp) and e.op == "*":
        out: dict[tuple[str, ...], int] = {}
        for ma, ca in _poly(e.a).items():
            for mb, cb in _poly(e.b).items():
                m = tuple(sorted(ma + mb))
                out[m] = out.get(m, 0) + ca * cb
        return {m: c for m, c in out.items() if c}
    if (isinstance(e, BinOp) and e.op == "//") or (isinstance(e, Func) and e.fn == "cdiv"):
        if isinstance(e.b, Const) and e.b.value > 0:
            p = _poly(e.a)
            if all(c % e.b.value == 0 for c in p.values()):
                return {m: c // e.b.value for m, c in p.items()}
    return {(_atom(e),): 1}


def _atom(e: IntExpr) -> str:
    if isinstance(e, BinOp):
        return f"({_atom_str(e.a)} {e.op} {_atom_str(e.b)})"
    if isinstance(e, Func):
        return f"{e.fn}({_atom_str(e.a)}, {_atom_str(e.b)})"
    if isinstance(e, Load):
        return f"{e.tensor}[{', '.join(_atom_str(i) for i in e.index)}]"
    return str(e)


def _atom_str(e: IntExpr) -> str:
    return repr(sorted(_poly(e).items()))


def provably_equal(a: IntLike, b: IntLike) -> bool:
    return _poly(as_expr(a)) == _poly(as_expr(b))


def counterexample(a: IntLike, b: IntLike, seed: int = 0, tries: int = 64) -> dict[str, int] | None:
    """Sizes at which ``a`` and ``b`` differ, if random sizes from 1 to 4096 find one; expressions that read
    index tensors are not evaluated."""
    a, b = as_expr(a), as_expr(b)
    if a.loads() or b.loads():
        return None
    names = sorted(a.syms() | b.syms())
    rng = random.Random(seed)
    for t in range(tries):
        env = {n: (t + 1 if t < 8 else rng.choice([rng.randint(1, 64), rng.randint(1, 4096)])) for n in names}
        try:
            if a.eval(env) != b.eval(env):
                return env
        except ZeroDivisionError:
            continue
    return None
