"""The op registry: every tile operation's name, arguments, attributes and typing rule.

Each op has one NumPy implementation (``backends/cpu/semantics.py``) and one CUDA template; this file is
the single place that says what an op accepts and returns. ``infer`` raises ``TypeMismatchError`` with a
message stating the rule; the caller attaches the source location.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import dtypes as dt
from ..dtypes import DType
from ..errors import TypeMismatchError
from .types import VOID, ScalarType, TensorType, TileType, Type

BINARY_ARITH = ("add", "sub", "mul", "truediv", "floordiv", "mod", "maximum", "minimum", "pow")
COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
LOGICAL = ("and", "or")
UNARY_MATH = ("exp", "log", "sqrt", "rsqrt", "sigmoid", "silu", "sin", "cos", "tanh", "erf")
UNARY_SAME = ("neg", "abs", "floor")
REDUCE = ("sum", "max", "min")

# How the printer writes the infix ones; the parser reads them back.
INFIX = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%",
         "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&", "or": "|"}
PREFIX = {"neg": "-", "not": "!"}


def _err(msg: str) -> TypeMismatchError:
    return TypeMismatchError(msg)


def value_shape(t: Type, what: str) -> tuple[int, ...]:
    if isinstance(t, TileType):
        return t.shape
    if isinstance(t, ScalarType):
        return ()
    raise _err(f"{what} must be a tile or a scalar, got {t}")


def value_dtype(t: Type, what: str) -> DType:
    if isinstance(t, (TileType, ScalarType)):
        return t.dtype
    raise _err(f"{what} must be a tile or a scalar, got {t}")


def make(shape: tuple[int, ...], dtype: DType) -> Type:
    return TileType(shape, dtype) if shape else ScalarType(dtype)


def broadcast(a: tuple[int, ...], b: tuple[int, ...], op: str) -> tuple[int, ...]:
    """NumPy broadcasting of two static shapes."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise _err(f"{op}: shapes {list(a)} and {list(b)} do not broadcast (axis -{i}: {x} vs {y})")
        out.append(max(x, y))
    return tuple(reversed(out))


def binary_dtype(a: DType, b: DType, a_weak: bool, b_weak: bool) -> DType:
    """Promotion with weak Python literals: ``bf16_tile * 2.0`` stays bf16; ``i32_tile * 0.5`` is f32."""
    if a_weak and not b_weak:
        return b if (b.is_float or not a.is_float) else dt.f32
    if b_weak and not a_weak:
        return a if (a.is_float or not b.is_float) else dt.f32
    return dt.promote(a, b)


@dataclass(frozen=True)
class OpSpec:
    name: str
    infer: Callable[..., Type]
    effect: bool = False  # run for its side effect (store, atomic_add)


REGISTRY: dict[str, OpSpec] = {}


def _reg(name: str, effect: bool = False):
    def deco(fn):
        REGISTRY[name] = OpSpec(name, fn, effect)
        return fn

    return deco


def infer(name: str, args, attrs: dict) -> Type:
    """Result type of op ``name`` on argument exprs ``args`` (each with .type; Const has .weak)."""
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise _err(f"unknown op {name!r}") from None
    return spec.infer(args, attrs)


def _weak(e) -> bool:
    return bool(getattr(e, "weak", False))


def _arity(name: str, args, n: int):
    if len(args) != n:
        raise _err(f"{name} takes {n} operand(s), got {len(args)}")


for _n in BINARY_ARITH:

    def _bin(args, attrs, _n=_n):
        _arity(_n, args, 2)
        a, b = args
        shape = broadcast(value_shape(a.type, f"{_n} lhs"), value_shape(b.type, f"{_n} rhs"), _n)
        d = binary_dtype(value_dtype(a.type, _n), value_dtype(b.type, _n), _weak(a), _weak(b))
        if d == dt.bool_:
            raise _err(f"{_n} is not defined on bool operands; cast them first")
        if _n == "truediv" and not d.is_float:
            d = dt.f32
        if _n in ("floordiv", "mod") and d.is_float:
            raise _err(f"{_n} needs integer operands, got {d}")
        return make(shape, d)

    _reg(_n)(_bin)

for _n in COMPARE:

    def _cmp(args, attrs, _n=_n):
        _arity(_n, args, 2)
        a, b = args
        shape = broadcast(value_shape(a.type, _n), value_shape(b.type, _n), _n)
        return make(shape, dt.bool_)

    _reg(_n)(_cmp)

