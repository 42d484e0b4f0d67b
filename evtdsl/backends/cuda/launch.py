"""Launch a megakernel on the GPU: torch CUDA tensors or CuPy arrays, on the current stream.

    run = mk.run(x, w, y, backend="cuda", schedule="dynamic")   # -> CudaRun; results are in y

One call: check the arguments (dtype, shape, device; any strides), bind the sizes, get the kernel (the
compile cache: one binary for every value of the sizes), get the task tables of this shape (built and
uploaded once per shape; a data-dependent program reads its index tensors on the host, which synchronises),
reset the event counters and queue from a pristine copy with an asynchronous device-to-device copy on the
stream, launch one CTA per worker (all co-resident), and with ``sync=True`` wait and read the error record:
a task that waited too long raises DeviceTimeoutError naming the task and the event. With ``sync=False``
nothing waits or reads back (CUDA-graph capture, benchmarks); ``CudaRun.check()`` does it later.
"""
from __future__ import annotations

import hashlib
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ... import dtypes as dt
from ... import knobs
from ...dtypes import DType
from ...errors import ArgumentError, DeviceTimeoutError, EdgeMapError, EventCountError, EvtError
from ...ir import nodes as N
from ...ir.passes.graph import TaskGraph, build_graph, index_loader
from ...ir.types import ScalarType, TensorType
from ..cpu.runner import index_tensors, bind_sizes, written_tensors
from ..cpu.simulator import Span
from . import tables as TB
from .compiler import CompiledKernel, compile_program
from .layout import param_fields, pack_params

_OPTIONS = ("workers", "schedule", "sync", "verify_counts", "num_threads", "min_blocks", "stream", "inline_tasks",
            "trace")
_TORCH_DTYPES = {"bfloat16": dt.bf16, "float16": dt.f16, "float32": dt.f32, "float64": dt.f64, "int8": dt.i8,
                 "int32": dt.i32, "int64": dt.i64, "bool": dt.bool_}
_MAX_CACHED_SHAPES = 256


@dataclass
class _Arg:
    """A device array argument: its framework ("torch" or "cupy"), address, shape, strides, device."""

    obj: Any
    kind: str
    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: DType
    device: int


def _describe(a: Any) -> str:
    return f"{type(a).__module__}.{type(a).__name__}"


def _as_arg(name: str, a: Any) -> _Arg:
    mod = type(a).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(a, torch.Tensor):
            if a.device.type != "cuda":
                raise ArgumentError(f"argument {name}: the CUDA backend takes CUDA tensors, got one on {a.device}; "
                                    f"move it with .cuda() or run with backend='cpu'")
            d = _TORCH_DTYPES.get(str(a.dtype).removeprefix("torch."))
            if d is None:
                raise ArgumentError(f"argument {name}: torch dtype {a.dtype} has no evtdsl equivalent")
            return _Arg(a, "torch", a.data_ptr(), tuple(a.shape), tuple(a.stride()), d, a.device.index)
    if mod.startswith("cupy"):
        import cupy

        if isinstance(a, cupy.ndarray):
            try:
                d = dt.from_numpy(a.dtype)
            except TypeError as e:
                raise ArgumentError(f"argument {name}: {e}") from None
            strides = tuple(s // a.itemsize for s in a.strides)
            return _Arg(a, "cupy", a.data.ptr, tuple(a.shape), strides, d, a.device.id)
    raise ArgumentError(f"argument {name}: the CUDA backend takes torch CUDA tensors or CuPy arrays, got "
                        f"{_describe(a)}; run with backend='cpu' for NumPy arrays")


# ---------------------------------------------------------------------------------------------
# Device memory through the arguments' own framework (torch's caching allocator keeps CUDA-graph capture
# working; CuPy's pool otherwise)


class _StreamHandle:
    """A raw CUDA stream handle, offered to CuPy through the CUDA stream protocol."""

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)


def _cupy_stream(handle: int):
    """A CuPy stream object for the raw handle: Stream.from_external where CuPy has it (ExternalStream is
    deprecated there), ExternalStream on older CuPy."""
    import cupy

    if hasattr(cupy.cuda.Stream, "from_external"):
        return cupy.cuda.Stream.from_external(_StreamHandle(handle))
    return cupy.cuda.ExternalStream(handle)


