"""NumPy implementation of every op in ``ir/ops.py``: the reference semantics.

bf16 and f16 values are computed in float32 and rounded to nearest even after each op, as the CUDA
templates do; ``dot`` and ``sum`` accumulate in float32. Integer division and modulo round toward
negative infinity (Python's rule), on the GPU too.
"""
from __future__ import annotations

import math

import numpy as np

from ... import dtypes as dt
from ...dtypes import DType
from ...ir import ops
from ...ir.types import ScalarType, TileType, Type

F32 = np.dtype(np.float32)


def np_dtype(t: Type) -> np.dtype:
    assert isinstance(t, (ScalarType, TileType))
    return t.dtype.np_dtype


def compute_dtype(d: DType) -> np.dtype:
    """Where arithmetic happens: float32 for bf16/f16, the dtype itself otherwise."""
    return F32 if d in (dt.bf16, dt.f16) else d.np_dtype


def _to(x: np.ndarray, d: np.dtype) -> np.ndarray:
    return x if x.dtype == d else x.astype(d)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


_ARITH = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.mod, "maximum": np.maximum, "minimum": np.minimum,
    "pow": np.power,
}
_CMP = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
        "ne": np.not_equal, "and": np.logical_and, "or": np.logical_or}
_MATH = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "silu": lambda x: x / (1.0 + np.exp(-x)),
    "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "erf": _erf,
    "neg": np.negative, "abs": np.abs, "floor": np.floor,
}


def elementwise(name: str, out: Type, args: list[np.ndarray], arg_types: list[Type]) -> np.ndarray:
    """Apply an elementwise op: operands converted to the compute dtype, result rounded to ``out``."""
    od = out.dtype
    with np.errstate(all="ignore"):
        if name in _ARITH:
            cd = compute_dtype(od)
            r = _ARITH[name](*(_to(a, cd) for a in args))
        elif name in _CMP:
            d0, d1 = (t.dtype for t in arg_types)
            cd = compute_dtype(ops.binary_dtype(d0, d1, False, False))
            r = _CMP[name](*(_to(a, cd) for a in args))
        elif name == "not":
            r = np.logical_not(args[0])
        elif name in _MATH:
            cd = compute_dtype(od)
            r = _MATH[name](_to(args[0], cd))
        elif name == "where":
            cd = compute_dtype(od)
            r = np.where(args[0], _to(args[1], cd), _to(args[2], cd))
        elif name == "cast":
            src = args[0]
            if od == dt.bool_:
                r = src != 0
            elif od.is_int and src.dtype.kind == "f":
                r = np.trunc(_to(src, F32) if src.dtype != np.float64 else src)
            else:
                r = _to(src, compute_dtype(od)) if src.dtype.kind != "b" else src
        else:
            raise KeyError(name)
        return np.asarray(r).astype(od.np_dtype)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(_to(a, F32), _to(b, F32), dtype=F32)


def reduce(name: str, x: np.ndarray, out: Type, axis: int, keepdims: bool) -> np.ndarray:
    if name == "sum":
        r = np.sum(_to(x, compute_dtype(out.dtype)), axis=axis, keepdims=keepdims)
    elif name == "max":
        r = np.max(x, axis=axis, keepdims=keepdims)
    else:
        r = np.min(x, axis=axis, keepdims=keepdims)
    return np.asarray(r).astype(out.dtype.np_dtype)


def round_to(value: np.ndarray, d: np.dtype) -> np.ndarray:
    """Convert a value to a tensor's storage dtype, as store does (float -> int truncates)."""
    if value.dtype == d:
        return value
    if np.dtype(d).kind in "iu" and value.dtype.kind == "f":
        with np.errstate(all="ignore"):
            return np.trunc(value.astype(np.float64)).astype(d)
    if value.dtype in (np.dtype(dt.bf16.np_dtype), np.dtype(np.float16)) and np.dtype(d) != F32:
        value = value.astype(F32)
    return value.astype(d)
