"""IR Program -> CUDA C++ source of one persistent kernel.

Tile representation. A tile *variable* (and any value that must exist as a whole: a `load` assigned to a
name, a `dot` operand or result, a reduction result) lives in shared memory, row-major, in a per-task
stack allocation (a block's variables are freed at its end, a statement's temporaries after it; the
kernel's dynamic shared memory is the largest peak over tasks). Scalars live in registers and are uniform
across the CTA. Everything else is *fused*: an elementwise expression (arithmetic, math, casts, where,
broadcasts, transposes, reshapes, masked global loads) is a C++ expression of the element's coordinates,
evaluated inside the one CTA-cooperative loop of the statement that consumes it:

    // rowsum.py:22  acc += evt.sum(evt.load(part, (i * BM, k), (BM, 1)), axis=1)
    evt::reduce_rows<16, 1, 256, ...>(..., [&](int r, int k) { return masked load of part; }, -> tmp);
    __syncthreads();
    for (int evt_e = threadIdx.x; evt_e < 16; evt_e += 256) v_acc[evt_e] = v_acc[evt_e] + tmp[evt_e];

Values are rounded to their IR dtype after every op (bf16/f16 math is done in float), exactly like the
NumPy backend. Barriers are placed by a hazard tracker over shared-memory byte ranges and global tensors.
16-bit tiles whose rows are a multiple of 128 bytes get padded rows, so ldmatrix reads are conflict-free.
A `load` in an innermost `for` loop whose offsets depend only on the loop variable and loop-invariant
scalars is software-pipelined: cp.async copies into a ring of 2-6 shared-memory stages (enough to keep
~40 KB in flight), one barrier per iteration; tile loads are unrolled 16-byte copies, and chunks whose rows
are all masked out are filled with one vector store. `dot` uses tensor cores (ldmatrix + mma.sync m16n8k16,
f32 accumulation) for bf16/f16 tiles of fitting shapes and a plain FMA loop otherwise. A float32 tile
updated in a loop only by `acc = acc + dot(a, b)` (and not otherwise touched there) stays in mma
fragments in registers for the whole loop: loaded from shared memory before it, stored back after it; when
it has fewer 16x8 blocks than the CTA has warps, K is split among warps and the partial sums are added in a
fixed order at the store. With ``stream`` (EVTDSL_STREAM_WEIGHTS), the weight of such a dot over 16-row
blocks, ``acc += dot(x_tile, load(w).T)`` with w read-only, skips the ring: each warp loads the pieces of w its
mma jobs use into registers on consecutive bytes (16-byte loads; evt_tile.cuh), one to three iterations
ahead in as many register buffers (the loop unrolled by as many); each iteration stages its buffer in the
warp's part of a shared-memory transposition buffer (fragment order, k permuted within 32-wide chunks so that
one piece feeds two mma steps) and reloads it at once. x (or h) is read straight from global memory, and the
loop version whose tiles are all in bounds computes each lane's pointers once before the loop.
With ``prefetch``, a task that must wait on events (static schedule) first brings the read-only tiles of its
first loop into L2 (``evt_prefetch_<task>``; see evt_sched.cuh).
"""
from __future__ import annotations

import itertools
import linecache
import math
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from ... import dtypes as dt
from ...dtypes import DType
from ...errors import EvtError, SourceLoc
from ...ir import dims as D
from ...ir import nodes as N
from ...ir import ops
from ...ir.types import ScalarType, TensorType, TileType, shape_of
from ..cpu.runner import written_tensors
from .layout import MAX_PARAM_BYTES, SCHED_BYTES, param_fields, params_nbytes


class TileMemoryError(EvtError):
    """A task's tiles need more shared memory than one block can have."""


_CTYPE = {"bf16": "__nv_bfloat16", "f16": "__half", "f32": "float", "f64": "double", "i8": "signed char",
          "i32": "int", "i64": "long long", "bool": "bool"}

# Largest dynamic shared memory per block, by SM version (bytes).
_SMEM_LIMIT = {70: 98304, 75: 65536, 80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448,
               100: 232448, 103: 232448, 110: 232448, 120: 101376, 121: 101376}
# Bytes of cp.async stages one pipelined loop may hold, the bytes it aims to keep in flight (Little's law:
# ~3 TB/s x ~1 us over ~132 SMs is ~23 KB per SM; two CTAs per SM, and latency grows under load), and the
# most stages.
_PIPELINE_BYTES = 96 * 1024
_INFLIGHT_BYTES = 40 * 1024
_MAX_STAGES = 6
# Weights streamed into registers: the 16-byte pieces per thread a loop aims to keep in flight (8: 4 KB per warp,
# what the fastest hand-written GEMV of benchmarks/gemv_paths.py keeps), the most iterations ahead it loads them
# (one register buffer per iteration ahead; the loop is unrolled by as many), and the registers per thread one
# buffer of the loop's streamed weights may take. _STREAM_AHEAD: None picks the distance per loop, from its
# pieces per iteration; an int forces it (benchmarks).
_STREAM_TARGET_PIECES = 8
_STREAM_MAX_AHEAD = 3
_STREAM_AHEAD: int | None = None
_STREAM_REGS = 32
# Whether a loop of streamed weights with no ring gets an in-bounds version (stream_fast_predicate).
_STREAM_VERSIONED = True
# Macros of the runtime headers set before they are included (benchmarks: EVT_SPIN_MAX_NS, EVT_SPIN_RELAXED of
# evt_sched.cuh); not in the cache key, like the constants above.
_RUNTIME_DEFINES: dict[str, int] = {}
# Floats per thread that register-resident accumulators of one loop may hold.
_REG_ACC_FLOATS = 64
# Tile-load loops are unrolled when each thread copies at most this many 16-byte chunks.
_UNROLL_CHUNKS = 16


def ctype(d: DType) -> str:
    return _CTYPE[d.name]


def compute_ctype(d: DType) -> str:
    """Where arithmetic on ``d`` happens: float for bf16/f16 (rounded back after each op)."""
    return "float" if d in (dt.bf16, dt.f16) else ctype(d)


def conv(x: str, src: str, dst: str) -> str:
    return x if src == dst else f"evt::cvt<{dst}>({x})"


def literal(value, d: DType) -> str:
    """An exact C++ literal of ``value`` converted to ``d`` (as NumPy converts it)."""
    v = np.full((), value, dtype=d.np_dtype) if not isinstance(value, np.ndarray) else value.astype(d.np_dtype)
    if d == dt.bool_:
        return "true" if bool(v) else "false"
    if d.is_int:
        i = int(v)
        suffix = "LL" if d == dt.i64 else ""
        lo = int(np.iinfo(d.np_dtype).min)
        text = f"({lo + 1}{suffix} - 1)" if i == lo else (f"{i}{suffix}" if i >= 0 else f"({i}{suffix})")
        return f"(signed char){text}" if d == dt.i8 else text
    if d in (dt.bf16, dt.f16):
        bits = int(np.asarray(v).view(np.uint16))
        return f"evt::{'bf16' if d == dt.bf16 else 'f16'}_bits(0x{bits:04x})"
    x = float(v)
    if d == dt.f32:
        if math.isfinite(x):
            return f"{x.hex()}f" if math.copysign(1.0, x) > 0 else f"({x.hex()}f)"
        bits = int(np.asarray(v, dtype=np.float32).view(np.uint32))
        return f"__int_as_float(0x{bits:08x})"
    if math.isfinite(x):
        return x.hex() if math.copysign(1.0, x) > 0 else f"({x.hex()})"
    bits = int(np.asarray(v, dtype=np.float64).view(np.uint64))
    return f"__longlong_as_double(0x{bits:016x}ULL)"