class _Memory:
    def __init__(self, kind: str, device: int, stream: int):
        self.kind, self.device, self.stream = kind, device, stream

    def upload(self, host: np.ndarray) -> tuple[Any, int]:
        if self.kind == "torch":
            import torch

            t = torch.from_numpy(np.ascontiguousarray(host)).to(f"cuda:{self.device}")
            return t, t.data_ptr()
        import cupy

        with cupy.cuda.Device(self.device), _cupy_stream(self.stream):
            a = cupy.asarray(host)
        return a, a.data.ptr

    def device_array(self, n: int, dtype: str, zero: bool = False) -> tuple[Any, int]:
        """A new device array of n ``dtype`` ("int32", "int64") elements, zeroed or not: (array, address)."""
        if self.kind == "torch":
            import torch

            make = torch.zeros if zero else torch.empty
            t = make(n, dtype=getattr(torch, dtype), device=f"cuda:{self.device}")
            return t, t.data_ptr()
        import cupy

        with cupy.cuda.Device(self.device), _cupy_stream(self.stream):
            a = (cupy.zeros if zero else cupy.empty)(n, dtype=np.dtype(dtype))
        return a, a.data.ptr

    def synchronize(self, device: bool = False) -> None:
        """Wait for this stream (or the whole device)."""
        import cupy
        from cupy_backends.cuda.api import runtime

        with cupy.cuda.Device(self.device):
            if device:
                runtime.deviceSynchronize()
            else:
                runtime.streamSynchronize(self.stream)

    def to_host(self, obj: Any) -> np.ndarray:
        if self.kind == "torch":
            return obj.cpu().numpy()
        import cupy

        with cupy.cuda.Device(self.device):
            return cupy.asnumpy(obj, stream=_cupy_stream(self.stream))


def _current_stream(kind: str, device: int) -> int:
    if kind == "torch":
        import torch

        return torch.cuda.current_stream(device).cuda_stream
    import cupy

    with cupy.cuda.Device(device):
        return cupy.cuda.get_current_stream().ptr


# ---------------------------------------------------------------------------------------------
# Devices and loaded modules


@dataclass
class _Device:
    index: int
    arch: str
    num_sms: int
    name: str


_DEVICES: dict[int, _Device] = {}


def device_info(index: int) -> _Device:
    if index not in _DEVICES:
        import cupy
        from cupy_backends.cuda.api import runtime

        cc = cupy.cuda.Device(index).compute_capability  # "90" for an H100
        arch = f"sm_{cc}a" if int(cc[:-1]) >= 9 else f"sm_{cc}"
        props = runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        _DEVICES[index] = _Device(index, arch, int(props["multiProcessorCount"]), name)
    return _DEVICES[index]


@dataclass
class _Loaded:
    module: Any
    function: Any
    blocks_per_sm: int


_MODULES: dict[tuple[str, int], _Loaded] = {}


def _load(kernel: CompiledKernel, device: _Device) -> _Loaded:
    key = (kernel.key, device.index)
    if key not in _MODULES:
        import cupy
        from cupy.cuda import function
        from cupy_backends.cuda.api import driver

        t0 = time.perf_counter()
        with cupy.cuda.Device(device.index):
            mod = function.Module()
            mod.load(kernel.cubin)
            fn = mod.get_function(kernel.name)
            if kernel.smem_bytes > 48 * 1024:
                driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        kernel.smem_bytes)
            per_sm = driver.occupancyMaxActiveBlocksPerMultiprocessor(fn.ptr, kernel.num_threads, kernel.smem_bytes)
        if per_sm < 1:
            raise EvtError(f"kernel {kernel.name} cannot run on {device.name}: no block of {kernel.num_threads} "
                           f"threads with {kernel.smem_bytes} bytes of shared memory fits on a multiprocessor")
        kernel.timings["load"] = time.perf_counter() - t0
        _MODULES[key] = _Loaded(mod, fn, per_sm)
    return _MODULES[key]


_KERNELS: "weakref.WeakKeyDictionary[N.Program, dict[tuple, CompiledKernel]]" = weakref.WeakKeyDictionary()


def _kernel(program: N.Program, arch: str, num_threads: int, min_blocks: int, stream: bool | None = None,
            inline_tasks: bool | None = None) -> CompiledKernel:
    """compile_program, remembered per program object so that a launch does not even hash the program.
    ``stream`` / ``inline_tasks``: None takes the knob (EVTDSL_STREAM_WEIGHTS / EVTDSL_INLINE_TASKS)."""
    stream = knobs.STREAM_WEIGHTS.get() if stream is None else stream
    inline_tasks = knobs.INLINE_TASKS.get() if inline_tasks is None else inline_tasks
    key = (arch, num_threads, knobs.DEBUG.get(), knobs.L2_PREFETCH.get(), stream, inline_tasks, min_blocks)
    per_program = _KERNELS.setdefault(program, {})
    if key not in per_program or knobs.ALWAYS_COMPILE.get():
        per_program[key] = compile_program(program, arch=arch, num_threads=num_threads, min_blocks=min_blocks,
                                           debug=key[2], prefetch=key[3], stream=key[4], inline_tasks=key[5])
    return per_program[key]


