"""IR nodes. Task bodies are structured statements over typed values; a Program holds tasks, event
tensors and the launches that connect them. Every node carries the user's source location."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..dtypes import DType
from ..errors import SourceLoc
from .dims import IntExpr
from .types import ScalarType, TensorType, Type

AttrValue = Union[int, float, bool, str, tuple, DType]


# ---------------------------------------------------------------------------------------------
# Task bodies


@dataclass(eq=False)
class Expr:
    type: Type
    loc: SourceLoc | None = field(default=None, kw_only=True)


@dataclass(eq=False)
class Const(Expr):
    """A literal. ``weak`` constants (Python literals) take the dtype of the operand they meet."""

    value: int | float | bool
    weak: bool = False


@dataclass(eq=False)
class Var(Expr):
    name: str


@dataclass(eq=False)
class Op(Expr):
    """An operation from the op registry (``ir/ops.py``): arithmetic, math, load/store, dot, reductions."""

    name: str
    args: tuple[Expr, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()

    def attr(self, key: str, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default


@dataclass(eq=False)
class Assign:
    target: str
    value: Expr
    loc: SourceLoc | None = None


@dataclass(eq=False)
class Eval:
    """An operation run for its effect: store or atomic_add."""

    value: Op
    loc: SourceLoc | None = None


@dataclass(eq=False)
class For:
    var: str
    start: Expr
    stop: Expr
    step: Expr
    body: list["Stmt"]
    loc: SourceLoc | None = None


@dataclass(eq=False)
class If:
    cond: Expr
    then: list["Stmt"]
    orelse: list["Stmt"]
    loc: SourceLoc | None = None


Stmt = Union[Assign, Eval, For, If]


@dataclass(eq=False)
class Param:
    name: str
    type: TensorType | ScalarType


@dataclass(eq=False)
class TaskDef:
    """A tile function: ``coords`` index the grid, ``dims`` are the sizes its tensor shapes name."""

    name: str
    coords: tuple[str, ...]
    params: tuple[Param, ...]
    dims: tuple[str, ...]
    grid: tuple[IntExpr, ...]
    body: list[Stmt]
    loc: SourceLoc | None = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# Programs


@dataclass(eq=False)
class EventDecl:
    """An N-d array of counters; element ``idx`` starts at ``wait_count`` with ``count_vars`` bound to idx."""

    name: str
    shape: tuple[IntExpr, ...]
    wait_count: IntExpr
    count_vars: tuple[str, ...] = ()
    loc: SourceLoc | None = None


@dataclass(eq=False)
class EdgeMap:
    """Maps a task's coordinates ``vars`` to event elements. An index entry of ``None`` means every
    element along that axis. ``source`` is how the user wrote it (an einsum string or ``lambda``)."""

    event: str
    vars: tuple[str, ...]
    index: tuple[IntExpr | None, ...]
    loc: SourceLoc | None = None
    source: str = ""


@dataclass(eq=False)
class GridAxis:
    """Coordinates ``lo <= c < hi``; the bounds may name earlier coordinates and read index tensors."""

    lo: IntExpr
    hi: IntExpr


LaunchArg = Union[str, IntExpr, float]


@dataclass(eq=False)
class Launch:
    """One call of a task in a megakernel: its arguments, dim bindings, grid and edges."""

    label: str
    task: str
    args: tuple[tuple[str, LaunchArg], ...]
    dims: tuple[tuple[str, IntExpr], ...]
    grid: tuple[GridAxis, ...]
    waits: tuple[EdgeMap, ...]
    notifies: tuple[EdgeMap, ...]
    loc: SourceLoc | None = None

    def arg(self, name: str) -> LaunchArg:
        return dict(self.args)[name]


@dataclass(eq=False)
class Program:
    name: str
    params: tuple[Param, ...]
    dims: tuple[str, ...]
    tasks: tuple[TaskDef, ...]
    events: tuple[EventDecl, ...]
    launches: tuple[Launch, ...]
    loc: SourceLoc | None = None

    def task(self, name: str) -> TaskDef:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def event(self, name: str) -> EventDecl:
        for e in self.events:
            if e.name == name:
                return e
        raise KeyError(name)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def __str__(self) -> str:
        from .printer import print_program

        return print_program(self)