for _n in LOGICAL:

    def _log(args, attrs, _n=_n):
        _arity(_n, args, 2)
        a, b = args
        shape = broadcast(value_shape(a.type, _n), value_shape(b.type, _n), _n)
        for x in (a, b):
            if value_dtype(x.type, _n) != dt.bool_:
                raise _err(f"{_n} needs bool operands (comparisons), got {x.type}")
        return make(shape, dt.bool_)

    _reg(_n)(_log)


@_reg("not")
def _not(args, attrs):
    _arity("not", args, 1)
    if value_dtype(args[0].type, "not") != dt.bool_:
        raise _err(f"not needs a bool operand, got {args[0].type}")
    return args[0].type


for _n in UNARY_MATH:

    def _math(args, attrs, _n=_n):
        _arity(_n, args, 1)
        d = value_dtype(args[0].type, _n)
        return make(value_shape(args[0].type, _n), d if d.is_float else dt.f32)

    _reg(_n)(_math)

for _n in UNARY_SAME:

    def _same(args, attrs, _n=_n):
        _arity(_n, args, 1)
        value_dtype(args[0].type, _n)
        return args[0].type

    _reg(_n)(_same)


@_reg("where")
def _where(args, attrs):
    _arity("where", args, 3)
    c, a, b = args
    if value_dtype(c.type, "where condition") != dt.bool_:
        raise _err(f"where: the condition must be bool (a comparison), got {c.type}")
    shape = broadcast(value_shape(c.type, "where"), value_shape(a.type, "where"), "where")
    shape = broadcast(shape, value_shape(b.type, "where"), "where")
    d = binary_dtype(value_dtype(a.type, "where"), value_dtype(b.type, "where"), _weak(a), _weak(b))
    return make(shape, d)


@_reg("cast")
def _cast(args, attrs):
    _arity("cast", args, 1)
    return make(value_shape(args[0].type, "cast"), attrs["dtype"])


def _check_tensor(t: Type, op: str) -> TensorType:
    if not isinstance(t, TensorType):
        raise _err(f"{op}: the first argument must be a tensor parameter, got {t}")
    return t


def _check_offsets(tensor: TensorType, offs, op: str):
    if len(offs) != tensor.ndim:
        raise _err(f"{op}: a {tensor.ndim}-d tensor needs {tensor.ndim} offsets, got {len(offs)}")
    for o in offs:
        if not isinstance(o.type, ScalarType) or not o.type.dtype.is_int:
            raise _err(f"{op}: offsets must be integer scalars, got {o.type}")


def _tile_shape(shape, tensor: TensorType, op: str) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise _err(f"{op}: shape must be a tuple of positive static ints, got {shape!r}")
    if not 1 <= len(shape) <= tensor.ndim:
        raise _err(f"{op}: a tile of a {tensor.ndim}-d tensor has 1 to {tensor.ndim} axes, got shape {list(shape)}")
    return shape


@_reg("load")
def _load(args, attrs):
    tensor = _check_tensor(args[0].type, "load")
    _check_offsets(tensor, args[1:], "load")
    return TileType(_tile_shape(attrs.get("shape"), tensor, "load"), tensor.dtype)


@_reg("load_scalar")
def _load_scalar(args, attrs):
    tensor = _check_tensor(args[0].type, "tensor[...]")
    _check_offsets(tensor, args[1:], "tensor[...]")
    return ScalarType(tensor.dtype)


def _store_like(name):
    def rule(args, attrs):
        if len(args) < 2:
            raise _err(f"{name} takes a tensor, offsets and a value")
        tensor = _check_tensor(args[0].type, name)
        offs, value = args[1:-1], args[-1]
        _check_offsets(tensor, offs, name)
        vshape = value_shape(value.type, f"{name} value")
        if len(vshape) > tensor.ndim:
            raise _err(f"{name}: a {len(vshape)}-d value does not fit a {tensor.ndim}-d tensor")
        vd = value_dtype(value.type, name)
        if vd.is_float != tensor.dtype.is_float and not (vd == dt.bool_ or tensor.dtype == dt.bool_):
            raise _err(f"{name}: a {vd} value into a {tensor.dtype} tensor needs an explicit cast")
        if name == "atomic_add" and tensor.dtype not in (dt.f32, dt.i32, dt.f16, dt.bf16, dt.i64):
            raise _err(f"atomic_add: tensors of {tensor.dtype} are not supported")
        return VOID

    return rule