# ---------------------------------------------------------------------------------------------
# Task tables per launch shape


@dataclass
class _DeviceTables:
    tables: TB.TaskTables
    memory: list[Any]  # keeps the device arrays alive
    pointers: dict[str, int]
    pristine: int  # device address of the initial state


_TABLES: "OrderedDict[tuple, _DeviceTables]" = OrderedDict()


def _check_launch_shapes(program: N.Program, env: dict[str, int], load, args: dict[str, _Arg]) -> None:
    for L in program.launches:
        task = program.task(L.task)
        sizes = {k: v.eval(env, load) for k, v in L.dims}
        for (name, arg), q in zip(L.args, task.params):
            if isinstance(q.type, TensorType):
                want = tuple(s.eval(sizes) for s in q.type.shape)
                if args[arg].shape != want:
                    raise ArgumentError(f"task `{L.label}`: argument {name} must have shape {list(want)} "
                                        f"({q.type}), but {arg} has shape {list(args[arg].shape)}", L.loc)


def _tables(program: N.Program, env: dict[str, int], args: dict[str, _Arg], memory: _Memory, workers: int | None,
            capacity: int, verify_counts: bool) -> _DeviceTables:
    index_names = sorted(index_tensors(program))
    index_arrays = {n: memory.to_host(args[n].obj) for n in index_names}
    digest = hashlib.sha1()
    for n in index_names:
        digest.update(n.encode() + str(index_arrays[n].shape).encode())
        digest.update(np.ascontiguousarray(index_arrays[n]).tobytes())
    # tables are sized for the workers asked for or, by default, for as many CTAs as this kernel fits: that
    # depends on the kernel (num_threads, min_blocks and the code switches change how many fit on an SM), and
    # static queues for CTAs that cannot be resident would wait forever on queues that never start
    sized_for = workers if workers is not None else ("fit", capacity)
    key = (id(program), tuple(sorted(env.items())), digest.hexdigest(), sized_for, verify_counts, memory.device)
    hit = _TABLES.get(key)
    if hit is not None and hit.tables.graph.program is program:
        _TABLES.move_to_end(key)
        return hit
    writers = written_tensors(program)
    for name in index_names:
        if name in writers:
            raise EdgeMapError(f"{name} is read by an edge map, grid or wait count, so it must be an input; tasks "
                               f"{', '.join(writers[name])} write it", program.loc)
    load = index_loader(program, index_arrays)
    _check_launch_shapes(program, env, load, args)
    graph = build_graph(program, env, load, verify_counts=verify_counts)
    n = len(graph.instances)
    if workers is None:
        workers = max(1, min(capacity, n))
    tables = TB.build_tables(graph, workers)
    keep, ptrs = [], {}
    for name, arr in tables.arrays.items():
        obj, ptrs[name] = memory.upload(arr)
        keep.append(obj)
    obj, pristine = memory.upload(tables.init_state)
    keep.append(obj)
    memory.synchronize()  # the tables serve launches on any stream from now on
    entry = _DeviceTables(tables, keep, ptrs, pristine)
    _TABLES[key] = entry
    if len(_TABLES) > _MAX_CACHED_SHAPES:
        memory.synchronize(device=True)  # no launch may still read the tables dropped here
        while len(_TABLES) > _MAX_CACHED_SHAPES:
            _TABLES.popitem(last=False)
    return entry


# ---------------------------------------------------------------------------------------------
# Runs and their errors


@dataclass(frozen=True)
class TaskTrace(Span):
    """One task of a traced launch (``trace=True``), times in µs from the first task any CTA took: ``taken``
    (its CTA took it), ``start`` (its events had fired, its body starts), ``end`` (its notifies are done),
    on CTA ``worker`` of SM ``sm``. A span of the CPU backend's kind, so ``plot_timeline`` draws both."""

    taken: float
    sm: int


