"""The CPU backend: binds NumPy arrays / CPU torch tensors to a Program, builds the task graph, poisons
outputs, simulates the persistent kernel and checks for races. Outputs are written in place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ... import dtypes as dt
from ...errors import ArgumentError, EdgeMapError
from ...ir import dims as D
from ...ir import nodes as N
from ...ir.passes.graph import TaskGraph, build_graph, index_loader
from ...ir.types import ScalarType, TensorType
from .checkers import AccessChecker
from .interpreter import CompiledTask
from .simulator import Simulator, Span


@dataclass
class CpuRun:
    """What a CPU run did: the graph, the schedule and the simulated timeline (see ``plot_timeline``)."""

    graph: TaskGraph
    schedule: str
    workers: int
    seed: int
    timeline: list[Span]

    def plot_timeline(self, ax=None):
        from .timeline import plot_timeline

        return plot_timeline(self.timeline, self.workers, ax=ax)


def to_numpy(name: str, a: Any) -> np.ndarray:
    """A NumPy view of an argument (no copy): NumPy arrays as they are, CPU torch tensors shared."""
    if isinstance(a, np.ndarray):
        return a
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(a, torch.Tensor):
        if a.device.type != "cpu":
            raise ArgumentError(f"argument {name}: the CPU backend takes CPU tensors, got one on {a.device}; "
                                f"run with backend='cuda'")
        a = a.detach()
        if a.dtype == torch.bfloat16:
            return a.view(torch.int16).numpy().view(dt.bf16.np_dtype)
        return a.numpy()
    raise ArgumentError(f"argument {name}: expected a NumPy array or a torch tensor, got {type(a).__name__}")


def bind_sizes(program: N.Program, arrays: dict[str, Any], shape_of, scalars: dict[str, Any]) -> dict[str, int]:
    """Bind every dim from the arguments' shapes; check that all shapes agree. ``shape_of(x)`` gives a shape."""
    env: dict[str, int] = {}
    for p in program.params:
        if isinstance(p.type, ScalarType) and p.type.dtype.is_int:
            v = scalars[p.name]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ArgumentError(f"argument {p.name}: expected an int, got {type(v).__name__} {v!r}")
            env[p.name] = int(v)
    origin: dict[str, str] = {}
    deferred = []
    for p in program.params:
        if not isinstance(p.type, TensorType):
            continue
        shape = shape_of(arrays[p.name])
        if len(shape) != p.type.ndim:
            raise ArgumentError(f"argument {p.name}: expected a {p.type.ndim}-d tensor {p.type}, got shape "
                                f"{list(shape)}")
        for axis, (want, got) in enumerate(zip(p.type.shape, shape)):
            if isinstance(want, D.Sym) and want.name not in env:
                env[want.name] = int(got)
                origin[want.name] = f"{p.name}.shape[{axis}]"
            else:
                deferred.append((p.name, axis, want, int(got)))
    for name, axis, want, got in deferred:
        try:
            w = want.eval(env)
        except KeyError as e:
            raise ArgumentError(f"argument {name}: axis {axis} is {want}, and {e.args[0]}") from None
        if w != got:
            src = ", ".join(f"{s}={env[s]} from {origin.get(s, 'an int argument')}" for s in sorted(want.syms()))
            raise ArgumentError(f"argument {name}: axis {axis} must be {want} = {w}"
                                + (f" ({src})" if src else "") + f", got {got}")
    return env


def written_tensors(program: N.Program) -> dict[str, list[str]]:
    """Megakernel tensor -> labels of the launches whose task stores or atomically adds into it."""
    out: dict[str, list[str]] = {}
    for L in program.launches:
        args = dict(L.args)
        for name in _stored_params(program.task(L.task).body):
            out.setdefault(args[name], []).append(L.label)
    return out


def _stored_params(stmts) -> set[str]:
    out: set[str] = set()
    for s in stmts:
        if isinstance(s, N.Eval) and s.value.name in ("store", "atomic_add"):
            out.add(s.value.args[0].name)
        elif isinstance(s, N.For):
            out |= _stored_params(s.body)
        elif isinstance(s, N.If):
            out |= _stored_params(s.then) | _stored_params(s.orelse)
    return out


def index_tensors(program: N.Program) -> set[str]:
    names: set[str] = set()
    for ev in program.events:
        names |= ev.wait_count.loads()
        for s in ev.shape:
            names |= s.loads()
    for L in program.launches:
        for ax in L.grid:
            names |= ax.lo.loads() | ax.hi.loads()
        for m in (*L.waits, *L.notifies):
            for ix in m.index:
                if ix is not None:
                    names |= ix.loads()
    return names


