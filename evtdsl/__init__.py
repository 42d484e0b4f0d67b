"""evtdsl: tiled tasks and event-tensor dependencies in Python, compiled into persistent GPU megakernels.

    import evtdsl as evt
    M = evt.dim("M")

    @evt.task(grid=(evt.cdiv(M, 16),))
    def double(i, x: evt.Tensor[M, evt.f32], y: evt.Tensor[M, evt.f32]):
        evt.store(y, (i * 16,), 2.0 * evt.load(x, (i * 16,), (16,)))
"""
from .dtypes import bf16, bool_, f16, f32, f64, i8, i32, i64
from .errors import (ArgumentError, DeadlockError, DeviceTimeoutError, EdgeMapError, EventCountError, EvtError,
                     RaceError, TypeMismatchError, UninitializedReadError, UnsupportedSyntaxError)
from .frontend.annotations import InOut, Tensor
from .frontend.megakernel import EventTensor, Megakernel, Task, megakernel, task
from .frontend.tile_ops import (abs, arange, atomic_add, broadcast_to, cast, cdiv, cos, dot, erf, exp, expand_dims,
                                floor, full, load, log, max, maximum, min, minimum, reshape, rsqrt, sigmoid, silu,
                                sin, sqrt, store, sum, tanh, trans, where, zeros)
from .ir.dims import dim

__version__ = "0.1.0"


def _checkout_library_finder():
    """An install maps the standard library ``library/`` to ``evtdsl.library`` (pyproject.toml). In a source
    checkout used without installing (the repo on ``PYTHONPATH``, as on a lent GPU machine), this finder, last
    on ``sys.meta_path`` so that an install always wins, resolves ``evtdsl.library`` to that folder."""
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "library"
    if not (folder / "__init__.py").is_file():
        return

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "evtdsl.library":
                return None
            return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                          submodule_search_locations=[str(folder)])

    if not any(type(f).__name__ == "_Finder" and f.__module__ == __name__ for f in sys.meta_path):
        sys.meta_path.append(_Finder())


_checkout_library_finder()

__all__ = [
    "bf16", "bool_", "f16", "f32", "f64", "i8", "i32", "i64",
    "ArgumentError", "DeadlockError", "DeviceTimeoutError", "EdgeMapError", "EventCountError", "EvtError",
    "RaceError", "TypeMismatchError", "UninitializedReadError", "UnsupportedSyntaxError",
    "InOut", "Tensor", "EventTensor", "Megakernel", "Task", "megakernel", "task", "dim",
    "abs", "arange", "atomic_add", "broadcast_to", "cast", "cdiv", "cos", "dot", "erf", "exp", "expand_dims",
    "floor", "full", "load", "log", "max", "maximum", "min", "minimum", "reshape", "rsqrt", "sigmoid", "silu",
    "sin", "sqrt", "store", "sum", "tanh", "trans", "where", "zeros",
]