def task_traces(graph: TaskGraph, raw: np.ndarray) -> list[TaskTrace]:
    """The tasks of a traced launch from the kernel's record (4 int64 per instance: %globaltimer when taken,
    started and ended, and (SM << 32) | CTA), in the order they started."""
    raw = np.asarray(raw, dtype=np.int64).reshape(-1, 4)
    if len(raw) != len(graph.instances) or not (raw[:, 2] > 0).all():
        missing = int((raw[:, 2] <= 0).sum()) if len(raw) == len(graph.instances) else len(graph.instances)
        raise EvtError(f"internal error: the trace of {graph.program.name} lacks {missing} of its "
                       f"{len(graph.instances)} tasks")
    t0 = int(raw[:, 0].min())
    out = [TaskTrace(w & 0xFFFFFFFF, i, graph.instances[i].label,
                     graph.program.launches[graph.instances[i].launch].label,
                     (b - t0) / 1e3, (e - t0) / 1e3, (a - t0) / 1e3, w >> 32)
           for i, (a, b, e, w) in enumerate(raw.tolist())]
    return sorted(out, key=lambda t: (t.start, t.worker))


@dataclass
class CudaRun:
    """What a GPU launch did. With ``sync=False``, ``check()`` later waits for it and raises its error."""

    graph: TaskGraph
    schedule: str
    workers: int
    kernel: CompiledKernel
    device: str
    _tables: TB.TaskTables = field(repr=False)
    _memory: _Memory = field(repr=False)
    _state: Any = field(repr=False)
    _trace: Any = field(default=None, repr=False)
    _checked: bool = field(default=False, repr=False)

    def timeline(self) -> list[TaskTrace]:
        """Every task of a launch made with ``trace=True``, in the order they started (waits for the launch)."""
        if self._trace is None:
            raise ArgumentError("timeline: this launch was not traced; launch it with trace=True")
        self.check()
        return task_traces(self.graph, self._memory.to_host(self._trace))

    def plot_timeline(self, ax=None):
        """A Gantt chart of ``timeline()``: one row per CTA, one bar per task body, coloured by launch."""
        from ..cpu.timeline import plot_timeline

        return plot_timeline(self.timeline(), self.workers, ax=ax, xlabel="µs from the first task taken")

    def check(self) -> None:
        """Wait for the launch; raise the error the kernel recorded (a timeout, an over-notified event, an
        out-of-bounds index read in a debug build), or, in debug builds, an event that did not end at zero."""
        if self._checked:
            return
        self._memory.synchronize()
        state = self._memory.to_host(self._state)
        self._checked = True
        if state[TB.CTL_ERROR]:
            raise device_error(state, self._tables, self.kernel.index_sites, self.schedule)
        if knobs.DEBUG.get():
            check_counters(state, self._tables)


def _notifier_report(tables: TB.TaskTables, state: np.ndarray, el) -> str:
    g = tables.graph
    done = tables.done(state)
    who = g.notifiers.get(el, [])
    ran = [g.instances[i].label for i in who if done[i]]
    missing = [g.instances[i].label for i in who if not done[i]]

    def show(xs):
        return ", ".join(xs[:4]) + (", ..." if len(xs) > 4 else "")

    if not who:
        return "no task notifies it"
    if not missing:
        return (f"all {len(who)} task(s) that notify it ran ({show(ran)}), so the graph sends fewer "
                f"notifications than the wait count (run with verify_counts=True to check counts on the host)")
    return f"{len(missing)} notifier(s) never ran: {show(missing)}"