_reg("store", effect=True)(_store_like("store"))
_reg("atomic_add", effect=True)(_store_like("atomic_add"))


def _static_shape(shape, op):
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s > 0 for s in shape) or not shape:
        raise _err(f"{op}: shape must be a non-empty tuple of positive static ints, got {shape!r}")
    return shape


@_reg("zeros")
def _zeros(args, attrs):
    _arity("zeros", args, 0)
    return TileType(_static_shape(attrs.get("shape"), "zeros"), attrs["dtype"])


@_reg("full")
def _full(args, attrs):
    _arity("full", args, 1)
    if not isinstance(args[0].type, ScalarType):
        raise _err(f"full: the fill value must be a scalar, got {args[0].type}")
    return TileType(_static_shape(attrs.get("shape"), "full"), attrs["dtype"])


@_reg("arange")
def _arange(args, attrs):
    _arity("arange", args, 0)
    n = attrs.get("n")
    if not isinstance(n, int) or n <= 0:
        raise _err(f"arange: n must be a positive static int, got {n!r}")
    return TileType((n,), dt.i32)


@_reg("dot")
def _dot(args, attrs):
    _arity("dot", args, 2)
    a, b = args
    if not (isinstance(a.type, TileType) and isinstance(b.type, TileType) and len(a.type.shape) == 2 == len(b.type.shape)):
        raise _err(f"dot needs two 2-d tiles, got {a.type} and {b.type}")
    (m, k), (k2, n) = a.type.shape, b.type.shape
    if k != k2:
        raise _err(f"dot: inner sizes differ: {a.type} @ {b.type} ({k} vs {k2}); transpose one with .T?")
    if not (a.type.dtype.is_float and b.type.dtype.is_float):
        raise _err(f"dot needs float tiles, got {a.type.dtype} and {b.type.dtype}")
    return TileType((m, n), dt.f32)


@_reg("trans")
def _trans(args, attrs):
    _arity("trans", args, 1)
    t = args[0].type
    if not isinstance(t, TileType) or len(t.shape) != 2:
        raise _err(f"trans needs a 2-d tile, got {t}")
    return TileType((t.shape[1], t.shape[0]), t.dtype)


@_reg("expand_dims")
def _expand(args, attrs):
    _arity("expand_dims", args, 1)
    shape = list(value_shape(args[0].type, "expand_dims"))
    axis = attrs["axis"]
    if not 0 <= axis <= len(shape):
        raise _err(f"expand_dims: axis {axis} out of range for shape {shape}")
    shape.insert(axis, 1)
    return TileType(tuple(shape), value_dtype(args[0].type, "expand_dims"))


@_reg("reshape")
def _reshape(args, attrs):
    _arity("reshape", args, 1)
    old = value_shape(args[0].type, "reshape")
    new = _static_shape(attrs.get("shape"), "reshape")
    import math

    if math.prod(old) != math.prod(new):
        raise _err(f"reshape: {list(old)} has {math.prod(old)} elements, {list(new)} has {math.prod(new)}")
    return TileType(new, value_dtype(args[0].type, "reshape"))


@_reg("broadcast_to")
def _broadcast_to(args, attrs):
    _arity("broadcast_to", args, 1)
    new = _static_shape(attrs.get("shape"), "broadcast_to")
    if broadcast(value_shape(args[0].type, "broadcast_to"), new, "broadcast_to") != new:
        raise _err(f"broadcast_to: {args[0].type} does not broadcast to {list(new)}")
    return TileType(new, value_dtype(args[0].type, "broadcast_to"))


for _n in REDUCE:

    def _red(args, attrs, _n=_n):
        _arity(_n, args, 1)
        t = args[0].type
        if not isinstance(t, TileType):
            raise _err(f"{_n} reduces a tile, got {t}")
        axis, keep = attrs["axis"], attrs.get("keepdims", False)
        if not -len(t.shape) <= axis < len(t.shape):
            raise _err(f"{_n}: axis {axis} out of range for a {len(t.shape)}-d tile")
        axis %= len(t.shape)
        shape = list(t.shape)
        if keep:
            shape[axis] = 1
        else:
            del shape[axis]
        d = t.dtype
        if _n == "sum":
            d = dt.f32 if d.is_float else (dt.i32 if d in (dt.bool_, dt.i8) else d)
        return make(tuple(shape), d)

    _reg(_n)(_red)