def _pow2_floor(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _pow2_ceil(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def sanitize(name: str) -> str:
    return re.sub(r"\W", "_", name)


# ---------------------------------------------------------------------------------------------
# Values, buffers and hazards


@dataclass(frozen=True)
class Region:
    """Memory a CTA op touches: shared-memory bytes [lo, hi), or a global tensor alias group."""

    kind: str  # "s" or "g"
    lo: int = 0
    hi: int = 0
    name: str = ""

    def overlaps(self, o: "Region") -> bool:
        if self.kind != o.kind:
            return False
        if self.kind == "g":
            return self.name == o.name
        return self.lo < o.hi and o.lo < self.hi


def smem_strides(shape: tuple[int, ...], d: DType) -> tuple[int, ...]:
    """Row-major strides of a shared-memory tile. 16-bit tiles of two or more axes whose rows are a multiple
    of 128 bytes get 16 bytes of padding per row, so that the eight rows an ldmatrix reads (and the rows a
    warp's vector accesses touch) fall in different banks."""
    pitch = shape[-1] if shape else 1
    if len(shape) >= 2 and d.itemsize == 2 and (shape[-1] * 2) % 128 == 0:
        pitch += 8
    strides = [1] * len(shape)
    for k in range(len(shape) - 2, -1, -1):
        strides[k] = (pitch if k == len(shape) - 2 else strides[k + 1] * shape[k + 1])
    return tuple(strides)


@dataclass
class Buffer:
    """A tile in shared memory: ``ptr`` names a C++ pointer; ``strides`` in elements (row-major, rows maybe
    padded: ``smem_strides``)."""

    ptr: str
    shape: tuple[int, ...]
    dtype: DType
    region: Region
    strides: tuple[int, ...]

    @property
    def contiguous(self) -> bool:
        return self.strides == tuple(math.prod(self.shape[k + 1:]) for k in range(len(self.shape)))

    def flat(self, idx: Sequence[str]) -> str:
        if isinstance(idx, _Coords) and idx.shape == self.shape and self.contiguous:
            return idx.flat
        return _lin(idx, self.strides)

    def at(self, idx: Sequence[str]) -> str:
        return f"{self.ptr}[{self.flat(idx)}]"


@dataclass
class Val:
    """A tile or scalar during codegen: ``at(coords)`` is the C++ expression (of C++ type ``ctype``) of the
    element at those coordinates. ``reads`` is the memory evaluating it reads; ``shifted`` the part of it
    read at coordinates other than the element's own (which an in-place update must not overwrite)."""

    shape: tuple[int, ...]
    dtype: DType
    ctype: str
    at: Callable[[Sequence[str]], str]
    reads: tuple[Region, ...] = ()
    shifted: tuple[Region, ...] = ()
    buf: Buffer | None = None

    @staticmethod
    def of_buffer(b: Buffer) -> "Val":
        return Val(b.shape, b.dtype, ctype(b.dtype), b.at, (b.region,), (), b)

    @staticmethod
    def scalar(expr: str, d: DType, reads: tuple[Region, ...] = ()) -> "Val":
        return Val((), d, ctype(d), lambda idx: expr, reads)


def _lin(idx: Sequence[str], strides: Sequence[int]) -> str:
    terms = []
    for i, s in zip(idx, strides):
        if i == "0" or s == 0:
            continue
        terms.append(i if s == 1 else f"{i} * {s}")
    return " + ".join(terms) if terms else "0"


def _unflatten(e: str, shape: Sequence[int]) -> list[str]:
    """C++ coordinates of flat row-major index ``e`` in ``shape``."""
    out = []
    for k, n in enumerate(shape):
        stride = math.prod(shape[k + 1:])
        if n == 1:
            out.append("0")
        elif k == 0:
            out.append(e if stride == 1 else f"({e} / {stride})")
        elif stride == 1:
            out.append(f"({e} % {n})")
        else:
            out.append(f"(({e} / {stride}) % {n})")
    return out


class _Coords(list):
    """The coordinates of flat row-major index ``flat`` over ``shape`` (a buffer of that shape reads
    ``buf[flat]``)."""

    def __init__(self, flat: str, shape: Sequence[int]):
        super().__init__(_unflatten(flat, shape))
        self.flat = flat
        self.shape = tuple(shape)


def _bcast(idx: Sequence[str], out: Sequence[int], shape: Sequence[int]) -> Sequence[str]:
    """Coordinates into an operand of ``shape`` broadcast (NumPy rules) to ``out``."""
    if tuple(shape) == tuple(out):
        return idx
    off = len(out) - len(shape)
    return ["0" if n == 1 else idx[off + k] for k, n in enumerate(shape)]


def _element_coords(o: Sequence[str], lead: int, idx: Sequence[str]) -> list[str]:
    """Global coordinates of a tile element: the offsets ``o`` of a tensor's dims, the tile's coordinates
    ``idx`` added to the last ``len(idx)`` of them (from ``lead`` on)."""
    return list(o[:lead]) + [f"({o[lead + k]} + {c})" if c != "0" else o[lead + k] for k, c in enumerate(idx)]


def _inb_mask(tensor: str, coords: Sequence[str]) -> str:
    """C++ test that ``coords`` lie inside the tensor ``tensor`` (its C name)."""
    return " && ".join(f"evt::inb({x}, {tensor}.shape[{a}])" for a, x in enumerate(coords)) or "true"


def _moves_leading_dims(load: N.Op, var: str) -> bool:
    """Whether the loop variable ``var`` enters any offset of ``load`` but the last (the tile then does not
    just walk along the tensor's last dimension)."""
    return any(isinstance(x, N.Var) and x.name == var for off in load.args[1:-1] for x in _expr_nodes(off))


def _affine_coef(e: N.Expr, var: str) -> int | None:
    """c such that integer expression e is c * var plus terms without var, or None when that is not evident
    from its form (sums, differences, negations, integer casts and products by constants)."""
    if not any(isinstance(x, N.Var) and x.name == var for x in _expr_nodes(e)):
        return 0
    if isinstance(e, N.Var):
        return 1
    if not isinstance(e, N.Op):
        return None
    if e.name in ("add", "sub") and len(e.args) == 2:
        a, b = (_affine_coef(x, var) for x in e.args)
        if a is None or b is None:
            return None
        return a + b if e.name == "add" else a - b
    if e.name == "neg":
        a = _affine_coef(e.args[0], var)
        return None if a is None else -a
    if e.name == "cast" and isinstance(e.type, ScalarType) and e.type.dtype.is_int:
        x = e.args[0]
        return _affine_coef(x, var) if isinstance(x.type, ScalarType) and x.type.dtype.is_int else None
    if e.name == "mul" and len(e.args) == 2:
        for c, x in (e.args, e.args[::-1]):
            if isinstance(c, N.Const) and isinstance(c.value, int) and not isinstance(c.value, bool):
                a = _affine_coef(x, var)
                return None if a is None else c.value * a
    return None


class Hazards:
    """Places ``__syncthreads()`` between CTA ops: before an op that reads what an earlier op wrote, or
    writes what an earlier op read or wrote, since the last barrier."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.reads: list[Region] = []
        self.writes: list[Region] = []

    def op(self, reads: Sequence[Region], writes: Sequence[Region]) -> None:
        conflict = any(r.overlaps(w) for r in reads for w in self.writes) or any(
            w.overlaps(o) for w in writes for o in (*self.reads, *self.writes))
        if conflict:
            self.barrier()
        self.reads.extend(reads)
        self.writes.extend(writes)

    def barrier(self) -> None:
        self.emit("__syncthreads();")
        self.reads, self.writes = [], []

    @property
    def dirty(self) -> bool:
        return bool(self.reads or self.writes)

    def state(self) -> tuple[list[Region], list[Region]]:
        return list(self.reads), list(self.writes)

    def restore(self, state: tuple[list[Region], list[Region]]) -> None:
        self.reads, self.writes = list(state[0]), list(state[1])


class SmemStack:
    """Stack allocation of shared memory within one task; ``peak`` is what the task needs."""

    def __init__(self):
        self.sp = 0
        self.peak = 0
        self.peak_loc: SourceLoc | None = None

    def alloc(self, nbytes: int, loc: SourceLoc | None) -> int:
        off = -(-self.sp // 16) * 16
        self.sp = off + nbytes
        if self.sp > self.peak:
            self.peak, self.peak_loc = self.sp, loc
        return off


# ---------------------------------------------------------------------------------------------
# IR walks


def _expr_nodes(e: N.Expr) -> Iterator[N.Expr]:
    yield e
    if isinstance(e, N.Op):
        for a in e.args:
            yield from _expr_nodes(a)


def _stmt_exprs(s: N.Stmt) -> list[N.Expr]:
    """The expressions a statement evaluates itself (not those of nested bodies)."""
    if isinstance(s, (N.Assign, N.Eval)):
        return [s.value]
    if isinstance(s, N.For):
        return [s.start, s.stop, s.step]
    return [s.cond]


def _walk_stmts(stmts: Sequence[N.Stmt]) -> Iterator[N.Stmt]:
    for s in stmts:
        yield s
        if isinstance(s, N.For):
            yield from _walk_stmts(s.body)
        elif isinstance(s, N.If):
            yield from _walk_stmts(s.then)
            yield from _walk_stmts(s.orelse)


def _var_names(e: N.Expr) -> set[str]:
    return {n.name for n in _expr_nodes(e) if isinstance(n, N.Var)}


def _stored_params(stmts: Sequence[N.Stmt]) -> set[str]:
    return {s.value.args[0].name for s in _walk_stmts(stmts)
            if isinstance(s, N.Eval) and s.value.name in ("store", "atomic_add")}


def _stage_bytes(loads: Sequence[N.Op]) -> int:
    """Shared memory of one pipeline stage holding a tile of each load."""
    total = 0
    for n in loads:
        shape, d = n.type.shape, n.type.dtype
        total += -(-shape[0] * smem_strides(shape, d)[0] * d.itemsize // 16) * 16
    return total


_PIPELINE_OFFSET_OPS = {"add", "sub", "mul", "floordiv", "mod", "maximum", "minimum", "neg", "cast"}


# ---------------------------------------------------------------------------------------------
# Source emission


class Emitter:
    """Lines of C++ with indentation; each line remembers the user's statement that produced it."""

    def __init__(self, debug: bool):
        self.items: list[tuple[str, SourceLoc | None]] = []
        self.depth = 0
        self.debug = debug
        self.locs: list[SourceLoc | None] = []

    def __call__(self, text: str) -> None:
        self.items.append(("  " * self.depth + text, self.locs[-1] if self.locs else None))

    def mark(self, loc: SourceLoc | None) -> None:
        """Start the code of a statement: a ``// file.py:LINE  source`` comment, and its lines map to loc
        until ``unmark``."""
        if loc is not None:
            src = linecache.getline(loc.file, loc.line).strip()
            self(f"// {os.path.basename(loc.file)}:{loc.line}  {src}")
        self.locs.append(loc if loc is not None else (self.locs[-1] if self.locs else None))

    def unmark(self) -> None:
        self.locs.pop()

    def open(self, text: str) -> None:
        self(text + " {")
        self.depth += 1

    def close(self, text: str = "}") -> None:
        self.depth -= 1
        self(text)

    def text(self, filename: str) -> tuple[str, dict[int, SourceLoc]]:
        """The source, and the user's location of each generated line (1-based). Debug builds put a
        ``#line`` directive before every line that comes from a user's statement, so that compiler
        messages and device-side line info name the Python file and line."""
        out: list[str] = []
        line_locs: dict[int, SourceLoc] = {}
        in_user = False
        for text, loc in self.items:
            if self.debug:
                if loc is not None:
                    out.append(f'#line {loc.line} "{_escape(loc.file)}"')
                    in_user = True
                elif in_user:
                    out.append(f'#line {len(out) + 2} "{filename}"')
                    in_user = False
            out.append(text)
            if loc is not None:
                line_locs[len(out)] = loc
        return "\n".join(out) + "\n", line_locs


def _escape(path: str) -> str:
    return path.replace("\\", "\\\\").replace('"', '\\"')


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass
class _TensorParam:
    name: str
    cname: str
    type: TensorType
    readonly: bool  # no task writes the tensors bound to it: non-coherent loads are safe
    group: str  # alias group: params that some launch binds to one megakernel tensor share it

    @property
    def region(self) -> Region | None:
        return None if self.readonly else Region("g", name=self.group)


@dataclass
class _CopyPlan:
    tensor: _TensorParam
    pid: str
    it: int
    ndim: int
    cols: int


class TaskGen:
    """Emits one ``__device__`` function for a TaskDef."""

    def __init__(self, kg: "KernelGen", task: N.TaskDef, readonly: set[str], groups: dict[str, str]):
        self.kg = kg
        self.task = task
        self.e = kg.emit
        self.nt = kg.num_threads
        self.smem = SmemStack()
        self.haz = Hazards(self.e)
        self.names = itertools.count()
        self.scopes: list[dict[str, Val]] = [{}]
        self.tensors: dict[str, _TensorParam] = {}
        self.pipelined: dict[int, Buffer] = {}
        # weights streamed into registers: id(load) -> (the load, its dot, the transposition buffer the dot
        # reads the staged pieces from)
        self.streamed: dict[int, tuple[N.Op, N.Op, str]] = {}
        # A operands of the current loop's streamed dots read from global memory: id(load) -> load, and the
        # loop-local names bound to them
        self.direct_a: dict[int, N.Op] = {}
        self.direct_names: dict[str, N.Op] = {}
        # inside the version of a streamed loop for which every tile lies in bounds (stream_fast_predicate):
        # streamed loads and GlobalA columns emit their vector path only
        self.stream_fast_only = False
        # in that version: id(load) -> (its cursor, the name of its tile's first column offset); stream_cursors
        self.cursors: dict[int, tuple[str, str]] = {}
        self.ahead = 1  # iterations ahead the current loop's streamed weights are loaded (stream_candidates)
        # id(dot) -> (fragments, acc buffer, NJ, KS, the job-layout template argument: ", true" for RBI)
        self.reg_accs: dict[int, tuple[str, Buffer, int, int, str]] = {}
        self.written = _stored_params(task.body)
        self.written_groups = {groups[p] for p in self.written}
        self.cur_loc: SourceLoc | None = task.loc
        for p in task.params:
            if isinstance(p.type, TensorType):
                self.tensors[p.name] = _TensorParam(p.name, f"v_{p.name}", p.type, p.name in readonly,
                                                    groups[p.name])
            else:
                self.scopes[0][p.name] = Val.scalar(f"v_{p.name}", p.type.dtype)
        for c in (*task.coords, *task.dims):
            self.scopes[0][c] = Val.scalar(f"v_{c}", dt.i32)

    def fresh(self, base: str) -> str:
        return f"evt_{base}{next(self.names)}"

    # -- signature and body ----------------------------------------------------------------------
    def signature_params(self) -> list[str]:
        out = ["char* __restrict__ evt_smem", "const int evt_inst", "int* evt_ctl"]
        out += [f"int v_{c}" for c in self.task.coords]
        for p in self.task.params:
            if isinstance(p.type, TensorType):
                out.append(f"evt::Tensor<{ctype(p.type.dtype)}, {p.type.ndim}> v_{p.name}")
            else:
                out.append(f"{ctype(p.type.dtype)} v_{p.name}")
        out += [f"int v_{d}" for d in self.task.dims]
        return out

    def generate(self) -> int:
        """Emit the function; returns its peak shared memory in bytes."""
        t = self.task
        self.e.mark(t.loc)
        self.e.unmark()
        qual = "__forceinline__" if self.kg.inline_tasks else "__noinline__"
        self.e(f"__device__ {qual} void evt_task_{sanitize(t.name)}(")
        params = self.signature_params()
        for k, p in enumerate(params):
            self.e(f"    {p}{',' if k + 1 < len(params) else ') {'}")
        self.e.depth += 1
        self.block(t.body)
        self.e.depth -= 1
        self.e("}")
        self.e("")
        return self.smem.peak

    # -- prefetch while waiting --------------------------------------------------------------------
    def prefetch_plan(self) -> tuple[list[N.Assign], N.For, list[N.Op]] | None:
        """What the task can bring into L2 before its events fire: the scalar statements before its first
        loop (none may read a tensor some task writes), that loop, and the loop's pipelined loads of read-only
        tensors (weights) whose offsets depend on the loop variable in the last dimension alone. None when the
        body does anything else (a store, a branch) before that loop, or the loop has no such load."""
        pre: list[N.Assign] = []
        for s in self.task.body:
            if isinstance(s, N.Assign) and isinstance(s.value.type, ScalarType):
                for n in _expr_nodes(s.value):
                    if isinstance(n, N.Var) and not isinstance(n.type, ScalarType):
                        return None
                    if isinstance(n, N.Op) and n.name == "load_scalar" and not self.tensors[n.args[0].name].readonly:
                        return None
                pre.append(s)
            elif isinstance(s, N.Assign) and isinstance(s.value, N.Op) and s.value.name in ("zeros", "full") \
                    and all(isinstance(a, N.Const) for a in s.value.args):
                continue  # a tile initialised from constants touches no memory
            elif isinstance(s, N.For):
                loads = [n for n in self.pipeline_candidates(s) if self.tensors[n.args[0].name].readonly
                         and not _moves_leading_dims(n, s.var)]
                return (pre, s, loads) if loads else None
            else:
                return None
        return None

    def generate_prefetch(self) -> bool:
        """Emit ``bool evt_prefetch_<task>(..., int evt_part)``: part ``evt_part`` of the read-only tiles of the
        task's first loop, brought into L2 (rows split among the threads, one bulk prefetch per row); returns
        whether parts remain. Each part covers about ``evt::PREFETCH_PART_BYTES`` in loop order, so the first
        parts are what the pipeline reads first. False (nothing emitted) when the task has nothing to prefetch."""
        plan = self.prefetch_plan()
        if plan is None:
            return False
        pre, loop, loads = plan
        self.e(f"__device__ __noinline__ bool evt_prefetch_{sanitize(self.task.name)}(")
        params = [*self.signature_params(), "const int evt_part"]
        for k, q in enumerate(params):
            self.e(f"    {q}{',' if k + 1 < len(params) else ') {'}")
        self.e.depth += 1
        self.scopes.append({})
        for st in pre:
            self.cur_loc = st.loc
            self.e.mark(st.loc)
            self.assign(st)
            self.e.unmark()
        self.e.mark(loop.loc)
        lo, hi = self.val(loop.start), self.val(loop.stop)
        assert isinstance(loop.step, N.Const), "loop steps are static"
        step = int(loop.step.value)
        self.e(f"const int evt_lo = {conv(lo.at([]), lo.ctype, 'int')};")
        self.e(f"const int evt_hi = {conv(hi.at([]), hi.ctype, 'int')};")
        self.e(f"if (!(evt_lo {'<' if step > 0 else '>'} evt_hi)) return false;")
        # the loop variable's last value
        span = "evt_hi - evt_lo - 1" if step > 0 else "evt_hi - evt_lo + 1"
        self.e(f"const int evt_end = evt_lo + (({span}) / {step}) * {step};")
        self.e("bool evt_more = false;")
        for n in loads:
            t = self.tensors[n.args[0].name]
            shape, d = n.type.shape, n.type.dtype
            nd, rows = t.type.ndim, shape[:-1]
            lead, last = nd - len(shape), nd - 1
            ts, tst = f"{t.cname}.shape", f"{t.cname}.stride"
            nrows = math.prod(rows)
            vec = 16 // d.itemsize
            self.e.open("")
            self.e(f"// `{t.name}`: {'x'.join(map(str, shape))} tile, columns swept by the loop")
            self.scopes.append({loop.var: Val.scalar("evt_lo", dt.i32)})
            o = self.offsets(t, n.args[1:])
            self.scopes[-1] = {loop.var: Val.scalar("evt_end", dt.i32)}
            (o_end,) = self.offsets(t, n.args[-1:])
            self.scopes.pop()
            self.e(f"const long long evt_c0 = evt::maximum(0LL, evt::minimum({o[last]}, {o_end}));")
            self.e(f"const long long evt_c1 = evt::minimum(static_cast<long long>({ts}[{last}]), "
                   f"evt::maximum({o[last]}, {o_end}) + {shape[-1]}LL);")
            self.e(f"constexpr long long evt_wp = evt::PREFETCH_PART_BYTES / {len(loads)} / {nrows * d.itemsize} "
                   f"/ {vec} * {vec};")
            self.e(f"constexpr long long evt_w = evt_wp > {vec} ? evt_wp : {vec};")
            self.e("const long long evt_a = evt_c0 + evt_part * evt_w;")
            self.e.open(f"if ({tst}[{last}] == 1 && evt_a < evt_c1)")
            self.e("const long long evt_b = evt::minimum(evt_c1, evt_a + evt_w);")
            self.e("evt_more = evt_more || evt_b < evt_c1;")
            self.e.open(f"for (int evt_r = threadIdx.x; evt_r < {nrows}; evt_r += {self.nt})")
            rc = _unflatten("evt_r", rows) if rows else []
            g = _element_coords(o, lead, rc)
            ok = _inb_mask(t.cname, g)
            addr = " + ".join([f"{x} * {tst}[{a}]" for a, x in enumerate(g)] + ["evt_a"])
            self.e(f"if ({ok}) evt::prefetch_l2({t.cname}.ptr + {addr}, (evt_b - evt_a) * {d.itemsize});")
            self.e.close()
            self.e.close()
            self.e.close()
        self.e.unmark()
        self.e("return evt_more;")
        self.scopes.pop()
        self.e.depth -= 1
        self.e("}")
        self.e("")
        return True

    # -- scopes ----------------------------------------------------------------------------------
    def lookup(self, name: str) -> Val | None:
        for s in reversed(self.scopes):
            if name in s:
                return s[name]
        return None

    def block(self, stmts: Sequence[N.Stmt], initial: dict[str, Val] | None = None) -> None:
        sp = self.smem.sp
        self.scopes.append(dict(initial or {}))
        for s in stmts:
            self.stmt(s)
        self.scopes.pop()
        self.smem.sp = sp

    def alloc(self, shape: tuple[int, ...], d: DType, base: str = "t") -> Buffer:
        strides = smem_strides(shape, d)
        nbytes = (shape[0] * strides[0] if shape else 1) * d.itemsize
        off = self.smem.alloc(nbytes, self.cur_loc)
        name = self.fresh(base)
        self.e(f"{ctype(d)}* {name} = reinterpret_cast<{ctype(d)}*>(evt_smem + {off});")
        return Buffer(name, shape, d, Region("s", off, off + nbytes), strides)

    # -- statements ------------------------------------------------------------------------------
    def stmt(self, s: N.Stmt) -> None:
        self.cur_loc = s.loc
        self.e.mark(s.loc)
        if isinstance(s, N.Assign):
            self.assign(s)
        elif isinstance(s, N.Eval):
            sp = self.smem.sp
            self.effect(s.value)
            self.smem.sp = sp
        elif isinstance(s, N.For):
            self.loop(s)
        elif isinstance(s, N.If):
            self.branch(s)
        else:
            raise TypeError(f"unknown statement {type(s).__name__}")
        self.e.unmark()

    def assign(self, s: N.Assign) -> None:
        name, value = s.target, s.value
        cur = self.lookup(name)
        if isinstance(value.type, ScalarType):
            sp = self.smem.sp
            v = self.val(value)
            self.haz.op(v.reads, ())
            c = ctype(value.type.dtype)
            if cur is None:
                cname = f"v_{name}"
                self.e(f"{c} {cname} = {conv(v.at([]), v.ctype, c)};")
                self.scopes[-1][name] = Val.scalar(cname, value.type.dtype)
            else:
                self.e(f"{cur.at([])} = {conv(v.at([]), v.ctype, c)};")
            self.smem.sp = sp
            return
        assert isinstance(value.type, TileType)
        if isinstance(value, N.Op) and id(value) in self.streamed:
            return  # a streamed weight tile lives in registers; its only use, the dot, reads them
        if isinstance(value, N.Op) and id(value) in self.direct_a:
            self.scopes[-1][name] = Val.scalar("0", dt.i32)  # never read: the streamed dots read it from global
            self.direct_names[name] = value
            return
        if cur is None:
            if isinstance(value, N.Op) and value.name == "load" and id(value) in self.pipelined:
                # a loop-local name for a pipelined load is the current stage itself
                self.scopes[-1][name] = Val.of_buffer(self.pipelined[id(value)])
                return
            buf = self.alloc(value.type.shape, value.type.dtype, f"v_{sanitize(name)}_")
            self.scopes[-1][name] = Val.of_buffer(buf)
        else:
            assert cur.buf is not None
            buf = cur.buf
        sp = self.smem.sp
        self.assign_tile(buf, name, value)
        self.smem.sp = sp

    def assign_tile(self, buf: Buffer, name: str, value: N.Expr) -> None:
        acc = self._accumulating_dot(name, value)
        if acc is not None and id(acc) in self.reg_accs and self.reg_accs[id(acc)][1] is buf:
            self.dot_into_registers(acc)
            return
        if acc is not None:
            self.dot(buf, acc.args[0], acc.args[1], accumulate=True)
            return
        if isinstance(value, N.Op) and value.name in ("load", "dot", "sum", "max", "min") \
                and id(value) not in self.pipelined:
            if name not in _var_names(value):
                self.materialize(value, buf)
            else:
                self.copy(buf, Val.of_buffer(self.materialize(value)))
            return
        v = self.val(value)
        if v.buf is buf:
            return
        if any(buf.region.overlaps(r) for r in v.shifted):
            v = Val.of_buffer(self.materialize_val(v))
        self.copy(buf, v)

    def _accumulating_dot(self, name: str, value: N.Expr) -> N.Op | None:
        """``acc = acc + dot(a, b)`` (either order) with a float32 ``acc`` of the dot's shape."""
        if not (isinstance(value, N.Op) and value.name == "add" and value.type.dtype == dt.f32):
            return None
        for x, y in (value.args, value.args[::-1]):
            if isinstance(x, N.Var) and x.name == name and isinstance(y, N.Op) and y.name == "dot" \
                    and y.type == x.type == value.type and not any(name in _var_names(a) for a in y.args):
                return y
        return None

    def effect(self, op: N.Op) -> None:
        t = self.tensors[op.args[0].name]
        offs = op.args[1:-1]
        v = self.val(op.args[-1])
        if t.region is not None and any(t.region.overlaps(r) for r in v.reads):
            v = Val.of_buffer(self.materialize_val(v))
        self.haz.op(v.reads, (Region("g", name=t.group),))
        nd = t.type.ndim
        lead = nd - len(v.shape)
        self.e.open("")
        o = self.offsets(t, offs)
        store_t = ctype(t.type.dtype)
        if op.name == "atomic_add":
            acc_t = "float" if t.type.dtype.is_float else store_t

            def write(addr: str, x: str, xt: str) -> str:
                return f"evt::atomic_add({t.cname}.ptr + {addr}, {conv(x, xt, acc_t)});"
        else:
            def write(addr: str, x: str, xt: str) -> str:
                return f"{t.cname}.ptr[{addr}] = {conv(x, xt, store_t)};"

        def body(idx: Sequence[str]) -> None:
            g = _element_coords(o, lead, idx)
            addr = " + ".join(f"{x} * {t.cname}.stride[{a}]" for a, x in enumerate(g))
            self.e(f"if ({_inb_mask(t.cname, g)}) {write(addr, v.at(idx), v.ctype)}")

        if v.shape:
            self.element_loop(v.shape, body)
        else:
            self.e.open("if (threadIdx.x == 0)")
            body([])
            self.e.close()
        self.e.close()

    def loop(self, s: N.For) -> None:
        lo, hi = self.val(s.start), self.val(s.stop)
        self.haz.op((*lo.reads, *hi.reads), ())
        step = s.step
        assert isinstance(step, N.Const), "loop steps are static"
        st = int(step.value)
        cmp = "<" if st > 0 else ">"
        self.e.open("")
        lo_n, hi_n = self.fresh("lo"), self.fresh("hi")
        self.e(f"const int {lo_n} = {conv(lo.at([]), lo.ctype, 'int')};")
        self.e(f"const int {hi_n} = {conv(hi.at([]), hi.ctype, 'int')};")
        if self.haz.dirty:
            self.haz.barrier()
        k = f"v_{s.var}"
        accs = self.register_accumulators(s)
        loads = self.pipeline_candidates(s)
        streams = self.stream_candidates(s, accs, loads)
        ring = [n for n in loads if id(n) not in streams and id(n) not in self.direct_a]
        if ring and 2 * _stage_bytes(ring) > _PIPELINE_BYTES:
            ring = []  # too large for a ring: loaded in place, each iteration
        self.open_register_accumulators(accs, streams)
        if ring or streams:
            self.pipelined_loop(s, k, lo_n, hi_n, st, cmp, ring, streams)
        else:
            self.e.open(f"for (int {k} = {lo_n}; {k} {cmp} {hi_n}; {k} += {st})")
            self.block(s.body, {s.var: Val.scalar(k, dt.i32)})
            if self.haz.dirty:
                self.haz.barrier()
            self.e.close()
        self.close_register_accumulators(accs)
        self.direct_a.clear()
        self.direct_names.clear()
        self.e.close()

    def branch(self, s: N.If) -> None:
        c = self.val(s.cond)
        self.haz.op(c.reads, ())
        self.e.open(f"if ({conv(c.at([]), c.ctype, 'bool')})")
        before = self.haz.state()
        self.block(s.then)
        after_then = self.haz.state()
        self.haz.restore(before)
        if s.orelse:
            self.e.close("} else {")
            self.e.depth += 1
            self.block(s.orelse)
        self.e.close()
        reads, writes = self.haz.state()
        self.haz.restore((reads + after_then[0], writes + after_then[1]))

    # -- software pipelining ---------------------------------------------------------------------
    def pipeline_candidates(self, s: N.For) -> list[N.Op]:
        """Loads of an innermost loop whose offsets the loop variable and invariant scalars determine."""
        if any(isinstance(b, (N.For,)) for b in _walk_stmts(s.body)):
            return []
        assigned = {b.target for b in _walk_stmts(s.body) if isinstance(b, N.Assign)}
        found: list[N.Op] = []
        for b in s.body:
            for x in _stmt_exprs(b):
                for n in _expr_nodes(x):
                    if isinstance(n, N.Op) and n.name == "load" and self._pipelinable(n, assigned):
                        found.append(n)
        return found

    def _pipelinable(self, n: N.Op, assigned: set[str]) -> bool:
        t = self.tensors[n.args[0].name]
        if t.group in self.written_groups:
            return False
        if (n.type.shape[-1] * n.type.dtype.itemsize) % 16:
            return False
        for off in n.args[1:]:
            for x in _expr_nodes(off):
                if isinstance(x, N.Var) and (x.name in assigned or not isinstance(x.type, ScalarType)):
                    return False
                if isinstance(x, N.Op) and x.name not in _PIPELINE_OFFSET_OPS:
                    return False
        return True

    def pipelined_loop(self, s: N.For, k: str, lo: str, hi: str, st: int, cmp: str, loads: list[N.Op],
                       streams: dict[int, tuple[N.Op, N.Op]] | None = None) -> None:
        """Iteration k waits for its stage, passes one barrier (its stage has landed for every thread, and
        every thread is done with the stage iteration k - 1 read), issues the copies of iteration
        k + S - 1 into that freed stage, then runs the body: S - 1 stages stay in flight during the body.
        Weights streamed into registers (``streams``) are loaded an iteration ahead, before the body."""
        streams = streams or {}
        if not loads:
            self.register_stream_loop(s, k, lo, hi, st, cmp, streams)
            return
        stage_bytes = _stage_bytes(loads)
        S = max(2, min(_MAX_STAGES, _PIPELINE_BYTES // stage_bytes, 1 + -(-_INFLIGHT_BYTES // stage_bytes)))
        sp = self.smem.sp
        rings = []
        for n in loads:
            ring = self.alloc((S, *n.type.shape), n.type.dtype, "ring")
            rings.append((n, ring, ring.strides[0]))
        self.e(f"// cp.async pipeline: {len(loads)} load(s), {S} stages")

        plans = {id(n): self.copy_plan(n, s.var, ring, S) for n, ring, _ in rings}

        def issue(kk: str, stage: str) -> None:
            self.scopes.append({s.var: Val.scalar(kk, dt.i32)})
            for n, ring, size in rings:
                stage_buf = Buffer(f"({ring.ptr} + {stage} * {size})", n.type.shape, n.type.dtype, ring.region,
                                   ring.strides[1:])
                plan = plans[id(n)]
                if plan is None:
                    self.load_tile(stage_buf, n, asynchronous=True)
                else:
                    self.planned_copy(plan, stage_buf, n)
            self.scopes.pop()

        self.e.open(f"for (int evt_s = 0; evt_s < {S - 1}; ++evt_s)")
        self.e(f"const int evt_kk = {lo} + evt_s * {st};")
        self.e.open(f"if (evt_kk {cmp} {hi})")
        issue("evt_kk", "evt_s")
        self.e.close()
        self.e("evt::cp_async_commit();")
        self.e.close()
        bufs = self.stream_prologue(s, lo, cmp, hi, st, streams)
        self.e("int evt_stage = 0;")

        def iteration(kk: str, half: int) -> None:
            self.e(f"evt::cp_async_wait<{S - 2}>();")
            self.haz.barrier()
            self.e.open("")
            self.e(f"const int evt_kk = {kk} + {(S - 1) * st};")
            self.e(f"const int evt_ws = evt_stage == 0 ? {S - 1} : evt_stage - 1;")
            self.e.open(f"if (evt_kk {cmp} {hi})")
            issue("evt_kk", "evt_ws")
            self.e.close()
            self.e("evt::cp_async_commit();")
            self.e.close()
            for n, ring, size in rings:
                cur = self.fresh("stage")
                self.e(f"{ctype(n.type.dtype)}* {cur} = {ring.ptr} + evt_stage * {size};")
                self.pipelined[id(n)] = Buffer(cur, n.type.shape, n.type.dtype, ring.region, ring.strides[1:])
            self.stream_ahead(s, kk, st, cmp, hi, bufs, half)
            self.block(s.body, {s.var: Val.scalar(kk, dt.i32)})
            self.e(f"evt_stage = evt_stage == {S - 1} ? 0 : evt_stage + 1;")

        self.stream_loop(k, lo, hi, st, cmp, bool(bufs), iteration)
        # the next iteration's barrier orders this body before the next one and before the copies that
        # overwrite its stage; what the body did stays pending for the code after the loop
        body_state = self.haz.state()
        self.e("evt::cp_async_wait<0>();")
        self.haz.restore(body_state)
        self.haz.op(tuple(ring.region for _, ring, _ in rings), ())
        for n in loads:
            del self.pipelined[id(n)]
        for w in bufs:
            del self.streamed[w]
        self.smem.sp = sp

    def stream_loop(self, k: str, lo: str, hi: str, st: int, cmp: str, streaming: bool,
                    iteration: Callable[[str, int], None]) -> None:
        """The loop over k, its body emitted by ``iteration(k expression, phase)``. With weights streamed into
        registers it is unrolled by the number of register buffers, self.ahead: phase p stages buffer p for its
        dots and reloads it with the weights self.ahead iterations ahead, so no register copy waits for a load
        in flight."""
        n = self.ahead if streaming else 1
        self.e.open(f"for (int {k} = {lo}; {k} {cmp} {hi}; {k} += {n * st})")
        iteration(k, 0)
        for p in range(1, n):
            self.e(f"if (!({k} + {p * st} {cmp} {hi})) break;")
            self.e.open("")
            self.e(f"const int {k}_{p} = {k} + {p * st};")
            iteration(f"{k}_{p}", p)
        for p in range(1, n):
            self.e.close()
        self.e.close()

    # -- weights streamed into registers ------------------------------------------------------------
    # A streamed dot's warp jobs are column jobs (n-group, split-K slice), each for every 16-row block of M in
    # turn (evt::MmaJobs with RBI when M > 16): the weight pieces a column job loads serve all its row blocks.
    def _stream_nj(self, Nn: int, K: int) -> int:
        """n8 blocks per job of a streamed dot: two (16 rows of W per warp measured fastest,
        benchmarks/gemv_paths.py) where they divide the tile and still give every warp a column job, else one."""
        nw = self.nt // 32
        if (Nn // 8) % 2 == 0 and (Nn // 16) * self._stream_ks(Nn, K, 2) >= nw:
            return 2
        return 1

    def _stream_ks(self, Nn: int, K: int, nj: int) -> int:
        """Split-K of a streamed dot with ``nj`` n8 blocks per job: doubled while the column jobs still fit the
        warps, in whole 32-wide chunks."""
        nw, groups, ks = self.nt // 32, Nn // (8 * nj), 1
        while groups * ks * 2 <= nw and K % (32 * ks * 2) == 0:
            ks *= 2
        return ks

    def _stream_shape(self, d: N.Op) -> tuple[int, int, int, int, int, int]:
        """(M, N, K, NJ, KS, JPW) of a streamed dot."""
        (M, K), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
        nj = self._stream_nj(Nn, K)
        ks = self._stream_ks(Nn, K, nj)
        return M, Nn, K, nj, ks, (M // 16) * self._stream_cpw(Nn, nj, ks)

    def _stream_cpw(self, Nn: int, nj: int, ks: int) -> int:
        """Column jobs per warp of a streamed dot (evt::MmaJobs::CPW): register buffers and stages hold this many."""
        return -(-(Nn // (8 * nj)) * ks // (self.nt // 32))

    @staticmethod
    def _stream_operand(d: N.Op, names: dict[str, N.Op]) -> N.Op | None:
        """The load under ``trans`` in dot d's B operand: ``load(...).T`` or ``b.T`` with ``b = load(...)``."""
        b = d.args[1]
        if not (isinstance(b, N.Op) and b.name == "trans"):
            return None
        w = b.args[0]
        if isinstance(w, N.Var):
            w = names.get(w.name)
        return w if isinstance(w, N.Op) and w.name == "load" else None

    def stream_candidates(self, s: N.For, accs: list[tuple[str, Buffer, N.Op]], loads: list[N.Op]
                          ) -> dict[int, tuple[N.Op, N.Op]]:
        """The pipelined loads to stream into registers: id(load) -> (load, dot), the load being the B operand ``load(w).T`` of a
        register-resident accumulator over whole 16-row blocks, w a read-only 2-d tensor walked along its last
        dim, the tile used nowhere else, masked elements zero; at most _STREAM_REGS registers per thread in one
        register buffer. Sets self.ahead: iterations ahead, so that about _STREAM_TARGET_PIECES pieces per thread
        are in flight."""
        if not self.kg.stream or self.kg.arch < 80:
            return {}
        cand = {id(n): n for n in loads}
        uses: dict[int, int] = {}
        var_uses: dict[str, int] = {}
        for b in s.body:
            for x in _stmt_exprs(b):
                for node in _expr_nodes(x):
                    uses[id(node)] = uses.get(id(node), 0) + 1
                    if isinstance(node, N.Var):
                        var_uses[node.name] = var_uses.get(node.name, 0) + 1
        # loop-local names bound once, at the top level of the body, to a load, and read once in the whole task
        # (the one read being in the loop)
        assigns = [b for b in _walk_stmts(s.body) if isinstance(b, N.Assign)]
        task_uses: dict[str, int] = {}
        for b in _walk_stmts(self.task.body):
            for x in _stmt_exprs(b):
                for node in _expr_nodes(x):
                    if isinstance(node, N.Var):
                        task_uses[node.name] = task_uses.get(node.name, 0) + 1
        names = {b.target: b.value for b in s.body if isinstance(b, N.Assign) and isinstance(b.value, N.Op)
                 and b.value.name == "load" and sum(a.target == b.target for a in assigns) == 1
                 and var_uses.get(b.target, 0) == 1 and task_uses.get(b.target, 0) == 1
                 and self.lookup(b.target) is None}
        out: dict[int, tuple[N.Op, N.Op]] = {}
        regs = 0
        # the accumulators' floats per thread: each in the ring's job layout (register_accumulators' budget),
        # or in the streamed one once its dot streams
        floats = sum(self._mma_acc_floats(d) for _, _, d in accs)
        for _, _, d in accs:
            w = self._stream_operand(d, names)
            if w is None or id(w) not in cand or uses.get(id(w), 0) != 1 or uses.get(id(d.args[1]), 0) != 1:
                continue
            t = self.tensors[w.args[0].name]
            M, Nn, K, nj, ks, jpw = self._stream_shape(d)
            if (not t.readonly or t.type.ndim != 2 or M % 16 or K % 32
                    or w.attr("other", 0) != 0
                    or w.type.shape != (Nn, K) or _moves_leading_dims(w, s.var)):
                continue
            r = self._stream_cpw(Nn, nj, ks) * nj * (K // ks // 32) * 4  # one register buffer
            f = jpw * nj * 4 - self._mma_acc_floats(d)  # the accumulator's floats, streamed layout over ring's
            if regs + r > _STREAM_REGS or floats + f > _REG_ACC_FLOATS:
                continue
            regs += r
            floats += f
            out[id(w)] = (w, d)
        pieces = regs // 4
        # the targets hold for two CTAs per SM; a kernel bounded for one (min_blocks=1, up to 255 registers a
        # thread) has half the warps, so each keeps twice the pieces in flight, one iteration further ahead at most
        one_cta = self.kg.min_blocks <= 1
        target = _STREAM_TARGET_PIECES * (2 if one_cta else 1)
        most = _STREAM_MAX_AHEAD + (1 if one_cta else 0)
        self.ahead = _STREAM_AHEAD or max(1, min(most, target // max(pieces, 1)))
        self.direct_a = self._direct_a_operands(s, out, cand, uses, var_uses, task_uses, assigns)
        return out

    def _direct_a_operands(self, s: N.For, streams: dict[int, tuple[N.Op, N.Op]], cand: dict[int, N.Op],
                           uses: dict[int, int], var_uses: dict[str, int], task_uses: dict[str, int],
                           assigns: list[N.Assign]) -> dict[int, N.Op]:
        """The A operands of streamed dots that are read straight from global memory (GlobalA) instead of through
        a ring: id(load) -> load, for a pipelinable load of a 2-d tensor walked along its last dim (this task
        does not write it; one that other tasks write is read at L2),
        masked elements zero, used only as the A operand of streamed dots (inline, or bound once to a
        loop-local name read nowhere else in the task). With every load of a loop streamed or read this way,
        the loop has no ring and no CTA barrier."""
        dots = [d for _, d in streams.values()]
        bound = {b.target: b.value for b in s.body if isinstance(b, N.Assign) and isinstance(b.value, N.Op)
                 and b.value.name == "load" and sum(a.target == b.target for a in assigns) == 1
                 and self.lookup(b.target) is None}
        out: dict[int, N.Op] = {}
        for d in dots:
            a = d.args[0]
            if isinstance(a, N.Var):
                x = bound.get(a.name)
                n_as_a = sum(isinstance(e.args[0], N.Var) and e.args[0].name == a.name for e in dots)
                if x is None or var_uses.get(a.name, 0) != n_as_a or task_uses.get(a.name, 0) != n_as_a:
                    continue
            else:
                x = a
                if uses.get(id(x), 0) != 1:
                    continue
            if not (isinstance(x, N.Op) and x.name == "load" and id(x) in cand):
                continue
            t = self.tensors[x.args[0].name]
            if (t.type.ndim != 2 or x.attr("other", 0) != 0 or _moves_leading_dims(x, s.var)
                    or x.type.shape != d.args[0].type.shape):
                continue
            out[id(x)] = x
        return out

    def _stream_issue(self, w: N.Op, d: N.Op, regs: str) -> None:
        """Load the pieces of w's tile (at the loop variable in scope) this thread's jobs use into ``regs``."""
        t = self.tensors[w.args[0].name]
        M, Nn, K, nj, ks, jpw = self._stream_shape(d)
        self.e.open("")
        o_r, o_c = self.offsets(t, w.args[1:])
        ts, tst = f"{t.cname}.shape", f"{t.cname}.stride"
        shape = f"{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}, {jpw}"
        if self.stream_fast_only:
            cur, c0 = self.cursors[id(w)]
            self.e(f"{cur}.load({regs}, static_cast<int>({o_c} - {c0}));")
            self.e.close()
            return
        self.e(f"const long long evt_org = {o_r} * {tst}[0] + {o_c} * {tst}[1];")
        # in-bounds rows / columns of the tile, clamped to it
        self.e(f"const int evt_rlo = static_cast<int>(evt::clampll(-{o_r}, 0, {Nn})), "
               f"evt_rhi = static_cast<int>(evt::clampll({ts}[0] - {o_r}, 0, {Nn}));")
        self.e(f"const int evt_clo = static_cast<int>(evt::clampll(-{o_c}, 0, {K})), "
               f"evt_chi = static_cast<int>(evt::clampll({ts}[1] - {o_c}, 0, {K}));")
        self.e(f"const bool evt_fast = {tst}[1] == 1 && ({tst}[0] * {w.type.dtype.itemsize}) % 16 == 0 && "
               f"(evt_org & 7) == 0 && evt::aligned16({t.cname}.ptr);")
        self.e(f"if (evt_fast && evt_rlo == 0 && evt_rhi == {Nn} && evt_clo == 0 && evt_chi == {K}) "
               f"evt::stream_load_fast<{shape}>({regs}, {t.cname}.ptr, evt_org, {tst}[0]);")
        self.e(f"else evt::stream_load<{shape}>({regs}, {t.cname}.ptr, evt_org, {tst}[0], {tst}[1], evt_rlo, evt_rhi, "
               "evt_clo, evt_chi, evt_fast);")
        self.e.close()

    def _stream_stage_elems(self, d: N.Op) -> int:
        """Elements of one warp's transposition buffer for streamed dot d (CPW * StreamShape::WARP_ELEMS)."""
        M, Nn, K, nj, ks, jpw = self._stream_shape(d)
        return self._stream_cpw(Nn, nj, ks) * 8 * nj * (-(-(K // ks) * 2 // 128) * 128 + 64) // 2

    def _stream_decl(self, d: N.Op, name: str) -> None:
        M, Nn, K, nj, ks, jpw = self._stream_shape(d)
        self.e(f"uint4 {name}[{jpw}][{nj}][{K // ks // 32}];")

    def stream_prologue(self, s: N.For, lo: str, cmp: str, hi: str, st: int,
                        streams: dict[int, tuple[N.Op, N.Op]]) -> dict[int, tuple[str, ...]]:
        """Declare each streamed load's register buffers (self.ahead of them) and transposition buffer, and load
        the first self.ahead iterations' pieces into buffers 0, 1, ...; id(load) -> its buffers."""
        bufs: dict[int, tuple[str, ...]] = {}
        for wid, (w, d) in streams.items():
            names = tuple(self.fresh("wregs") for _ in range(self.ahead))
            t = self.tensors[w.args[0].name]
            M, Nn, K, nj, ks, jpw = self._stream_shape(d)
            # its own transposition buffer: every streamed dot of the body is staged before the body runs
            elems = self._stream_stage_elems(d)
            stage = self.alloc((elems * (self.nt // 32),), w.type.dtype, "wstage").ptr
            self.e(f"// `{t.name}` tile {'x'.join(map(str, w.type.shape))}: streamed into registers on consecutive "
                   f"bytes, {self.ahead} iteration(s) ahead, in {len(names)} register buffer(s); each iteration "
                   "first puts its pieces in fragment order through the warp's part of the transposition buffer, "
                   "then loads the pieces of iteration k + ahead into the registers they left")
            self.e(f"static_assert(evt::StreamShape<{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}>::J::CPW * "
                   f"evt::StreamShape<{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}>::WARP_ELEMS <= {elems}, "
                   "\"transposition buffer\");")
            self.e(f"static_assert(evt::StreamShape<{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}>::J::JPW == {jpw}, "
                   "\"jobs per warp\");")
            for b in names:
                self._stream_decl(d, b)
            for a in range(self.ahead):
                kk = f"({lo} + {a * st})" if a else lo
                self.e.open(f"if ({kk} {cmp} {hi})")
                self.scopes.append({s.var: Val.scalar(kk, dt.i32)})
                self._stream_issue(w, d, names[a])
                self.scopes.pop()
                self.e.close()
            bufs[wid] = names
            self.streamed[wid] = (w, d, f"reinterpret_cast<{ctype(w.type.dtype)}*>({stage})")
        return bufs

    def stream_ahead(self, s: N.For, k: str, st: int, cmp: str, hi: str, bufs: dict[int, tuple[str, ...]],
                     phase: int) -> None:
        """Iteration k (``phase`` of the loop unrolled by self.ahead): stage buffer ``phase`` (the pieces of
        iteration k) for the dot, then load the pieces of iteration k + self.ahead into it."""
        for wid, names in bufs.items():
            w, d, stage = self.streamed[wid]
            M, Nn, K, nj, ks, jpw = self._stream_shape(d)
            self.e(f"evt::stream_stage<{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}, {jpw}>({names[phase]}, {stage});")
            ahead = f"({k} + {self.ahead * st})"
            self.e.open(f"if ({ahead} {cmp} {hi})")
            self.scopes.append({s.var: Val.scalar(ahead, dt.i32)})
            self._stream_issue(w, d, names[phase])
            self.scopes.pop()
            self.e.close()

    def register_stream_loop(self, s: N.For, k: str, lo: str, hi: str, st: int, cmp: str,
                             streams: dict[int, tuple[N.Op, N.Op]]) -> None:
        """A loop whose only pipelined loads are streamed into registers: no shared-memory ring."""
        sp = self.smem.sp
        bufs = self.stream_prologue(s, lo, cmp, hi, st, streams)
        if self.haz.dirty:
            self.haz.barrier()  # here rather than in the first iteration: a body of streamed dots needs none

        def iteration(kk: str, half: int) -> None:
            self.stream_ahead(s, kk, st, cmp, hi, bufs, half)
            self.block(s.body, {s.var: Val.scalar(kk, dt.i32)})
            if self.haz.dirty:
                self.haz.barrier()

        fast = self.stream_fast_predicate(s, lo, hi, st, streams)
        if fast is None:
            self.stream_loop(k, lo, hi, st, cmp, True, iteration)
        else:
            # two versions of the loop: one with every tile in bounds (vector loads only, no masks: the
            # element-wise paths stay out of the hot loop and out of its register budget), one general
            state, streamed = self.haz.state(), dict(self.streamed)
            self.e.open(f"if ({fast})")
            self.stream_fast_only = True
            self.stream_cursors(s, lo, streams)
            self.stream_loop(k, lo, hi, st, cmp, True, iteration)
            self.stream_fast_only = False
            self.cursors.clear()
            self.e.close("} else {")
            self.e.depth += 1
            self.haz.restore(state)
            self.streamed.update(streamed)
            self.stream_loop(k, lo, hi, st, cmp, True, iteration)
            self.e.close()
        for w in bufs:
            del self.streamed[w]
        self.smem.sp = sp

    def stream_cursors(self, s: N.For, lo: str, streams: dict[int, tuple[N.Op, N.Op]]) -> None:
        """In the in-bounds version of a streamed loop: each streamed weight's and GlobalA operand's per-lane
        pointers at the first iteration (StreamCursor, GlobalACursor), so that an iteration only adds its k
        offset. Fills self.cursors: id(load) -> (cursor name, name of the tile's first column offset)."""
        self.scopes.append({s.var: Val.scalar(lo, dt.i32)})
        for w, d in streams.values():
            t = self.tensors[w.args[0].name]
            M, Nn, K, nj, ks, jpw = self._stream_shape(d)
            o_r, o_c = self.offsets(t, w.args[1:])
            cur = self.fresh("wcur")
            self.e(f"const evt::StreamCursor<{M}, {Nn}, {K}, {self.nt}, {nj}, {ks}, {jpw}, {ctype(t.type.dtype)}> "
                   f"{cur}({t.cname}.ptr, {o_r} * {t.cname}.stride[0] + {o_c}, {t.cname}.stride[0]);")
            self.cursors[id(w)] = (cur, o_c)
        for x in self.direct_a.values():
            t = self.tensors[x.args[0].name]
            M = x.type.shape[0]
            o_r, o_c = self.offsets(t, x.args[1:])
            cur = self.fresh("xcur")
            coherent = "false" if t.readonly else "true"
            self.e(f"const auto {cur} = evt::GlobalACursor<{ctype(t.type.dtype)}, {coherent}>::first({t.cname}.ptr, "
                   f"{o_r} * {t.cname}.stride[0] + {o_c}, {t.cname}.stride[0], "
                   f"static_cast<int>(evt::clampll(-{o_r}, 0, {M})), "
                   f"static_cast<int>(evt::clampll({t.cname}.shape[0] - {o_r}, 0, {M})));")
            self.cursors[id(x)] = (cur, o_c)
        self.scopes.pop()

    def stream_fast_predicate(self, s: N.For, lo: str, hi: str, st: int,
                              streams: dict[int, tuple[N.Op, N.Op]]) -> str | None:
        """A C++ condition, computed before the loop, that holds when every iteration's streamed weight tile
        lies in bounds with 16-byte aligned rows, and every column of the GlobalA operands' tiles is in bounds
        and aligned (their rows keep their mask: rows past M read as zero). Tile column offsets must be affine
        in the loop variable, so checking the first and the last iteration covers all; None where that is
        not evident (the loop then has one general version)."""
        if st <= 0 or not streams or not _STREAM_VERSIONED:
            return None
        tiles: list[tuple[N.Op, bool]] = [(w, True) for w, _ in streams.values()]
        tiles += [(x, False) for x in self.direct_a.values()]
        for x, _ in tiles:
            vec = 16 // x.type.dtype.itemsize
            coef = _affine_coef(x.args[-1], s.var)
            if coef is None or (coef * st) % vec:
                return None
        last = self.fresh("klast")
        self.e(f"const int {last} = {lo} + ({hi} - 1 - {lo}) / {st} * {st};  // the last iteration's k")
        conds = [f"{lo} < {hi}"]
        for x, rows in tiles:
            t = self.tensors[x.args[0].name]
            R, C = x.type.shape
            ts, tst = f"{t.cname}.shape", f"{t.cname}.stride"
            vec = 16 // x.type.dtype.itemsize
            conds.append(f"{tst}[1] == 1 && ({tst}[0] * {x.type.dtype.itemsize}) % 16 == 0 && "
                         f"evt::aligned16({t.cname}.ptr)")
            for kk in (lo, last):
                self.scopes.append({s.var: Val.scalar(kk, dt.i32)})
                o_r, o_c = self.offsets(t, x.args[1:])
                self.scopes.pop()
                conds.append(f"{o_c} >= 0 && {o_c} + {C} <= {ts}[1]")
                if kk == lo:
                    conds.append(f"{o_c} % {vec} == 0")
                    if rows:
                        conds.append(f"{o_r} >= 0 && {o_r} + {R} <= {ts}[0]")
        name = self.fresh("allfast")
        self.e(f"const bool {name} = " + " && ".join(f"({c})" for c in conds) + ";")
        return name

    def copy_plan(self, n: N.Op, var: str, ring: Buffer, S: int) -> "_CopyPlan | None":
        """Per-thread copy plan of a pipelined load whose offsets depend on the loop variable only in the last
        dimension (a weight tile walking along K): each thread's chunk offsets (relative to the tile origin,
        in global and shared memory) and which of its chunks lie in in-bounds rows are computed once, before
        the loop. Chunks of rows that are out of bounds (rows past M) are filled with ``other`` once, in every
        stage; a stage whose columns are in bounds and aligned then costs one cp.async per chunk and nothing
        else. Other stages (the last, partial one) take the general path, which writes the same values."""
        t = self.tensors[n.args[0].name]
        shape, d = n.type.shape, n.type.dtype
        vec = 16 // d.itemsize
        if shape[-1] % vec:
            return None
        offs = n.args[1:]
        if _moves_leading_dims(n, var):
            return None
        cv, rows = shape[-1] // vec, shape[:-1]
        nchunks = math.prod(rows) * cv
        it = -(-nchunks // self.nt)
        if it > _UNROLL_CHUNKS or it > 32:
            return None
        nd, lead, last = t.type.ndim, t.type.ndim - len(shape), t.type.ndim - 1
        tst = f"{t.cname}.stride"
        inv = self.offsets(t, offs[:-1])
        pid = self.fresh("plan")
        rel, dst, ok, real = f"{pid}_rel", f"{pid}_dst", f"{pid}_ok", f"{pid}_in"
        T = ctype(d)
        self.e(f"// copy plan of `{t.name}` ({'x'.join(map(str, shape))} tile, {it} chunk(s) per thread): offsets "
               f"hoisted out of the loop, out-of-bounds rows filled once")
        self.e(f"int {rel}[{it}];  // 32-bit: the fast path is taken only when the tile spans < 2^31 elements")
        self.e(f"int {dst}[{it}];")
        self.e(f"unsigned {ok} = 0u, {real} = 0u;")
        self.e(f"const long long {pid}_org = " + " + ".join(
            [f"{x} * {tst}[{a}]" for a, x in enumerate(inv)] or ["0"]) + ";")
        row_strides_ok = " && ".join(f"{tst}[{a}] >= 0 && ({tst}[{a}] * {d.itemsize}) % 16 == 0"
                                     for a in range(lead, last))
        span = " + ".join(f"{n - 1}LL * {tst}[{lead + k}]" for k, n in enumerate(rows) if n > 1) or "0LL"
        self.e(f"const bool {pid}_al = {tst}[{last}] == 1" + (f" && {row_strides_ok}" if row_strides_ok else "")
               + f" && {span} + {shape[-1]} < 2147483647LL;")
        self.e("#pragma unroll")
        self.e.open(f"for (int evt_i = 0; evt_i < {it}; ++evt_i)")
        self.e(f"const int evt_e = threadIdx.x + evt_i * {self.nt};")
        self.e(f"const int evt_cl = (evt_e % {cv}) * {vec};")
        rc = _unflatten(f"(evt_e / {cv})", rows) if rows else []
        self.e(f"{rel}[evt_i] = static_cast<int>(" + " + ".join(
            [f"(long long){c} * {tst}[{lead + k}]" for k, c in enumerate(rc)] + ["evt_cl"]) + ");")
        self.e(f"{dst}[evt_i] = {_lin([*rc, 'evt_cl'], ring.strides[1:])};")
        row_ok = _inb_mask(t.cname, _element_coords(inv, lead, rc))
        self.e.open(f"if (evt_e < {nchunks})")
        self.e(f"{real} |= 1u << evt_i;")
        self.e(f"if ({row_ok}) {ok} |= 1u << evt_i;")
        self.e.close()
        self.e.close()
        if nchunks % self.nt or rows:
            other = literal(n.attr("other", 0), d)
            self.haz.op((), (ring.region,))
            self.e("#pragma unroll")
            self.e.open(f"for (int evt_s = 0; evt_s < {S}; ++evt_s)")
            self.e("#pragma unroll")
            self.e.open(f"for (int evt_i = 0; evt_i < {it}; ++evt_i)")
            self.e(f"if ((({real} & ~{ok}) >> evt_i) & 1u) evt::st_shared_vec16({ring.ptr} + evt_s * "
                   f"{ring.strides[0]} + {dst}[evt_i], evt::splat16<{T}>({other}));")
            self.e.close()
            self.e.close()
        return _CopyPlan(t, pid, it, nd, shape[-1])

    def planned_copy(self, plan: "_CopyPlan", stage: Buffer, n: N.Op) -> None:
        t, pid = plan.tensor, plan.pid
        last = plan.ndim - 1
        self.e.open("")
        (o_last,) = self.offsets(t, n.args[-1:])
        T = ctype(n.type.dtype)
        self.e(f"const {T}* evt_pb = {t.cname}.ptr + {pid}_org + {o_last} * {t.cname}.stride[{last}];")
        self.e.open(f"if ({pid}_al && {o_last} >= 0 && {o_last} + {plan.cols} <= {t.cname}.shape[{last}] && "
                    f"evt::aligned16(evt_pb))")
        self.e("#pragma unroll")
        self.e.open(f"for (int evt_i = 0; evt_i < {plan.it}; ++evt_i)")
        self.e(f"if (({pid}_ok >> evt_i) & 1u) evt::cp_async16({stage.ptr} + {pid}_dst[evt_i], evt_pb + "
               f"{pid}_rel[evt_i]);")
        self.e.close()
        self.e.close("} else {")
        self.e.depth += 1
        self.load_tile(stage, n, asynchronous=True)
        self.e.close()
        self.e.close()

    # -- CTA-cooperative loops ---------------------------------------------------------------------
    def element_loop(self, shape: tuple[int, ...], body: Callable[[Sequence[str]], None]) -> None:
        n = math.prod(shape)
        self.e.open(f"for (int evt_e = threadIdx.x; evt_e < {n}; evt_e += {self.nt})")
        body(_Coords("evt_e", shape))
        self.e.close()

    def copy(self, dst: Buffer, v: Val) -> None:
        """dst = v (broadcast), converted to dst's dtype."""
        self.haz.op(v.reads, (dst.region,))
        c = ctype(dst.dtype)
        if not dst.shape:
            self.e(f"if (threadIdx.x == 0) {dst.at([])} = {conv(v.at([]), v.ctype, c)};")
            return
        self.element_loop(dst.shape, lambda idx: self.e(
            f"{dst.at(idx)} = {conv(v.at(_bcast(idx, dst.shape, v.shape)), v.ctype, c)};"))

    def materialize_val(self, v: Val) -> Buffer:
        buf = self.alloc(v.shape, v.dtype)
        self.copy(buf, v)
        return buf

    def materialize(self, e: N.Expr, dst: Buffer | None = None) -> Buffer:
        """The value of ``e`` in a shared-memory buffer (``dst`` when given)."""
        if isinstance(e, N.Op) and id(e) not in self.pipelined:
            if e.name == "load":
                dst = dst or self.alloc(e.type.shape, e.type.dtype)
                self.load_tile(dst, e, asynchronous=False)
                return dst
            if e.name == "dot":
                dst = dst or self.alloc(e.type.shape, dt.f32)
                self.dot(dst, e.args[0], e.args[1], accumulate=False)
                return dst
            if e.name in ("sum", "max", "min"):
                dst = dst or self.alloc(shape_of(e.type), e.type.dtype)
                self.reduce(dst, e)
                return dst
        v = self.val(e)
        if v.buf is not None and (dst is None or dst is v.buf):
            return v.buf
        dst = dst or self.alloc(v.shape, v.dtype)
        self.copy(dst, v)
        return dst

    # -- memory ops ------------------------------------------------------------------------------
    def offsets(self, t: _TensorParam, offs: Sequence[N.Expr]) -> list[str]:
        """Hoist a load's / store's element offsets into long long locals."""
        names = []
        for a, off in enumerate(offs):
            v = self.val(off)
            self.haz.op(v.reads, ())
            nm = self.fresh("o")
            self.e(f"const long long {nm} = {conv(v.at([]), v.ctype, 'long long')};")
            names.append(nm)
        return names

    def _ld(self, t: _TensorParam, addr: str) -> str:
        return f"evt::ld_ro({t.cname}.ptr + {addr})" if t.readonly else f"{t.cname}.ptr[{addr}]"

    def load_tile(self, dst: Buffer, op: N.Op, asynchronous: bool) -> None:
        """A masked tile load into ``dst``: 16-byte vectors where a chunk is in bounds, contiguous and
        aligned (cp.async when ``asynchronous``), element by element elsewhere."""
        t = self.tensors[op.args[0].name]
        shape = op.type.shape
        d = op.type.dtype
        T = ctype(d)
        other = literal(op.attr("other", 0), d)
        nd, r = t.type.ndim, len(shape)
        lead = nd - r
        if not asynchronous:
            self.haz.op(() if t.region is None else (t.region,), (dst.region,))
        self.e.open("")
        o = self.offsets(t, op.args[1:])
        vec = 16 // d.itemsize
        ts = f"{t.cname}.shape"
        tst = f"{t.cname}.stride"
        last = nd - 1
        if shape[-1] % vec == 0 and (shape[-1] * d.itemsize) % 16 == 0:
            cv = shape[-1] // vec
            rows = shape[:-1]
            self._chunk_loop(math.prod(rows) * cv)
            self.e(f"const int evt_cl = (evt_e % {cv}) * {vec};")
            rc = _unflatten(f"(evt_e / {cv})", rows) if rows else []
            g_rows = _element_coords(o, lead, rc)
            ok = _inb_mask(t.cname, g_rows)
            self.e(f"const bool evt_rows = {ok};")
            self.e(f"const long long evt_gl = {o[last]} + evt_cl;")
            self.e(f"{T}* evt_d = {dst.ptr} + {_lin([*rc, 'evt_cl'], dst.strides)};")
            src = " + ".join([f"{x} * {tst}[{a}]" for a, x in enumerate(g_rows)] + [f"evt_gl * {tst}[{last}]"])
            self.e(f"const {T}* evt_src = {t.cname}.ptr + {src};")
            self.e.open(f"if (evt_rows && evt_gl >= 0 && evt_gl + {vec} <= {ts}[{last}] && {tst}[{last}] == 1 "
                        f"&& evt::aligned16(evt_src))")
            if asynchronous:
                self.e("evt::cp_async16(evt_d, evt_src);")
            else:
                ld = "evt::ld_vec16_ro" if t.readonly else "evt::ld_vec16"
                self.e(f"evt::st_shared_vec16(evt_d, {ld}(evt_src));")
            # whole chunks of masked-out rows (a 1-row x in a 16-row tile): one vector store of `other`
            self.e.close("} else if (!evt_rows) {")
            self.e.depth += 1
            self.e(f"evt::st_shared_vec16(evt_d, evt::splat16<{T}>({other}));")
            self.e.close("} else {")
            self.e.depth += 1
            self.e("#pragma unroll")
            self.e.open(f"for (int evt_u = 0; evt_u < {vec}; ++evt_u)")
            u = f"evt_u * {tst}[{last}]"
            ld = f"evt::ld_ro(evt_src + {u})" if t.readonly else f"evt_src[{u}]"
            self.e(f"evt_d[evt_u] = evt::inb(evt_gl + evt_u, {ts}[{last}]) ? {ld} : {other};")
            self.e.close()
            self.e.close()
            self.e.close()
            self.e.close()
        else:
            v = self._fused_load(t, op, o)
            self.element_loop(shape, lambda idx: self.e(f"{dst.at(idx)} = {v(idx)};"))
        self.e.close()

    def _chunk_loop(self, n: int) -> None:
        """Open a CTA-cooperative loop of ``evt_e`` over ``n`` items: fully unrolled (a compile-time trip count,
        so that the compiler hoists the address math and issues every copy back to back) when each thread
        takes at most ``_UNROLL_CHUNKS`` items (more would cost registers). Closed with two ``close()`` calls."""
        it = -(-n // self.nt)
        if it > _UNROLL_CHUNKS:
            self.e.open(f"for (int evt_e = threadIdx.x; evt_e < {n}; evt_e += {self.nt})")
            self.e.open("")
            return
        self.e("#pragma unroll")
        self.e.open(f"for (int evt_i = 0; evt_i < {it}; ++evt_i)")
        self.e(f"const int evt_e = threadIdx.x + evt_i * {self.nt};")
        self.e.open("if (true)" if n % self.nt == 0 else f"if (evt_e < {n})")

    def _fused_load(self, t: _TensorParam, op: N.Op, o: list[str]) -> Callable[[Sequence[str]], str]:
        shape = op.type.shape
        lead = t.type.ndim - len(shape)
        other = literal(op.attr("other", 0), op.type.dtype)

        def at(idx: Sequence[str]) -> str:
            g = _element_coords(o, lead, idx)
            addr = " + ".join(f"{x} * {t.cname}.stride[{a}]" for a, x in enumerate(g))
            return f"(({_inb_mask(t.cname, g)}) ? {self._ld(t, addr)} : {other})"

        return at

    # -- dot -------------------------------------------------------------------------------------
    def dot_operand(self, e: N.Expr) -> tuple[Buffer, bool]:
        """A dot operand as a shared-memory buffer, and whether the operand is its transpose."""
        trans = False
        while isinstance(e, N.Op) and e.name == "trans":
            trans, e = not trans, e.args[0]
        if isinstance(e, N.Op) and e.name == "load" and id(e) not in self.pipelined:
            return self.materialize(e), trans
        v = self.val(e)
        if v.buf is None:
            v = Val.of_buffer(self.materialize_val(v))
        return v.buf, trans

    def _mma_nj(self, M: int, Nn: int) -> int:
        nw, n8 = self.nt // 32, Nn // 8
        return next((j for j in (4, 2) if n8 % j == 0 and (M // 16) * (n8 // j) >= nw), 1)

    def _mma_ks(self, M: int, Nn: int, K: int) -> int:
        """Warps per output block of a register-resident accumulator (split-K): doubled while the blocks
        still fit the warps and K splits into whole k16 steps."""
        nw, blocks, ks = self.nt // 32, (M // 16) * (Nn // (8 * self._mma_nj(M, Nn))), 1
        while blocks * ks * 2 <= nw and K % (16 * ks * 2) == 0:
            ks *= 2
        return ks

    def _mma_jpw(self, M: int, Nn: int, K: int) -> int:
        """Jobs per warp of a register-resident accumulator in the ring's job layout (evt::MmaJobs::JPW)."""
        return -(-((M // 16) * (Nn // (8 * self._mma_nj(M, Nn))) * self._mma_ks(M, Nn, K)) // (self.nt // 32))

    def _mma_acc_floats(self, d: N.Op) -> int:
        """Floats per thread of dot d's register-resident accumulator in the ring's job layout."""
        (M, K), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
        return self._mma_jpw(M, Nn, K) * self._mma_nj(M, Nn) * 4

    def _mma_by_type(self, a_t: DType, b_t: DType, M: int, K: int, Nn: int) -> bool:
        return (self.kg.arch >= 80 and a_t == b_t and a_t in (dt.bf16, dt.f16)
                and M % 16 == 0 and Nn % 8 == 0 and K % 16 == 0)

    def _mma_operands(self, a: Buffer, a_t: bool, b: Buffer, b_t: bool) -> tuple[bool, int, bool, int] | None:
        """(A_KC, A_LD, B_KC, B_LD) of dot_mma, or None when ldmatrix cannot read these buffers."""
        a_rs, a_cs = (a.strides[1], a.strides[0]) if a_t else a.strides  # A(m, k) = m * a_rs + k * a_cs
        b_rs, b_cs = (b.strides[1], b.strides[0]) if b_t else b.strides  # B(k, n) = k * b_rs + n * b_cs
        a_kc, a_ld = (True, a_rs) if a_cs == 1 else (False, a_cs)
        b_kc, b_ld = (True, b_cs) if b_rs == 1 else (False, b_rs)
        if (a_kc and a_cs != 1) or (not a_kc and a_rs != 1) or (b_kc and b_rs != 1) or (not b_kc and b_cs != 1):
            return None
        return (a_kc, a_ld, b_kc, b_ld) if a_ld % 8 == 0 and b_ld % 8 == 0 else None

    def dot(self, dst: Buffer, a_e: N.Expr, b_e: N.Expr, accumulate: bool) -> None:
        """dst (=|+=) a @ b with float32 accumulation."""
        (a, a_t), (b, b_t) = self.dot_operand(a_e), self.dot_operand(b_e)
        (M, K), (_, Nn) = a_e.type.shape, b_e.type.shape
        reads = (a.region, b.region, dst.region) if accumulate else (a.region, b.region)
        self.haz.op(reads, (dst.region,))
        a_rs, a_cs = (a.strides[1], a.strides[0]) if a_t else a.strides  # A(m, k) = m * a_rs + k * a_cs
        b_rs, b_cs = (b.strides[1], b.strides[0]) if b_t else b.strides  # B(k, n) = k * b_rs + n * b_cs
        ldc = dst.strides[0]
        acc = "true" if accumulate else "false"
        mma = self._mma_operands(a, a_t, b, b_t) if self._mma_by_type(a.dtype, b.dtype, M, K, Nn) else None
        if mma:
            a_kc, a_ld, b_kc, b_ld = mma
            T = ctype(a.dtype)
            self.e(f"evt::dot_mma<{M}, {Nn}, {K}, {self.nt}, {acc}, {ldc}, {T}, {str(a_kc).lower()}, {a_ld}, "
                   f"{str(b_kc).lower()}, {b_ld}, {self._mma_nj(M, Nn)}>({dst.ptr}, {a.ptr}, {b.ptr});")
        else:
            self.e(f"evt::dot_fma<{M}, {Nn}, {K}, {self.nt}, {acc}, {ldc}, {ctype(a.dtype)}, {a_rs}, {a_cs}, "
                   f"{ctype(b.dtype)}, {b_rs}, {b_cs}>({dst.ptr}, {a.ptr}, {b.ptr});")

    # -- register-resident accumulators --------------------------------------------------------------
    def register_accumulators(self, s: N.For) -> list[tuple[str, Buffer, N.Op]]:
        """The loop's ``acc = acc + dot(a, b)`` statements (top level of the body) whose float32 ``acc`` is a
        tile from outside the loop that nothing else in the loop reads or writes, and whose dot runs on
        tensor cores: such an ``acc`` stays in mma fragments (registers) for the whole loop."""
        found: list[tuple[str, Buffer, N.Op]] = []
        floats = 0
        for b in s.body:
            if not isinstance(b, N.Assign) or not isinstance(b.value.type, TileType):
                continue
            d = self._accumulating_dot(b.target, b.value)
            cur = self.lookup(b.target)
            if d is None or cur is None or cur.buf is None or any(b.target == f[0] for f in found):
                continue
            (M, K), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
            if not self._mma_by_type(d.args[0].type.dtype, d.args[1].type.dtype, M, K, Nn):
                continue
            if len(cur.buf.shape) != 2 or cur.buf.strides[1] != 1 or cur.buf.dtype != dt.f32:
                continue
            others = [x for o in _walk_stmts(s.body) if o is not b for x in _stmt_exprs(o)]
            if any(b.target in _var_names(x) for x in others) or any(
                    isinstance(o, N.Assign) and o.target == b.target and o is not b for o in _walk_stmts(s.body)):
                continue
            n = self._mma_acc_floats(d)
            if floats + n > _REG_ACC_FLOATS:
                continue
            floats += n
            found.append((b.target, cur.buf, d))
        return found

    def open_register_accumulators(self, accs: list[tuple[str, Buffer, N.Op]],
                                   streams: dict[int, tuple[N.Op, N.Op]] | None = None) -> None:
        streamed = {id(d) for _, d in (streams or {}).values()}
        for name, buf, d in accs:
            (M, K), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
            rbi = ""  # the job layout: the streamed one has each warp's column jobs for every row block
            if id(d) in streamed:
                _, _, _, nj, ks, jpw = self._stream_shape(d)
                rbi = ", true" if M > 16 else ""
            else:
                nj, ks, jpw = self._mma_nj(M, Nn), self._mma_ks(M, Nn, K), self._mma_jpw(M, Nn, K)
            frag = self.fresh("frag")
            self.haz.op((buf.region,), ())
            split = f", split-K over {ks} warps" if ks > 1 else ""
            self.e(f"float {frag}[{jpw}][{nj}][4];  // {name}, register-resident in this loop{split}")
            self.e(f"evt::frag_load<{M}, {Nn}, {self.nt}, {nj}, {buf.strides[0]}, {ks}{rbi}>({frag}, {buf.ptr});")
            self.reg_accs[id(d)] = (frag, buf, nj, ks, rbi)

    def close_register_accumulators(self, accs: list[tuple[str, Buffer, N.Op]]) -> None:
        for name, buf, d in accs:
            frag, _, nj, ks, rbi = self.reg_accs.pop(id(d))
            (M, _), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
            self.haz.op((), (buf.region,))
            self.e(f"evt::frag_store<{M}, {Nn}, {self.nt}, {nj}, {buf.strides[0]}, {ks}{rbi}>({frag}, {buf.ptr});")

    def dot_into_registers(self, d: N.Op) -> None:
        frag, _, nj, ks, _ = self.reg_accs[id(d)]
        stage = next((st for _, sd, st in self.streamed.values() if sd is d), None)
        if stage is not None:
            self.dot_streamed(d, frag, stage)
            return
        (a, a_t), (b, b_t) = self.dot_operand(d.args[0]), self.dot_operand(d.args[1])
        (M, K), (_, Nn) = d.args[0].type.shape, d.args[1].type.shape
        self.haz.op((a.region, b.region), ())
        mma = self._mma_operands(a, a_t, b, b_t)
        if mma is None:
            raise EvtError("internal error: a register-resident accumulator's dot cannot use tensor cores",
                           self.cur_loc)
        a_kc, a_ld, b_kc, b_ld = mma
        self.e(f"evt::dot_mma_regs<{M}, {Nn}, {K}, {self.nt}, {ctype(a.dtype)}, {str(a_kc).lower()}, {a_ld}, "
               f"{str(b_kc).lower()}, {b_ld}, {nj}, {ks}>({frag}, {a.ptr}, {b.ptr});")

    def dot_streamed(self, d: N.Op, frag: str, stage: str) -> None:
        """acc += a @ w^T with w's pieces staged (stream_stage, at the top of the iteration) in ``stage``; a is
        read from global memory (GlobalA) or from shared memory, k contiguous (copied into such a tile first
        when it is not)."""
        M, Nn, K, nj, ks, jpw = self._stream_shape(d)
        shape = f"{M}, {Nn}, {K}, {self.nt}, {ctype(d.args[0].type.dtype)}, {nj}, {ks}, {jpw}"
        x = d.args[0]
        x = self.direct_names.get(x.name) if isinstance(x, N.Var) else self.direct_a.get(id(x))
        if x is not None:
            t = self.tensors[x.args[0].name]
            ts, tst = f"{t.cname}.shape", f"{t.cname}.stride"
            o_r, o_c = self.offsets(t, x.args[1:])
            ga = self.fresh("xa")
            if self.stream_fast_only:
                cur, c0 = self.cursors[id(x)]
                self.e(f"const auto {ga} = {cur}.at(static_cast<int>({o_c} - {c0}));")
                self.e(f"evt::dot_mma_staged<{shape}>({frag}, {ga}, {stage});")
                return
            coherent = "false" if t.readonly else "true"
            self.e(f"const evt::GlobalA<{ctype(t.type.dtype)}, {coherent}> {ga}{{{t.cname}.ptr, {o_r} * {tst}[0] + {o_c} * {tst}[1], "
                   f"{tst}[0], {tst}[1], static_cast<int>(evt::clampll(-{o_r}, 0, {M})), "
                   f"static_cast<int>(evt::clampll({ts}[0] - {o_r}, 0, {M})), static_cast<int>(evt::clampll(-{o_c}, 0, {K})), "
                   f"static_cast<int>(evt::clampll({ts}[1] - {o_c}, 0, {K})), {tst}[1] == 1 && ({tst}[0] * "
                   f"{t.type.dtype.itemsize}) % 16 == 0 && (({o_r} * {tst}[0] + {o_c}) & 7) == 0 && "
                   f"evt::aligned16({t.cname}.ptr)}};")
            self.e(f"evt::dot_mma_staged<{shape}>({frag}, {ga}, {stage});")
            return
        a, a_t = self.dot_operand(d.args[0])
        a_rs, a_cs = (a.strides[1], a.strides[0]) if a_t else a.strides
        if a_cs != 1 or a_rs % 8:
            src = a
            v = Val((src.shape[1], src.shape[0]), src.dtype, ctype(src.dtype), lambda idx: src.at([idx[1], idx[0]]),
                    (src.region,), (), None) if a_t else Val.of_buffer(src)
            a = self.materialize_val(v)
            a_rs = a.strides[0]
        self.haz.op((a.region,), ())
        self.e(f"evt::dot_mma_staged<{shape}>({frag}, evt::SharedA<{ctype(a.dtype)}, {a_rs}>{{{a.ptr}}}, {stage});")

    # -- reductions ------------------------------------------------------------------------------
    def reduce(self, dst: Buffer, op: N.Op) -> None:
        x = self.val(op.args[0])
        shape = x.shape
        axis = op.attr("axis") % len(shape)
        L = shape[axis]
        rows = shape[:axis] + shape[axis + 1:]
        R = math.prod(rows)
        if op.name == "sum":
            acc_t = compute_ctype(op.type.dtype)
        else:
            acc_t = compute_ctype(x.dtype) if x.dtype not in (dt.bool_, dt.i8) else "int"
        red = {"sum": "OpSum", "max": "OpMax", "min": "OpMin"}[op.name]
        nw = self.nt // 32
        wpr = _pow2_floor(nw // R) if R < nw and L >= 64 else 1
        g = 32 if wpr > 1 else min(_pow2_floor(min(32, max(1, self.nt // R))), _pow2_ceil(L))
        scratch = self.alloc((R * wpr,), dt.i64 if acc_t in ("long long", "double") else dt.f32) if wpr > 1 else None
        writes = (dst.region,) + ((scratch.region,) if scratch else ())
        self.haz.op(x.reads, writes)
        sc = f"reinterpret_cast<{acc_t}*>({scratch.ptr})" if scratch else f"static_cast<{acc_t}*>(nullptr)"
        rc = _unflatten("evt_r", rows)
        xi = rc[:axis] + ["evt_k"] + rc[axis:]
        oc = _unflatten("evt_r", dst.shape)
        self.e(f"evt::reduce_rows<{R}, {L}, {self.nt}, {g}, {wpr}, evt::{red}<{acc_t}>, {acc_t}>({sc},")
        self.e(f"    [&](int evt_r, int evt_k) -> {acc_t} {{ return {conv(x.at(xi), x.ctype, acc_t)}; }},")
        self.e(f"    [&](int evt_r, {acc_t} evt_a) {{ {dst.at(oc)} = {conv('evt_a', acc_t, ctype(dst.dtype))}; }});")

    # -- expressions -----------------------------------------------------------------------------
    def val(self, e: N.Expr) -> Val:
        if isinstance(e, N.Const):
            return Val.scalar(literal(e.value, e.type.dtype), e.type.dtype)
        if isinstance(e, N.Var):
            v = self.lookup(e.name)
            if v is None:
                raise EvtError(f"{e.name} is not defined here", e.loc)
            return v
        assert isinstance(e, N.Op)
        name = e.name
        if name == "load":
            if id(e) in self.pipelined:
                return Val.of_buffer(self.pipelined[id(e)])
            t = self.tensors[e.args[0].name]
            o = self.offsets(t, e.args[1:])
            at = self._fused_load(t, e, o)
            reads = () if t.region is None else (t.region,)
            return Val(e.type.shape, e.type.dtype, ctype(e.type.dtype), at, reads, reads)
        if name == "load_scalar":
            return self.load_scalar(e)
        if name in ("dot", "sum", "max", "min"):
            return Val.of_buffer(self.materialize(e))
        if name == "zeros":
            z = literal(0, e.type.dtype)
            return Val(e.type.shape, e.type.dtype, ctype(e.type.dtype), lambda idx: z)
        if name == "full":
            v = self.val(e.args[0])
            x = conv(v.at([]), v.ctype, ctype(e.type.dtype))
            return Val(e.type.shape, e.type.dtype, ctype(e.type.dtype), lambda idx: x, v.reads)
        if name == "arange":
            return Val(e.type.shape, dt.i32, "int", lambda idx: idx[0])
        if name in ("trans", "expand_dims", "reshape", "broadcast_to"):
            return self.view(e, self.val(e.args[0]))
        return self.elementwise(e, [self.val(a) for a in e.args])

    def load_scalar(self, e: N.Op) -> Val:
        t = self.tensors[e.args[0].name]
        idx = []
        for off in e.args[1:]:
            v = self.val(off)
            self.haz.op(v.reads, ())
            idx.append(f"static_cast<long long>({v.at([])})")
        flat = " + ".join(f"{i} * {t.cname}.stride[{a}]" for a, i in enumerate(idx))
        if self.kg.debug:
            ok = " && ".join(f"evt::inb({i}, {t.cname}.shape[{a}])" for a, i in enumerate(idx))
            site = self.kg.index_site(e.loc, t.name)
            flat = f"evt::checked_index({ok}, {flat}, evt_ctl, evt_inst, {site})"
        reads = () if t.region is None else (t.region,)
        self.haz.op(reads, ())
        nm = self.fresh("s")
        self.e(f"const {ctype(e.type.dtype)} {nm} = {self._ld(t, flat)};")
        return Val.scalar(nm, e.type.dtype)

    def view(self, e: N.Op, v: Val) -> Val:
        shape = shape_of(e.type)
        moved = (*v.reads, *v.shifted)
        if e.name == "trans":
            return Val(shape, v.dtype, v.ctype, lambda idx: v.at([idx[1], idx[0]]), v.reads, moved)
        if e.name == "expand_dims":
            axis = e.attr("axis")
            return Val(shape, v.dtype, v.ctype, lambda idx: v.at(list(idx[:axis]) + list(idx[axis + 1:])),
                       v.reads, moved)
        if e.name == "broadcast_to":
            return Val(shape, v.dtype, v.ctype, lambda idx: v.at(_bcast(idx, shape, v.shape)), v.reads, moved)
        # reshape: same row-major order
        src = v.shape
        flat_strides = tuple(math.prod(shape[k + 1:]) for k in range(len(shape)))
        return Val(shape, v.dtype, v.ctype, lambda idx: v.at(_unflatten(f"({_lin(idx, flat_strides)})", src)),
                   v.reads, moved)

    def elementwise(self, e: N.Op, args: list[Val]) -> Val:
        out = shape_of(e.type)
        od = e.type.dtype
        reads = tuple(r for a in args for r in a.reads)
        shifted = tuple(r for a in args for r in (a.shifted if a.shape == out else (*a.reads, *a.shifted)))
        arg_dtypes = [a.type.dtype for a in e.args]

        def at(idx: Sequence[str]) -> str:
            xs = [(a.at(_bcast(idx, out, a.shape)), a.ctype) for a in args]
            return self.kg.formula(e.name, xs, arg_dtypes, od)

        return Val(out, od, ctype(od), at, reads, shifted)


# ---------------------------------------------------------------------------------------------
# The kernel


_MATH = set(ops.UNARY_MATH)
_FAST = {"exp", "sigmoid", "silu", "rsqrt"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
          "eq": "==", "ne": "!=", "and": "&&", "or": "||"}


@dataclass
class KernelSource:
    """Generated CUDA C++ of a program, and what the launch and error reports need to know about it."""

    name: str
    text: str
    filename: str
    smem_bytes: int
    num_threads: int
    line_locs: dict[int, SourceLoc] = field(default_factory=dict)
    index_sites: list[tuple[SourceLoc | None, str]] = field(default_factory=list)

    def loc_of_line(self, line: int) -> SourceLoc | None:
        """The user's statement that produced generated line ``line`` (1-based), if any."""
        return self.line_locs.get(line)


class KernelGen:
    def __init__(self, program: N.Program, arch: int, num_threads: int, min_blocks: int, debug: bool,
                 prefetch: bool = False, stream: bool = False, inline_tasks: bool = False):
        self.prefetch = prefetch
        self.inline_tasks = inline_tasks
        self.stream = stream
        self.program = program
        self.arch = arch
        self.num_threads = num_threads
        self.min_blocks = min_blocks
        self.debug = debug
        self.emit = Emitter(debug)
        self.sites: list[tuple[SourceLoc | None, str]] = []

    def index_site(self, loc: SourceLoc | None, tensor: str) -> int:
        self.sites.append((loc, tensor))
        return len(self.sites) - 1

    def formula(self, name: str, xs: list[tuple[str, str]], arg_dtypes: list[DType], od: DType) -> str:
        """C++ for one elementwise op on operand expressions ``xs`` ((expr, C++ type) pairs), rounded to
        ``od`` as semantics.elementwise does."""
        oc = ctype(od)
        if name in ops.BINARY_ARITH:
            c = compute_ctype(od)
            a, b = (conv(x, t, c) for x, t in xs)
            if name in _INFIX:
                r = f"({a} {_INFIX[name]} {b})"
            elif name in ("floordiv", "mod"):
                r = f"evt::{'floordiv' if name == 'floordiv' else 'pymod'}<{c}>({a}, {b})"
            elif name in ("maximum", "minimum"):
                r = f"evt::{name}<{c}>({a}, {b})"
            else:
                r = f"evt::fpow({a}, {b})" if od.is_float else f"evt::ipow<{c}>({a}, {b})"
            return f"static_cast<{oc}>({r})" if c == oc and od == dt.i8 else conv(r, c, oc)
        if name in ops.COMPARE:
            c = compute_ctype(dt.promote(*arg_dtypes))
            a, b = (conv(x, t, c) for x, t in xs)
            return f"({a} {_INFIX[name]} {b})"
        if name in ops.LOGICAL:
            return f"({xs[0][0]} {_INFIX[name]} {xs[1][0]})"
        if name == "not":
            return f"(!{xs[0][0]})"
        if name in _MATH:
            c = compute_ctype(od)
            x = conv(*xs[0], c)
            fn = f"evt::fast_{name}" if od in (dt.bf16, dt.f16) and name in _FAST else f"evt::{name}_"
            return conv(f"{fn}({x})", c, oc)
        if name in ops.UNARY_SAME:
            c = compute_ctype(od)
            x = conv(*xs[0], c)
            r = {"neg": f"(-{x})", "abs": f"evt::abs_({x})", "floor": f"evt::floor_({x})"}[name]
            return f"static_cast<{oc}>({r})" if c == oc and od == dt.i8 else conv(r, c, oc)
        if name == "where":
            c = compute_ctype(od)
            (cond, _), a, b = xs
            return conv(f"({cond} ? {conv(*a, c)} : {conv(*b, c)})", c, oc)
        if name == "cast":
            return conv(*xs[0], oc)
        raise EvtError(f"the CUDA backend has no code for op {name!r}")

    def intexpr(self, e: D.IntExpr) -> str:
        """A size expression of the program's dims and int parameters, on the device (long long)."""
        if isinstance(e, D.Const):
            return f"{e.value}LL" if e.value >= 0 else f"({e.value}LL)"
        if isinstance(e, D.Sym):
            return f"p.v_{e.name}"
        if isinstance(e, D.BinOp):
            a, b = self.intexpr(e.a), self.intexpr(e.b)
            if e.op in ("+", "-", "*"):
                return f"({a} {e.op} {b})"
            return f"evt::{'floordiv' if e.op == '//' else 'pymod'}<long long>({a}, {b})"
        if isinstance(e, D.Func):
            fn = {"cdiv": "cdiv", "min": "minimum", "max": "maximum"}[e.fn]
            return f"evt::{fn}<long long>({self.intexpr(e.a)}, {self.intexpr(e.b)})"
        if isinstance(e, D.Load):
            t = f"p.v_{e.tensor}"
            flat = " + ".join(f"{self.intexpr(i)} * {t}.stride[{a}]" for a, i in enumerate(e.index))
            return f"static_cast<long long>({t}.ptr[{flat}])"
        raise TypeError(f"unknown size expression {e!r}")

    def launch_args(self, L: N.Launch) -> list[str]:
        task = self.program.task(L.task)
        args = [f"c[{k}]" for k in range(len(task.coords))]
        for (name, arg), q in zip(L.args, task.params):
            if isinstance(q.type, TensorType):
                args.append(f"p.v_{arg}")
            elif isinstance(arg, str):
                args.append(conv(f"p.v_{arg}", "double" if not self.program.param(arg).type.dtype.is_int
                                 else "long long", ctype(q.type.dtype)))
            elif isinstance(arg, D.IntExpr):
                args.append(f"static_cast<{ctype(q.type.dtype)}>({self.intexpr(arg)})")
            else:
                args.append(literal(arg, q.type.dtype))
        dims = dict(L.dims)
        args += [f"static_cast<int>({self.intexpr(dims[d])})" for d in task.dims]
        return args

    def generate(self) -> KernelSource:
        p = self.program
        e = self.emit
        name = f"evt_{sanitize(p.name)}"
        filename = f"{name}.cu"
        e(f"// {name}: the persistent megakernel of `{p.name}`, generated by evtdsl.")
        for macro, value in sorted(_RUNTIME_DEFINES.items()):
            e(f"#define {macro} {int(value)}")
        e('#include "evt_sched.cuh"')
        e('#include "evt_tile.cuh"')
        e("")
        readonly, groups = self._tensor_facts()
        peaks: dict[str, int] = {}
        prefetching: set[str] = set()
        waited = {L.task for L in p.launches if L.waits} if self.prefetch else set()
        for t in p.tasks:
            gen = TaskGen(self, t, readonly[t.name], groups[t.name])
            peaks[t.name] = gen.generate()
            if t.name in waited and TaskGen(self, t, readonly[t.name], groups[t.name]).generate_prefetch():
                prefetching.add(t.name)
            limit = _SMEM_LIMIT.get(self.arch, 49152)
            if peaks[t.name] > limit:
                raise TileMemoryError(
                    f"task `{t.name}` needs {peaks[t.name]} bytes of shared memory for its tiles, more than the "
                    f"{limit} an sm_{self.arch} block can have; use smaller tiles", gen.smem.peak_loc or t.loc)
        fields = param_fields(p)
        nbytes = params_nbytes(fields)
        if nbytes > MAX_PARAM_BYTES:
            raise EvtError(f"megakernel {p.name} has {nbytes} bytes of tensor descriptors and sizes, more than "
                           f"the {MAX_PARAM_BYTES} a kernel parameter can hold", p.loc)
        e("struct Params {")
        for f in fields:
            if f.kind == "tensor":
                e(f"  evt::Tensor<{ctype(p.param(f.name).type.dtype)}, {f.ndim}> {f.cname};")
            else:
                e(f"  {'long long' if f.kind == 'int' else 'double'} {f.cname};")
        e("  evt::Sched sched;")
        e("};")
        e(f"static_assert(sizeof(Params) == {nbytes}, \"parameter layout\");")
        e(f"static_assert(sizeof(evt::Sched) == {SCHED_BYTES}, \"evt::Sched layout\");")
        e("")
        smem = max(peaks.values(), default=0)
        min_blocks = max(1, self.min_blocks)
        e(f'extern "C" __global__ void __launch_bounds__({self.num_threads}, {min_blocks}) '
          f"{name}(const __grid_constant__ Params p) {{")
        e("  char* evt_smem = evt::dynamic_smem();")
        maxc = max((len(t.coords) for t in p.tasks), default=0) or 1
        e(f"  evt::persistent_loop<{maxc}, {self.num_threads}>(p.sched, "
          "[&](int evt_inst, int evt_launch, const int* c) {")
        e("    switch (evt_launch) {")
        e.depth = 3
        for li, L in enumerate(p.launches):
            e.mark(L.loc)
            e(f"case {li}:")
            args = ", ".join(["evt_smem", "evt_inst", "p.sched.state", *self.launch_args(L)])
            e(f"  evt_task_{sanitize(L.task)}({args});")
            e("  break;")
            e.unmark()
        e.depth = 0
        e("    }")
        e("  }, [&](int evt_inst, int evt_launch, const int* c, int evt_part) -> bool {")
        e("    switch (evt_launch) {")
        e.depth = 3
        for li, L in enumerate(p.launches):
            if L.waits and L.task in prefetching:
                args = ", ".join(["evt_smem", "evt_inst", "p.sched.state", *self.launch_args(L), "evt_part"])
                e(f"case {li}:")
                e(f"  return evt_prefetch_{sanitize(L.task)}({args});")
        e.depth = 0
        e("      default:")
        e("        return false;")
        e("    }")
        e("  });")
        e("}")
        text, line_locs = e.text(filename)
        return KernelSource(name, text, filename, smem, self.num_threads, line_locs, self.sites)

    def _tensor_facts(self) -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
        """Per task: the tensor params no launch binds to a written tensor (read-only), and alias groups
        (params some launch binds to one megakernel tensor)."""
        p = self.program
        written = set(written_tensors(p))
        readonly: dict[str, set[str]] = {}
        groups: dict[str, dict[str, str]] = {}
        for t in p.tasks:
            tparams = [q.name for q in t.params if isinstance(q.type, TensorType)]
            launches = [L for L in p.launches if L.task == t.name]
            readonly[t.name] = {q for q in tparams if all(L.arg(q) not in written for L in launches)}
            parent = {q: q for q in tparams}

            def find(q: str) -> str:
                while parent[q] != q:
                    q = parent[q]
                return q

            for L in launches:
                by_tensor: dict[str, str] = {}
                for q in tparams:
                    arg = L.arg(q)
                    if arg in by_tensor:
                        a, b = sorted((find(q), find(by_tensor[arg])))
                        parent[b] = a
                    else:
                        by_tensor[arg] = q
            groups[t.name] = {q: find(q) for q in tparams}
        return readonly, groups


def arch_number(arch: str) -> int:
    """``"sm_90a"`` -> 90."""
    m = re.fullmatch(r"sm_(\d+)[af]?", arch)
    if not m:
        raise ValueError(f"arch must look like sm_90a or sm_80, got {arch!r}")
    return int(m.group(1))


def generate(program: N.Program, *, arch: str, num_threads: int = 256, min_blocks: int = 2,
             debug: bool = False, prefetch: bool = False, stream: bool = False,
             inline_tasks: bool = False) -> KernelSource:
    """CUDA C++ of ``program``'s persistent kernel for ``arch`` (e.g. "sm_90a"); ``prefetch``: tasks that wait
    bring their read-only tiles into L2 while they wait; ``stream``: decode-size GEMV weights go straight into
    registers (see the module docstring); ``inline_tasks``: task bodies are inlined into the persistent loop
    rather than called."""
    if num_threads % 32 or not 32 <= num_threads <= 1024:
        raise ValueError(f"num_threads must be a multiple of 32 from 32 to 1024, got {num_threads}")
    return KernelGen(program, arch_number(arch), num_threads, min_blocks, debug, prefetch, stream,
                     inline_tasks).generate()
