"""Types of IR values: scalars, tiles (static shapes, held by one task) and tensors (global memory)."""
from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import DType
from .dims import IntExpr


@dataclass(frozen=True)
class ScalarType:
    dtype: DType

    def __str__(self) -> str:
        return str(self.dtype)


@dataclass(frozen=True)
class TileType:
    shape: tuple[int, ...]
    dtype: DType

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class TensorType:
    """A view of global memory. ``inout`` tensors keep the caller's values; others written by tasks are
    outputs, poisoned before a CPU run."""

    shape: tuple[IntExpr, ...]
    dtype: DType
    inout: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        kind = "inout" if self.inout else "tensor"
        return f"{kind}<{self.dtype}>[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class VoidType:
    def __str__(self) -> str:
        return "void"


VOID = VoidType()
Type = ScalarType | TileType | TensorType | VoidType


def shape_of(t: Type) -> tuple[int, ...]:
    """Shape of a scalar (``()``) or tile value."""
    if isinstance(t, TileType):
        return t.shape
    if isinstance(t, ScalarType):
        return ()
    raise TypeError(f"{t} has no tile shape")
