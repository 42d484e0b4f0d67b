"""The SwiGLU MLP of Llama-style models, deep-fused (after DeepFusionKernel): ``y = (silu(x Wg^T) * (x Wu^T)) Wd^T``.

Weights: the merged ``w_gate_up [2N, K]`` (gate rows first, as checkpoints merge them) and ``w_down [K, N]``;
x is ``[M, K]`` with M dynamic. Accumulation is float32; the intermediate ``h`` is rounded to x's dtype,
as the unfused torch path rounds it. Two strategies, each a megakernel per dtype and tile configuration:

``fused``: task ``ffn(i, j)`` computes the gate/up tile ``j`` for row block ``i``, forms ``h`` on chip and
multiplies it into its slice of ``w_down``, leaving a partial ``y`` for that ``j`` in a float32 workspace;
``R[i]`` counts the ``cdiv(N, BN)`` partials; ``reduce(i, c)`` waits on it and sums them. Bytes moved for
``M <= BM``: the weights once (``3 N K`` elements) plus ``2 * cdiv(N, BN) * M * K * 4`` of workspace.

``two_phase``: task ``gate_up(i, j)`` writes its ``h`` tile (``M x BN``, small enough to stay in L2) and
notifies the chunk event ``H[i, j // CH]``; task ``down(i, c, q)`` waits only on chunk ``q`` of ``h`` and
writes a partial ``y`` for chunk ``q``; ``reduce2(i, c)`` sums the ``cdiv(N, BN * CH)`` chunk partials.
Down tiles start as soon as their chunk of h is done. Bytes moved: the weights once, ``h`` written once
and read ``cdiv(K, BC)`` times from L2, plus ``2 * n_chunks * M * K * 4`` of workspace. With ``chunk=0``
(one chunk, all of h): task ``down(i, c)`` waits on ``H[i]``, all of row block i's gate/up tiles, reduces
whole rows of ``w_down`` and writes y itself (residual added); no partials, no reduce tasks, so the bytes
moved are the weights once and h written once and read ``cdiv(K, BC)`` times from L2.
"""
import dataclasses
from dataclasses import dataclass

import evtdsl as evt

M, K, N, N2, NJ, NQ = (evt.dim(n) for n in ("M", "K", "N", "N2", "NJ", "NQ"))


@dataclass(frozen=True)
class Config:
    """A tile configuration: rows per task ``bm``, intermediate columns per task ``bn``, hidden columns per
    reduction task ``bc``; for two_phase the ``chunk`` of gate/up tiles per event (0: one event for all of
    h, down tiles that reduce whole rows) and the down tiles' step along the intermediate dimension ``bkd``
    (0: ``bk``; a down tile reads ``bc`` rows of ``w_down`` that are ``2 N`` bytes apart, and a step of at
    least 64 columns keeps each row's run 128 bytes or more); and the code generation on the GPU:
    ``stream=1`` streams the weights of the decode-size loops into registers, task bodies inlined (the launch
    options ``stream`` and ``inline_tasks``), ``0`` leaves it to the knobs (the cp.async ring by default)."""

    strategy: str
    bm: int = 16
    bn: int = 64
    bk: int = 64
    bc: int = 256
    chunk: int = 8
    stream: int = 0
    bkd: int = 0

    def __post_init__(self):
        if self.strategy not in ("fused", "two_phase"):
            raise ValueError(f"Config.strategy: expected 'fused' or 'two_phase', got {self.strategy!r}")
        for field in ("bm", "bn", "bk", "bc", "chunk"):
            value = getattr(self, field)
            if field == "chunk" and self.strategy == "two_phase" and type(value) is int and value == 0:
                continue  # one chunk: all of h
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                what = "a positive int (or 0 for two_phase)" if field == "chunk" else "a positive int"
                raise ValueError(f"Config.{field}: expected {what}, got {value!r}")
        if self.stream not in (0, 1) or isinstance(self.stream, bool):
            raise ValueError(f"Config.stream: expected 0 or 1, got {self.stream!r}")
        if not isinstance(self.bkd, int) or isinstance(self.bkd, bool) or self.bkd < 0:
            raise ValueError(f"Config.bkd: expected 0 (bk) or a positive int, got {self.bkd!r}")
        if self.strategy == "fused" and self.bkd:
            raise ValueError(f"Config.bkd: only two_phase has down tiles of their own step, got bkd={self.bkd} "
                             "for strategy 'fused'")
        if self.strategy == "two_phase" and (self.bn * self.chunk) % self.down_step:
            # a down task's k loop steps by bkd over one chunk of bn * chunk columns of h; a step that
            # crosses the chunk's end would read columns whose event it does not wait on
            field = "bkd" if self.bkd else "bk"
            raise ValueError(f"Config.{field}: two_phase needs bn * chunk ({self.bn} * {self.chunk} = "
                             f"{self.bn * self.chunk}) to be a multiple of the down tiles' step, got "
                             f"{field}={self.down_step}")

    @property
    def down_step(self) -> int:
        """The down tiles' step along the intermediate dimension (two_phase)."""
        return self.bkd or self.bk

    @property
    def name(self) -> str:
        extra = (f"_ch{self.chunk}" if self.chunk else "_whole") if self.strategy == "two_phase" else ""
        extra += f"_bkd{self.bkd}" if self.bkd else ""
        extra += "_stream" if self.stream else ""
        return f"{self.strategy}_bm{self.bm}_bn{self.bn}_bk{self.bk}_bc{self.bc}{extra}"


