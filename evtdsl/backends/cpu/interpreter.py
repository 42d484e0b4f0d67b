"""Runs a task body on NumPy. Each TaskDef compiles once into Python closures; a run binds the task's
coordinates, sizes, scalars and tensors and executes one instance.

Loads are masked by the tensor's bounds (outside elements read as ``other``), stores and atomic adds skip
outside elements. Every access can be reported to a listener (the race and uninitialised-read checks).
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from ...errors import SourceLoc
from ...ir import nodes as N
from ...ir.types import TensorType, TileType
from . import semantics as S

Env = dict[str, object]
Fn = Callable[[Env], object]


class AccessListener(Protocol):
    def access(self, tensor: str, kind: str, lo: tuple[int, ...], hi: tuple[int, ...], loc: SourceLoc | None) -> None:
        """kind is "r" (read), "w" (write) or "a" (atomic add); [lo, hi) is the touched box, non-empty."""


class _Counter:
    def __init__(self):
        self.ops = 0


def _box(arr: np.ndarray, offs: list[int], shape: tuple[int, ...]):
    """Full box shape (leading axes of size 1), and the clipped [lo, hi) inside the tensor."""
    full = (1,) * (arr.ndim - len(shape)) + tuple(shape)
    lo = tuple(max(o, 0) for o in offs)
    hi = tuple(min(o + s, n) for o, s, n in zip(offs, full, arr.shape))
    return full, lo, hi


class CompiledTask:
    def __init__(self, task: N.TaskDef):
        self.task = task
        self.body = _compile_block(task.body)

    def run(self, env: Env, listener: AccessListener | None) -> int:
        """Execute one instance; returns the number of ops it executed (the simulator's cost model)."""
        counter = _Counter()
        env["__listener__"] = listener
        env["__counter__"] = counter
        self.body(env)
        return counter.ops


def _compile_block(stmts: list[N.Stmt]) -> Callable[[Env], None]:
    fns = [_compile_stmt(s) for s in stmts]

    def run(env):
        for f in fns:
            f(env)

    return run


def _compile_stmt(s: N.Stmt) -> Callable[[Env], None]:
    if isinstance(s, N.Assign):
        value, name = _compile_expr(s.value), s.target

        def assign(env):
            env[name] = value(env)

        return assign
    if isinstance(s, N.Eval):
        value = _compile_expr(s.value)
        return lambda env: value(env)
    if isinstance(s, N.For):
        start, stop, step = (_compile_expr(e) for e in (s.start, s.stop, s.step))
        body, var = _compile_block(s.body), s.var

        def loop(env):
            for k in range(int(start(env)), int(stop(env)), int(step(env))):
                env[var] = np.asarray(k, dtype=np.int32)
                body(env)

        return loop
    if isinstance(s, N.If):
        cond, then, orelse = _compile_expr(s.cond), _compile_block(s.then), _compile_block(s.orelse)

        def branch(env):
            (then if bool(cond(env)) else orelse)(env)

        return branch
    raise TypeError(f"unknown statement {type(s).__name__}")


def _compile_expr(e: N.Expr) -> Fn:
    if isinstance(e, N.Const):
        v = np.asarray(e.value, dtype=e.type.dtype.np_dtype)
        return lambda env: v
    if isinstance(e, N.Var):
        name = e.name
        return lambda env: env[name]
    assert isinstance(e, N.Op)
    name, attrs, out = e.name, dict(e.attrs), e.type
    if name in ("load", "load_scalar", "store", "atomic_add"):
        return _compile_memory(e, attrs)
    args = [_compile_expr(a) for a in e.args]
    arg_types = [a.type for a in e.args]
    if name == "dot":
        a, b = args

        def dot(env):
            env["__counter__"].ops += 1
            return S.dot(a(env), b(env))

        return dot
    if name in ("sum", "max", "min"):
        x, axis, keep = args[0], attrs["axis"], attrs.get("keepdims", False)
        return lambda env: S.reduce(name, x(env), out, axis, keep)
    if name == "zeros":
        z = np.zeros(out.shape, out.dtype.np_dtype)
        return lambda env: z
    if name == "full":
        v, shape, d = args[0], out.shape, out.dtype.np_dtype
        return lambda env: np.full(shape, S.round_to(np.asarray(v(env)), d), d)
    if name == "arange":
        r = np.arange(attrs["n"], dtype=np.int32)
        return lambda env: r
    if name == "trans":
        return lambda env: np.ascontiguousarray(args[0](env).T)
    if name == "expand_dims":
        axis = attrs["axis"]
        return lambda env: np.expand_dims(args[0](env), axis)
    if name == "reshape":
        shape = attrs["shape"]
        return lambda env: np.reshape(args[0](env), shape)
    if name == "broadcast_to":
        shape = attrs["shape"]
        return lambda env: np.ascontiguousarray(np.broadcast_to(args[0](env), shape))
    if name == "cast":
        cast_out = out
        return lambda env: S.elementwise("cast", cast_out, [args[0](env)], arg_types)

    def elementwise(env):
        return S.elementwise(name, out, [f(env) for f in args], arg_types)

    return elementwise


def _compile_memory(e: N.Op, attrs) -> Fn:
    name, loc = e.name, e.loc
    tensor_var = e.args[0]
    assert isinstance(tensor_var, N.Var) and isinstance(tensor_var.type, TensorType)
    tname = tensor_var.name
    if name in ("store", "atomic_add"):
        offs = [_compile_expr(a) for a in e.args[1:-1]]
        value = _compile_expr(e.args[-1])
        value_shape = e.args[-1].type.shape if isinstance(e.args[-1].type, TileType) else ()
        kind = "w" if name == "store" else "a"

        def write(env):
            arr: np.ndarray = env[tname]
            o = [int(f(env)) for f in offs]
            full, lo, hi = _box(arr, o, value_shape)
            v = np.broadcast_to(np.reshape(value(env), (1,) * (len(full) - len(value_shape)) + value_shape), full)
            if any(l >= h for l, h in zip(lo, hi)):
                return None
            src = v[tuple(slice(l - oo, h - oo) for l, h, oo in zip(lo, hi, o))]
            dst = tuple(slice(l, h) for l, h in zip(lo, hi))
            listener = env["__listener__"]
            if listener is not None:
                listener.access(tname, kind, lo, hi, loc)
            if kind == "w":
                arr[dst] = S.round_to(src, arr.dtype)
            else:
                cd = np.float32 if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16" else arr.dtype
                with np.errstate(all="ignore"):
                    arr[dst] = S.round_to(arr[dst].astype(cd) + S.round_to(src, np.dtype(cd)), arr.dtype)
            return None

        return write
    offs = [_compile_expr(a) for a in e.args[1:]]
    if name == "load_scalar":

        def load_scalar(env):
            arr: np.ndarray = env[tname]
            idx = tuple(int(f(env)) for f in offs)
            for k, (i, n) in enumerate(zip(idx, arr.shape)):
                if not 0 <= i < n:
                    raise IndexError(f"{loc}: {tname}[{', '.join(map(str, idx))}] is out of bounds for shape "
                                     f"{list(arr.shape)} (axis {k})")
            listener = env["__listener__"]
            if listener is not None:
                listener.access(tname, "r", idx, tuple(i + 1 for i in idx), loc)
            return np.asarray(arr[idx])

        return load_scalar
    shape, other = attrs["shape"], attrs.get("other", 0)

    def load(env):
        arr: np.ndarray = env[tname]
        o = [int(f(env)) for f in offs]
        full, lo, hi = _box(arr, o, shape)
        tile = np.full(full, other, dtype=arr.dtype)
        if all(l < h for l, h in zip(lo, hi)):
            listener = env["__listener__"]
            if listener is not None:
                listener.access(tname, "r", lo, hi, loc)
            tile[tuple(slice(l - oo, h - oo) for l, h, oo in zip(lo, hi, o))] = arr[tuple(slice(l, h) for l, h in zip(lo, hi))]
        return tile.reshape(shape)

    return load

