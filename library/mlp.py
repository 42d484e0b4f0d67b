"""``FusedSwiGLU``: the deep-fused SwiGLU MLP as a torch module, and a patch that swaps it into
``transformers`` Llama / Qwen2 / Mistral models."""
import torch
from torch import nn

import evtdsl as evt

from . import swiglu
from .scheduler import TORCH, Scheduler

_DTYPES = {torch.bfloat16: evt.bf16, torch.float16: evt.f16}
_SCHEDULER: Scheduler | None = None


def scheduler() -> Scheduler:
    global _SCHEDULER
    if _SCHEDULER is None:
        _SCHEDULER = Scheduler()
    return _SCHEDULER


def torch_swiglu(x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
    """What serving engines run: one merged gate_up GEMM, ``silu(g) * u``, one down GEMM."""
    g, u = nn.functional.linear(x, w_gate_up).chunk(2, dim=-1)
    y = nn.functional.linear(nn.functional.silu(g) * u, w_down)
    return y if residual is None else y + residual


def _device_name(t: torch.Tensor) -> str:
    return "cpu" if t.device.type == "cpu" else torch.cuda.get_device_name(t.device)


class FusedSwiGLU(nn.Module):
    """``y = down(silu(gate(x)) * up(x))`` (+ ``residual``), one megakernel per call.

    ``w_gate_up`` is ``[2N, K]`` with the gate rows first; ``w_down`` is ``[K, N]``; K and N are multiples
    of 64; bf16 or f16. The kernel scheduler picks the variant per GPU, shape and batch size, unless
    ``variant`` names one (a ``swiglu.Config``, or ``"torch"``) for every call."""

    def __init__(self, w_gate_up: torch.Tensor, w_down: torch.Tensor, variant: "swiglu.Config | str | None" = None):
        super().__init__()
        if w_gate_up.dim() != 2 or w_down.dim() != 2:
            raise ValueError(f"w_gate_up and w_down are 2-d, got shapes {list(w_gate_up.shape)} and "
                             f"{list(w_down.shape)}")
        n2, k = w_gate_up.shape
        if n2 % 2:
            raise ValueError(f"w_gate_up: expected [2N, K] with the gate rows first, got {n2} rows (odd)")
        n = n2 // 2
        if tuple(w_down.shape) != (k, n):
            raise ValueError(f"w_down: expected shape [K, N] = [{k}, {n}] from w_gate_up [{n2}, {k}], got "
                             f"{list(w_down.shape)}")
        for name, size in (("hidden size K", k), ("intermediate size N", n)):
            if size % 64:
                raise ValueError(f"{name} must be a multiple of 64, got {size}")
        if w_gate_up.dtype not in _DTYPES or w_down.dtype != w_gate_up.dtype:
            raise TypeError(f"weights must both be bf16 or f16, got {w_gate_up.dtype} and {w_down.dtype}")
        if w_gate_up.device != w_down.device:
            raise ValueError(f"weights on different devices: {w_gate_up.device} and {w_down.device}")
        self.w_gate_up = nn.Parameter(w_gate_up.detach().contiguous(), requires_grad=False)
        self.w_down = nn.Parameter(w_down.detach().contiguous(), requires_grad=False)
        self.hidden, self.intermediate = k, n
        if variant is not None and variant != TORCH and not isinstance(variant, swiglu.Config):
            raise ValueError(f"variant: expected a swiglu.Config, 'torch' or None, got {variant!r}")
        self.variant = variant

    @classmethod
    def from_linear(cls, gate: nn.Linear, up: nn.Linear, down: nn.Linear, variant=None) -> "FusedSwiGLU":
        for name, lin in (("gate", gate), ("up", up), ("down", down)):
            if lin.bias is not None:
                raise ValueError(f"{name} has a bias; the fused SwiGLU has none")
        return cls(torch.cat([gate.weight, up.weight], dim=0), down.weight, variant)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, intermediate={self.intermediate}, dtype={self.w_down.dtype}"

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.hidden:
            raise ValueError(f"x: expected last dimension {self.hidden}, got shape {list(x.shape)}")
        if x.dtype != self.w_down.dtype or x.device != self.w_down.device:
            raise TypeError(f"x: expected {self.w_down.dtype} on {self.w_down.device}, got {x.dtype} on {x.device}")
        if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
            raise ValueError(f"residual: expected {list(x.shape)} {x.dtype}, got {list(residual.shape)} "
                             f"{residual.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.hidden).contiguous()
        m = x2.shape[0]
        if m == 0:
            return x.new_empty(x.shape) if residual is None else residual.clone()
        dt = _DTYPES[x.dtype]
        choice = self.variant or scheduler().pick(_device_name(x), self.hidden, self.intermediate, dt.name, m)
        if choice == TORCH:
            return torch_swiglu(x, self.w_gate_up, self.w_down, residual)
        res = torch.zeros_like(x2) if residual is None else residual.reshape(-1, self.hidden).contiguous()
        return run_variant(choice, x2, self.w_gate_up, self.w_down, res).reshape(*lead, self.hidden)


def codegen_options(cfg: swiglu.Config) -> dict:
    """The launch options of cfg's code generation on the GPU (none where the knobs decide)."""
    return {"stream": True, "inline_tasks": True} if cfg.stream else {}


def launch_variant(cfg: swiglu.Config, x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
                   residual: torch.Tensor, **options):
    """One DSL variant on 2-d x: allocates the workspaces and the output, launches the megakernel (on the GPU
    with cfg's code generation, unless ``options`` say otherwise); returns (y, the backend's run record)."""
    m, k = x.shape
    n = w_down.shape[1]
    mk = swiglu.megakernel_for(cfg, _DTYPES[x.dtype])
    ws = [torch.empty(shape, dtype=torch.float32 if d == "f32" else x.dtype, device=x.device)
          for shape, d in swiglu.workspace_shapes(cfg, m, k, n)]
    y = torch.empty_like(x)
    if x.is_cuda:
        options = {**codegen_options(cfg), **options}
    return y, mk.run(x, w_gate_up, w_down, *ws, residual, y, **options)


def run_variant(cfg: swiglu.Config, x: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor,
                residual: torch.Tensor, **options) -> torch.Tensor:
    """launch_variant's y."""
    return launch_variant(cfg, x, w_gate_up, w_down, residual, **options)[0]


def _is_swiglu_mlp(module: nn.Module) -> bool:
    parts = [getattr(module, p, None) for p in ("gate_proj", "up_proj", "down_proj")]
    if not all(isinstance(p, nn.Linear) for p in parts):
        return False
    act = getattr(module, "act_fn", None)
    return isinstance(act, nn.SiLU) or type(act).__name__ in ("SiLU", "SiLUActivation")


class _PatchedMLP(nn.Module):
    """Stands in for a transformers MLP: same call signature (hidden states in, hidden states out)."""

    def __init__(self, fused: FusedSwiGLU):
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)


def patch_model(model: nn.Module, variant=None) -> int:
    """Replace every SwiGLU MLP of a transformers Llama / Qwen2 / Mistral model (modules with
    gate_proj/up_proj/down_proj and a SiLU act_fn) by ``FusedSwiGLU``; returns how many were replaced.
    ``variant`` fixes the variant (see ``FusedSwiGLU``); by default the kernel scheduler picks."""
    targets = [(name, mod) for name, mod in model.named_modules() if _is_swiglu_mlp(mod)]
    for name, mod in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _PatchedMLP(FusedSwiGLU.from_linear(mod.gate_proj, mod.up_proj, mod.down_proj,
                                                                            variant)))
    return len(targets)
