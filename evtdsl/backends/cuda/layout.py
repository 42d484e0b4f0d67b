"""The kernel's one parameter: a struct of 8-byte fields, laid out here once for codegen and launch.

For ``rowsum(x: Tensor[M, K, f32], part: Tensor[M, KT, f32], y: Tensor[M, f32])`` the struct is

    evt::Tensor<float, 2> v_x;     // ptr, shape[2], stride[2]   (40 bytes)
    evt::Tensor<float, 2> v_part;
    evt::Tensor<float, 1> v_y;     // 24 bytes
    long long v_M, v_K, v_KT;      // dims, then int scalar parameters
    evt::Sched sched;              // task tables and launch constants (SCHED_FIELDS)

float scalar parameters travel as doubles (exact) and are rounded to the task's dtype on the device.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from ...ir import nodes as N
from ...ir.types import ScalarType, TensorType

# evt::Sched in include/evt_sched.cuh, in order: (name, struct format character).
SCHED_FIELDS: tuple[tuple[str, str], ...] = (
    ("inst_launch", "Q"), ("inst_coord", "Q"), ("wait_ptr", "Q"), ("wait_elem", "Q"), ("notify_ptr", "Q"),
    ("notify_elem", "Q"), ("waiter_ptr", "Q"), ("waiter_inst", "Q"), ("queue_ptr", "Q"), ("queue_inst", "Q"),
    ("state", "Q"), ("num_instances", "q"), ("num_elements", "q"), ("coord_stride", "q"), ("timeout_ns", "q"),
    ("dynamic", "q"), ("trace", "Q"),
)
SCHED_BYTES = 8 * len(SCHED_FIELDS)
# Kernel parameters beyond this need a newer driver; a program this large should split its tensors.
MAX_PARAM_BYTES = 4096


@dataclass(frozen=True)
class Field:
    """One member of the parameter struct: a tensor (pointer, shape, strides), an int, or a float."""

    name: str
    kind: str  # "tensor", "int" or "float"
    ndim: int = 0

    @property
    def cname(self) -> str:
        return f"v_{self.name}"

    @property
    def nbytes(self) -> int:
        return 8 + 16 * self.ndim if self.kind == "tensor" else 8

    @property
    def fmt(self) -> str:
        return {"tensor": "Q" + "q" * (2 * self.ndim), "int": "q", "float": "d"}[self.kind]


def param_fields(program: N.Program) -> list[Field]:
    """Tensor and scalar parameters in declaration order, then the dims (which tensor shapes bind)."""
    fields: list[Field] = []
    for p in program.params:
        if isinstance(p.type, TensorType):
            fields.append(Field(p.name, "tensor", p.type.ndim))
        elif isinstance(p.type, ScalarType) and p.type.dtype.is_int:
            fields.append(Field(p.name, "int"))
        else:
            fields.append(Field(p.name, "float"))
    fields.extend(Field(d, "int") for d in program.dims)
    return fields


def params_nbytes(fields: Sequence[Field]) -> int:
    return sum(f.nbytes for f in fields) + SCHED_BYTES


def pack_params(fields: Sequence[Field], tensors: dict[str, tuple[int, Sequence[int], Sequence[int]]],
                scalars: dict[str, float | int], sched: dict[str, int]) -> bytes:
    """The struct's bytes. ``tensors`` maps a name to (pointer, shape, strides in elements)."""
    fmt = "<" + "".join(f.fmt for f in fields) + "".join(c for _, c in SCHED_FIELDS)
    values: list[int | float] = []
    for f in fields:
        if f.kind == "tensor":
            ptr, shape, strides = tensors[f.name]
            values += [ptr, *shape, *strides]
        elif f.kind == "int":
            values.append(int(scalars[f.name]))
        else:
            values.append(float(scalars[f.name]))
    values += [sched[name] for name, _ in SCHED_FIELDS]
    return struct.pack(fmt, *values)