def _poison(a: np.ndarray) -> None:
    if a.dtype.kind == "f" or a.dtype == dt.bf16.np_dtype:
        a[...] = np.nan
    elif a.dtype.kind in "iu":
        a[...] = np.iinfo(a.dtype).min
    else:
        a[...] = True


_CPU_OPTIONS = ("workers", "schedule", "seed", "check", "verify_counts")


def run_cpu(program: N.Program, args: Sequence[Any], workers: int = 4, schedule: str = "static", seed: int = 0,
            check: bool = True, verify_counts: bool = True, **unknown) -> CpuRun:
    if unknown:
        hint = ("; a CPU run always records its simulated timeline (CpuRun.timeline, plot_timeline)"
                if "trace" in unknown else "")
        raise ArgumentError(f"unknown option(s) {', '.join(sorted(unknown))} for the CPU backend; it takes "
                            f"{', '.join(_CPU_OPTIONS)}{hint}")
    if len(args) != len(program.params):
        raise ArgumentError(f"{program.name} takes {len(program.params)} arguments "
                            f"({', '.join(p.name for p in program.params)}), got {len(args)}")
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for p, a in zip(program.params, args):
        if isinstance(p.type, TensorType):
            arr = to_numpy(p.name, a)
            if arr.dtype != p.type.dtype.np_dtype:
                known = {d.np_dtype: d.name for d in dt.ALL.values()}
                raise ArgumentError(f"argument {p.name}: expected dtype {p.type.dtype}, got "
                                    f"{known.get(arr.dtype, arr.dtype)}")
            arrays[p.name] = arr
        else:
            scalars[p.name] = a
    env = bind_sizes(program, arrays, lambda a: a.shape, scalars)
    for p in program.params:
        if isinstance(p.type, ScalarType) and p.type.dtype.is_float:
            if isinstance(scalars[p.name], bool) or not isinstance(scalars[p.name], (int, float, np.floating)):
                raise ArgumentError(f"argument {p.name}: expected a number, got {scalars[p.name]!r}")

    writers = written_tensors(program)
    for name in index_tensors(program):
        if name in writers:
            raise EdgeMapError(f"{name} is read by an edge map, grid or wait count, so it must be an input; tasks "
                               f"{', '.join(writers[name])} write it", program.loc)

    load = index_loader(program, arrays)
    graph = build_graph(program, env, load, verify_counts=verify_counts)

    compiled = {t.name: CompiledTask(t) for t in program.tasks}
    base_env: list[dict] = []
    param_maps: list[dict[str, str]] = []
    for L in program.launches:
        task = program.task(L.task)
        sizes = {k: v.eval(env, load) for k, v in L.dims}
        lenv: dict[str, Any] = {k: np.asarray(v, dtype=np.int32) for k, v in sizes.items()}
        pmap: dict[str, str] = {}
        for (name, arg), q in zip(L.args, task.params):
            if isinstance(q.type, TensorType):
                arr = arrays[arg]
                want = tuple(s.eval(sizes) for s in q.type.shape)
                if tuple(arr.shape) != want:
                    raise ArgumentError(f"task `{L.label}`: argument {name} must have shape {list(want)} "
                                        f"({q.type}), but {arg} has shape {list(arr.shape)}", L.loc)
                lenv[name] = arr
                pmap[name] = arg
            elif isinstance(arg, str):
                lenv[name] = np.asarray(scalars[arg], dtype=q.type.dtype.np_dtype)
            elif isinstance(arg, D.IntExpr):
                lenv[name] = np.asarray(arg.eval(env, load), dtype=q.type.dtype.np_dtype)
            else:
                lenv[name] = np.asarray(arg, dtype=q.type.dtype.np_dtype)
        base_env.append(lenv)
        param_maps.append(pmap)

    outputs = {n: arrays[n] for n in writers if not program.param(n).type.inout}
    for a in outputs.values():
        _poison(a)
    checker = AccessChecker(graph, outputs, writers) if check else None

    def execute(inst_id: int) -> int:
        inst = graph.instances[inst_id]
        L = program.launches[inst.launch]
        task = program.task(L.task)
        e = dict(base_env[inst.launch])
        for c, v in zip(task.coords, inst.coords):
            e[c] = np.asarray(v, dtype=np.int32)
        if checker is not None:
            checker.begin(inst_id, param_maps[inst.launch])
        return compiled[task.name].run(e, checker)

    timeline = Simulator(graph, workers, schedule, seed, execute).run()
    if checker is not None:
        checker.check_races()
    return CpuRun(graph, schedule, workers, seed, timeline)
