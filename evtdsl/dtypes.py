"""Element types of tensors, tiles and scalars.

Each dtype knows its NumPy twin (bf16 comes from ``ml_dtypes``), its CUDA C++ name and its byte size.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str
    np_dtype: np.dtype
    cuda_name: str
    kind: str  # "float", "int" or "bool"

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_int(self) -> bool:
        return self.kind == "int"

    def __repr__(self) -> str:
        return f"evt.{self.name}"

    __str__ = lambda self: self.name  # noqa: E731


bf16 = DType("bf16", np.dtype(ml_dtypes.bfloat16), "__nv_bfloat16", "float")
f16 = DType("f16", np.dtype(np.float16), "__half", "float")
f32 = DType("f32", np.dtype(np.float32), "float", "float")
f64 = DType("f64", np.dtype(np.float64), "double", "float")
i8 = DType("i8", np.dtype(np.int8), "int8_t", "int")
i32 = DType("i32", np.dtype(np.int32), "int", "int")
i64 = DType("i64", np.dtype(np.int64), "long long", "int")
bool_ = DType("bool", np.dtype(np.bool_), "bool", "bool")

ALL: dict[str, DType] = {d.name: d for d in (bf16, f16, f32, f64, i8, i32, i64, bool_)}

# Rank used for promotion of two operands: the larger wins; bf16 with f16 goes to f32.
_RANK = {"bool": 0, "i8": 1, "i32": 2, "i64": 3, "bf16": 4, "f16": 4, "f32": 5, "f64": 6}


def by_name(name: str) -> DType:
    try:
        return ALL[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(ALL)}") from None


def from_numpy(dt: np.dtype) -> DType:
    dt = np.dtype(dt)
    for d in ALL.values():
        if d.np_dtype == dt:
            return d
    raise TypeError(f"NumPy dtype {dt} has no evtdsl equivalent; expected one of {', '.join(ALL)}")


def promote(a: DType, b: DType) -> DType:
    """The dtype of a binary operation on ``a`` and ``b``: ``promote(bf16, f32) is f32``."""
    if a == b:
        return a
    if {a.name, b.name} == {"bf16", "f16"}:
        return f32
    return a if _RANK[a.name] > _RANK[b.name] else b