def _reduce(cfg: Config, dtype, P):
    """Sum the ``P`` float32 partials of a (BM, BC) tile of y and add the residual ``res``."""
    BM, BC = cfg.bm, cfg.bc

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, BC)))
    def reduce(i, c, ws: evt.Tensor[P, M, K, evt.f32], res: evt.Tensor[M, K, dtype], y: evt.Tensor[M, K, dtype]):
        acc = evt.load(res, (i * BM, c * BC), (BM, BC)).to(evt.f32)
        for p in range(P):
            acc += evt.load(ws, (p, i * BM, c * BC), (BM, BC))
        evt.store(y, (i * BM, c * BC), acc)

    return reduce


def _fused(cfg: Config, dtype):
    BM, BN, BK = cfg.bm, cfg.bn, cfg.bk

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BN)))
    def ffn(i, j, x: evt.Tensor[M, K, dtype], w_gu: evt.Tensor[N2, K, dtype], w_d: evt.Tensor[K, N, dtype],
            ws: evt.Tensor[NJ, M, K, evt.f32]):
        g = evt.zeros((BM, BN), evt.f32)
        u = evt.zeros((BM, BN), evt.f32)
        for k in range(0, K, BK):
            xt = evt.load(x, (i * BM, k), (BM, BK))
            g += evt.dot(xt, evt.load(w_gu, (j * BN, k), (BN, BK)).T)
            u += evt.dot(xt, evt.load(w_gu, (N + j * BN, k), (BN, BK)).T)
        h = (evt.silu(g.to(dtype)) * u.to(dtype)).to(dtype)
        for c in range(0, K, BK):
            evt.store(ws, (j, i * BM, c), evt.dot(h, evt.load(w_d, (c, j * BN), (BK, BN)).T))

    reduce = _reduce(cfg, dtype, NJ)

    @evt.megakernel
    def swiglu_fused(x: evt.Tensor[M, K, dtype], w_gu: evt.Tensor[2 * N, K, dtype], w_d: evt.Tensor[K, N, dtype],
                     ws: evt.Tensor[evt.cdiv(N, BN), M, K, evt.f32], res: evt.Tensor[M, K, dtype],
                     y: evt.Tensor[M, K, dtype]):
        R = evt.EventTensor((evt.cdiv(M, BM),), wait_count=evt.cdiv(N, BN))
        ffn(x, w_gu, w_d, ws, notify=R["ij->i"])
        reduce(ws, res, y, wait=R["ic->i"])

    return swiglu_fused


def two_phase_tasks(cfg: Config, dtype):
    """The tasks of the two_phase strategy, ``(gate_up, down, reduce2)`` (reduce2 None with ``chunk=0``,
    whose down tiles write y): the megakernel below wires them with events; benchmarks run each phase
    alone."""
    BM, BN, BK, BC, CH, BKD = cfg.bm, cfg.bn, cfg.bk, cfg.bc, cfg.chunk, cfg.down_step
    BQ = BN * CH  # intermediate columns per chunk event

    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BN)))
    def gate_up(i, j, x: evt.Tensor[M, K, dtype], w_gu: evt.Tensor[N2, K, dtype], h: evt.Tensor[M, N, dtype]):
        g = evt.zeros((BM, BN), evt.f32)
        u = evt.zeros((BM, BN), evt.f32)
        for k in range(0, K, BK):
            xt = evt.load(x, (i * BM, k), (BM, BK))
            g += evt.dot(xt, evt.load(w_gu, (j * BN, k), (BN, BK)).T)
            u += evt.dot(xt, evt.load(w_gu, (N + j * BN, k), (BN, BK)).T)
        evt.store(h, (i * BM, j * BN), evt.silu(g.to(dtype)) * u.to(dtype))

    if CH == 0:
        @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(K, BC)))
        def down_rows(i, c, h: evt.Tensor[M, N, dtype], w_d: evt.Tensor[K, N, dtype], res: evt.Tensor[M, K, dtype],
                      y: evt.Tensor[M, K, dtype]):
            acc = evt.zeros((BM, BC), evt.f32)
            for n in range(0, N, BKD):
                acc += evt.dot(evt.load(h, (i * BM, n), (BM, BKD)), evt.load(w_d, (c * BC, n), (BC, BKD)).T)
            evt.store(y, (i * BM, c * BC), acc + evt.load(res, (i * BM, c * BC), (BM, BC)).to(evt.f32))

        return gate_up, down_rows, None

    # chunk-major (q before c): the runtime deals tasks in this order, so the down tiles of the first chunks,
    # whose h is done first, come first
    @evt.task(grid=(evt.cdiv(M, BM), evt.cdiv(N, BQ), evt.cdiv(K, BC)))
    def down(i, q, c, h: evt.Tensor[M, N, dtype], w_d: evt.Tensor[K, N, dtype], ws: evt.Tensor[NQ, M, K, evt.f32]):
        acc = evt.zeros((BM, BC), evt.f32)
        for n in range(q * BQ, evt.min(N, q * BQ + BQ), BKD):
            acc += evt.dot(evt.load(h, (i * BM, n), (BM, BKD)), evt.load(w_d, (c * BC, n), (BC, BKD)).T)
        evt.store(ws, (q, i * BM, c * BC), acc)

    return gate_up, down, _reduce(cfg, dtype, NQ)