def device_error(state: np.ndarray, tables: TB.TaskTables, index_sites: Sequence[tuple[Any, str]],
                 schedule: str) -> EvtError:
    """The error a kernel recorded in its state (read back after it ended), explained with the graph."""
    g = tables.graph
    code, inst, elem, extra = (int(state[k]) for k in (TB.CTL_ERROR, TB.CTL_INST, TB.CTL_ELEM, TB.CTL_EXTRA))
    counters = tables.counters(state)
    usable = "every CTA exited cleanly, so the GPU is still usable"
    timeout = f"{knobs.WAIT_TIMEOUT_MS.get()} ms (EVTDSL_WAIT_TIMEOUT_MS)"
    if code == TB.ERR_QUEUE_TIMEOUT:
        # dynamic schedule: name a task that never became ready, and one of its unfired events
        done, pending = tables.done(state), tables.pending(state)
        for i in g.order:
            if done[i] or pending[i] <= 0:
                continue
            unfired = [el for el in g.waits[i] if counters[tables.element_id(el)] > 0]
            if unfired:
                inst, elem = i, tables.element_id(unfired[0])
                break
        else:
            return DeviceTimeoutError(f"the ready queue stalled for {timeout} at slot {extra} although no task "
                                      f"waits on an unfired event; {usable}", g.program.loc)
    if code in (TB.ERR_WAIT_TIMEOUT, TB.ERR_QUEUE_TIMEOUT):
        el = tables.element(elem)
        i = g.instances[inst]
        left = int(counters[elem])
        want = int(g.wait_counts[el[0]][el[1]])
        return DeviceTimeoutError(
            f"task {i.label} waited more than {timeout} on event {g.element_str(el)}, which never fired "
            f"({schedule} schedule): it expects {want} notification(s) and {left} are still outstanding; "
            f"{_notifier_report(tables, state, el)}. {usable}", g.program.launches[i.launch].loc)
    if code == TB.ERR_OVER_NOTIFY:
        el = tables.element(elem)
        i = g.instances[inst]
        return EventCountError(
            f"task {i.label} notified event {g.element_str(el)} after it had fired (its counter went to {extra}): "
            f"the event receives more notifications than its wait count "
            f"{int(g.wait_counts[el[0]][el[1]])}; {usable}", g.program.launches[i.launch].loc)
    if code == TB.ERR_INDEX:
        loc, tensor = index_sites[extra] if 0 <= extra < len(index_sites) else (None, "a tensor")
        who = g.instances[inst].label if 0 <= inst < len(g.instances) else "a task"
        return EvtError(f"task {who} read {tensor}[...] out of bounds (debug check); {usable}", loc)
    return EvtError(f"the kernel recorded an unknown error code {code}")


def check_counters(state: np.ndarray, tables: TB.TaskTables) -> None:
    """Debug check after a run: every event counter ended at exactly zero."""
    counters = tables.counters(state)
    bad = np.flatnonzero(counters != 0)
    if len(bad):
        el = tables.element(int(bad[0]))
        g = tables.graph
        raise EventCountError(
            f"after the run, event {g.element_str(el)} has {int(counters[bad[0]])} notification(s) outstanding "
            f"(debug check; {len(bad)} element(s) did not end at zero): "
            f"{_notifier_report(tables, state, el)}", g.program.event(el[0]).loc)


# ---------------------------------------------------------------------------------------------
# The entry point


