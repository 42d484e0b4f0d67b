"""Parameter annotations: ``x: evt.Tensor[M, K, evt.bf16]``, ``y: evt.InOut[M, evt.f32]``, ``eps: evt.f32``."""
from __future__ import annotations

from ..dtypes import DType
from ..ir.dims import IntExpr, as_expr
from ..ir.types import TensorType


class _TensorAnnotation:
    inout = False

    def __class_getitem__(cls, items) -> TensorType:
        if not isinstance(items, tuple):
            items = (items,)
        *shape, dtype = items
        if not isinstance(dtype, DType):
            raise TypeError(f"{cls.__name__}[...] ends with a dtype (evt.f32, evt.bf16, ...), got {dtype!r}")
        if not shape:
            raise TypeError(f"{cls.__name__}[...] needs at least one size before the dtype")
        dims: list[IntExpr] = []
        for s in shape:
            if not isinstance(s, (int, IntExpr)) or isinstance(s, bool):
                raise TypeError(f"{cls.__name__}[...] sizes are ints or evt.dim expressions, got {s!r}")
            dims.append(as_expr(s))
        return TensorType(tuple(dims), dtype, cls.inout)


class Tensor(_TensorAnnotation):
    """A tensor parameter: ``evt.Tensor[M, K, evt.bf16]``. If tasks write it, it is an output."""


class InOut(_TensorAnnotation):
    """A tensor whose values on entry matter even though tasks write it (in-place update, atomic
    accumulation into a buffer the caller initialised)."""

    inout = True