def _two_phase_whole(cfg: Config, dtype):
    gate_up, down, _ = two_phase_tasks(cfg, dtype)

    @evt.megakernel
    def swiglu_two_phase_whole(x: evt.Tensor[M, K, dtype], w_gu: evt.Tensor[2 * N, K, dtype],
                               w_d: evt.Tensor[K, N, dtype], h: evt.Tensor[M, N, dtype], res: evt.Tensor[M, K, dtype],
                               y: evt.Tensor[M, K, dtype]):
        H = evt.EventTensor((evt.cdiv(M, cfg.bm),), wait_count=evt.cdiv(N, cfg.bn))
        gate_up(x, w_gu, h, notify=H["ij->i"])
        down(h, w_d, res, y, wait=H["ic->i"])

    return swiglu_two_phase_whole


def _two_phase(cfg: Config, dtype):
    BM, BN, BC, CH = cfg.bm, cfg.bn, cfg.bc, cfg.chunk
    if CH == 0:
        return _two_phase_whole(cfg, dtype)
    BQ = BN * CH
    gate_up, down, reduce2 = two_phase_tasks(cfg, dtype)

    @evt.megakernel
    def swiglu_two_phase(x: evt.Tensor[M, K, dtype], w_gu: evt.Tensor[2 * N, K, dtype],
                         w_d: evt.Tensor[K, N, dtype], h: evt.Tensor[M, N, dtype],
                         ws: evt.Tensor[evt.cdiv(N, BQ), M, K, evt.f32], res: evt.Tensor[M, K, dtype],
                         y: evt.Tensor[M, K, dtype]):
        # chunk q holds gate/up tiles q*CH ... q*CH + CH - 1; the last chunk may hold fewer
        H = evt.EventTensor((evt.cdiv(M, BM), evt.cdiv(N, BQ)),
                            wait_count=lambda i, q: evt.min(CH, evt.cdiv(N, BN) - q * CH))
        R = evt.EventTensor((evt.cdiv(M, BM), evt.cdiv(K, BC)), wait_count=evt.cdiv(N, BQ))
        gate_up(x, w_gu, h, notify=H[lambda i, j: (i, j // CH)])
        down(h, w_d, ws, wait=H["iqc->iq"], notify=R["iqc->ic"])
        reduce2(ws, res, y, wait=R["ic->ic"])

    return swiglu_two_phase


_BUILT: dict[tuple[Config, str], evt.Megakernel] = {}


def megakernel_for(cfg: Config, dtype) -> evt.Megakernel:
    """The megakernel of one strategy, tile configuration and dtype (bf16 or f16), built once.

    Its arguments are ``(x, w_gate_up, w_down, workspace..., residual, y)``; ``workspace_shapes`` gives
    the workspaces. A zero residual gives the plain MLP."""
    if dtype not in (evt.bf16, evt.f16):
        raise TypeError(f"SwiGLU runs in bf16 or f16, got {dtype}")
    # the code generation (cfg.stream) is a launch option: the same megakernel serves both
    key = (dataclasses.replace(cfg, stream=0), dtype.name)
    if key not in _BUILT:
        build = {"fused": _fused, "two_phase": _two_phase}[cfg.strategy]  # Config checked the strategy
        _BUILT[key] = build(cfg, dtype)
    return _BUILT[key]


def workspace_shapes(cfg: Config, m: int, k: int, n: int) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype name) of each workspace argument, in order: for fused the ``f32`` partials; for two_phase
    ``h`` (dtype "x": x's), then the ``f32`` chunk partials (none with ``chunk=0``)."""
    if cfg.strategy == "fused":
        return [((-(-n // cfg.bn), m, k), "f32")]
    if cfg.chunk == 0:
        return [((m, n), "x")]
    return [((m, n), "x"), ((-(-n // (cfg.bn * cfg.chunk)), m, k), "f32")]


def evtdsl_megakernels() -> dict[str, evt.Megakernel]:
    """Every variant the scheduler may pick, for ``evtdsl build evtdsl.library.swiglu``."""
    from .scheduler import DEFAULT_CONFIGS

    # a streamed config shares its megakernel with the plain one (the code generation is a launch option)
    plain = dict.fromkeys(dataclasses.replace(c, stream=0) for c in DEFAULT_CONFIGS)
    return {f"{c.name}_{d.name}": megakernel_for(c, d) for c in plain for d in (evt.bf16, evt.f16)}
