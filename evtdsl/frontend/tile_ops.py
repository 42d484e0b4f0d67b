"""Tile operations, used inside ``@evt.task`` bodies, where the front end compiles them.

Called anywhere else they raise, except the size helpers ``cdiv``, ``min`` and ``max``, which also build
symbolic sizes outside tasks (``evt.cdiv(M, 16)``).
"""
from __future__ import annotations

import builtins

from .. import dtypes as _dt
from ..ir import dims as _dims


def _outside(name: str):
    raise RuntimeError(f"evt.{name} is tile code: it can only be used inside an @evt.task function")


def load(tensor, offsets, shape, other=0):
    """The tile of ``tensor`` at element ``offsets`` with the given static ``shape`` (trailing axes);
    elements outside the tensor read as ``other``."""
    _outside("load")


def store(tensor, offsets, value):
    """Write tile ``value`` at element ``offsets``; elements outside the tensor are skipped. The value is
    cast to the tensor's dtype (round to nearest even)."""
    _outside("store")


def atomic_add(tensor, offsets, value):
    """Atomically add tile ``value`` into ``tensor`` at ``offsets`` (masked like store)."""
    _outside("atomic_add")


def zeros(shape, dtype=_dt.f32):
    _outside("zeros")


def full(shape, value, dtype=_dt.f32):
    _outside("full")


def arange(n):
    """``[0, 1, ..., n-1]`` as an i32 tile; n is static."""
    _outside("arange")


def dot(a, b):
    """Matrix product of 2-d tiles with float32 accumulation; the result is f32."""
    _outside("dot")


def trans(a):
    _outside("trans")


def reshape(a, shape):
    _outside("reshape")


def broadcast_to(a, shape):
    _outside("broadcast_to")


def expand_dims(a, axis):
    _outside("expand_dims")


def cast(a, dtype):
    _outside("cast")


def where(cond, a, b):
    _outside("where")


def maximum(a, b):
    _outside("maximum")


def minimum(a, b):
    _outside("minimum")


def sum(a, axis, keepdims=False):  # noqa: A001
    """Sum over ``axis`` with float32 accumulation (the result is f32 for float tiles)."""
    _outside("sum")


def max(*args, axis=None, keepdims=False):  # noqa: A001
    """``max(tile, axis=...)`` reduces a tile; ``max(a, b)`` of sizes is a symbolic size."""
    if axis is None and len(args) == 2 and builtins.all(isinstance(a, (int, _dims.IntExpr)) for a in args):
        return _dims.maximum(*args)
    _outside("max")


def min(*args, axis=None, keepdims=False):  # noqa: A001
    """``min(tile, axis=...)`` reduces a tile; ``min(a, b)`` of sizes is a symbolic size."""
    if axis is None and len(args) == 2 and builtins.all(isinstance(a, (int, _dims.IntExpr)) for a in args):
        return _dims.minimum(*args)
    _outside("min")


def cdiv(a, b):
    """Ceiling division; on sizes outside tasks too: ``cdiv(M, 16)``."""
    if isinstance(a, (int, _dims.IntExpr)) and isinstance(b, (int, _dims.IntExpr)):
        return _dims.cdiv(a, b)
    _outside("cdiv")


def _unary(name: str, doc: str):
    def f(a):
        _outside(name)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = doc
    return f


exp = _unary("exp", "Elementwise e**x.")
log = _unary("log", "Elementwise natural logarithm.")
sqrt = _unary("sqrt", "Elementwise square root.")
rsqrt = _unary("rsqrt", "Elementwise 1/sqrt(x).")
sigmoid = _unary("sigmoid", "Elementwise 1/(1+exp(-x)).")
silu = _unary("silu", "Elementwise x*sigmoid(x).")
sin = _unary("sin", "Elementwise sine.")
cos = _unary("cos", "Elementwise cosine.")
tanh = _unary("tanh", "Elementwise hyperbolic tangent.")
erf = _unary("erf", "Elementwise error function.")
abs = _unary("abs", "Elementwise absolute value.")  # noqa: A001
floor = _unary("floor", "Elementwise floor.")

UNARY = ("exp", "log", "sqrt", "rsqrt", "sigmoid", "silu", "sin", "cos", "tanh", "erf", "abs", "floor")