def run_cuda(mk, args: Sequence[Any], workers: int | None = None, schedule: str = "static", sync: bool = True,
             verify_counts: bool = True, num_threads: int = 256, min_blocks: int = 2, stream: bool | None = None,
             inline_tasks: bool | None = None, trace: bool = False, **unknown) -> CudaRun:
    """Run megakernel ``mk`` on the GPU holding ``args`` (see the module docstring)."""
    program: N.Program = mk.ir
    if unknown:
        raise ArgumentError(f"unknown option(s) {', '.join(sorted(unknown))} for the CUDA backend; it takes "
                            f"{', '.join(_OPTIONS)}")
    if schedule not in ("static", "dynamic"):
        raise ArgumentError(f"schedule must be 'static' or 'dynamic', got {schedule!r}")
    if isinstance(min_blocks, bool) or not isinstance(min_blocks, int) or not 1 <= min_blocks <= 32:
        raise ArgumentError(f"min_blocks (CTAs per SM the kernel's registers are bounded for) must be an int in "
                            f"1..32, got {min_blocks!r}")
    for name, value in (("stream", stream), ("inline_tasks", inline_tasks)):
        if value is not None and not isinstance(value, bool):
            raise ArgumentError(f"{name} (a code-generation switch; None takes the knob) must be a bool or None, "
                                f"got {value!r}")
    if not isinstance(trace, bool):
        raise ArgumentError(f"trace (record each task's times and CTA for CudaRun.timeline) must be a bool, got "
                            f"{trace!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ArgumentError(f"workers must be a positive int or None, got {workers!r}")
    if len(args) != len(program.params):
        raise ArgumentError(f"{program.name} takes {len(program.params)} arguments "
                            f"({', '.join(p.name for p in program.params)}), got {len(args)}")
    arrays: dict[str, _Arg] = {}
    scalars: dict[str, Any] = {}
    for p, a in zip(program.params, args):
        if isinstance(p.type, TensorType):
            arg = _as_arg(p.name, a)
            if arg.dtype != p.type.dtype:
                raise ArgumentError(f"argument {p.name}: expected dtype {p.type.dtype}, got {arg.dtype}")
            arrays[p.name] = arg
        else:
            scalars[p.name] = a
            if p.type.dtype.is_float and (isinstance(a, bool) or not isinstance(a, (int, float, np.floating))):
                raise ArgumentError(f"argument {p.name}: expected a number, got {a!r}")
    if not arrays:
        raise ArgumentError(f"{program.name} has no tensor arguments to say which GPU runs it")
    first = next(iter(arrays.values()))
    for name, a in arrays.items():
        if a.device != first.device:
            raise ArgumentError(f"argument {name}: on cuda:{a.device}, but {next(iter(arrays))} is on "
                                f"cuda:{first.device}; all tensors must be on one device")
    env = bind_sizes(program, arrays, lambda a: a.shape, scalars)
    kind = "torch" if any(a.kind == "torch" for a in arrays.values()) else "cupy"
    device = device_info(first.device)
    kernel = _kernel(program, device.arch, num_threads, min_blocks, stream, inline_tasks)
    loaded = _load(kernel, device)
    capacity = loaded.blocks_per_sm * device.num_sms
    if workers is not None and workers > capacity:
        raise ArgumentError(f"workers={workers}: at most {capacity} CTAs of kernel {kernel.name} can be resident "
                            f"at once on {device.name} ({loaded.blocks_per_sm} per SM x {device.num_sms} SMs), and "
                            f"a persistent kernel needs all of them resident")
    memory = _Memory(kind, first.device, _current_stream(kind, first.device))
    dev_tables = _tables(program, env, arrays, memory, workers, capacity, verify_counts)
    tables = dev_tables.tables
    if tables.workers > capacity:  # a persistent kernel needs every CTA resident
        raise EvtError(f"internal error: task tables for {tables.workers} workers, but {kernel.name} fits "
                       f"{capacity} CTAs on {device.name}")
    dynamic = schedule == "dynamic"
    state, state_ptr = memory.device_array(len(tables.init_state), "int32")
    times, times_ptr = memory.device_array(4 * tables.num_instances, "int64", zero=True) if trace else (None, 0)
    packed = kernel_params(program, {n: (a.ptr, a.shape, a.strides) for n, a in arrays.items()}, scalars, env,
                           tables, dev_tables.pointers, state_ptr, dynamic, times_ptr)
    _launch(loaded, kernel, tables.workers, packed, memory, dev_tables.pristine, state_ptr,
            tables.state_words(dynamic))
    run = CudaRun(tables.graph, schedule, tables.workers, kernel, device.name, tables, memory, state, times)
    if sync:
        run.check()
    return run


def kernel_params(program: N.Program, tensors: dict[str, tuple[int, Sequence[int], Sequence[int]]],
                  scalars: dict[str, Any], env: dict[str, int], tables: TB.TaskTables, table_ptrs: dict[str, int],
                  state_ptr: int, dynamic: bool, trace_ptr: int = 0) -> bytes:
    """The kernel's parameter bytes: tensors as (address, shape, strides in elements), scalars by name,
    the bound sizes, and the device addresses of the task tables, of this launch's state and of its task
    timeline (0: not traced)."""
    sched = {**{n: table_ptrs[n] for n in TB.TABLE_NAMES}, "state": state_ptr,
             "num_instances": tables.num_instances, "num_elements": tables.num_elements,
             "coord_stride": tables.coord_stride, "timeout_ns": knobs.WAIT_TIMEOUT_MS.get() * 1_000_000,
             "dynamic": int(dynamic), "trace": trace_ptr}
    values: dict[str, float | int] = dict(env)
    for p in program.params:
        if isinstance(p.type, ScalarType):
            values[p.name] = int(scalars[p.name]) if p.type.dtype.is_int else float(scalars[p.name])
    return pack_params(param_fields(program), tensors, values, sched)


def _launch(loaded: _Loaded, kernel: CompiledKernel, grid: int, packed: bytes, memory: _Memory, pristine: int,
            state: int, words: int) -> None:
    import cupy
    from cupy_backends.cuda.api import driver, runtime

    buf = np.frombuffer(packed, dtype=np.uint8).copy()
    argv = np.array([buf.ctypes.data], dtype=np.uint64)
    with cupy.cuda.Device(memory.device):
        runtime.memcpyAsync(state, pristine, 4 * words, runtime.memcpyDeviceToDevice, memory.stream)
        driver.launchKernel(loaded.function.ptr, grid, 1, 1, kernel.num_threads, 1, 1, kernel.smem_bytes,
                            memory.stream, argv.ctypes.data, 0)
