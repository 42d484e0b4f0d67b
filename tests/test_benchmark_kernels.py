"""The megakernels the benchmarks time compute what they claim: the GEMV -> silu -> GEMV chains of
benchmarks/runtime.py on the CPU backend against a float32 torch reference, at sizes that are not multiples of
the tiles, and their CUDA code compiles (sm_90a, NVRTC) under the code-generation choices the benchmark times."""
import dataclasses
import os
import sys
from pathlib import Path

import pytest
import torch

import evtdsl as evt
from evtdsl.backends.cpu.timeline import plot_timeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import runtime  # noqa: E402

# (bn_up, bk_up, bn_down, bk_down, chunk): small tiles of the same forms as runtime.CHAIN_CONFIGS
SMALL = [(32, 64, 16, 64, None), (32, 64, 16, 32, 3), (64, 64, 32, 64, 2)]


def reference(x, w1, w2):
    return torch.nn.functional.silu(x.float() @ w1.float().T).bfloat16().float() @ w2.float().T


@pytest.mark.parametrize("cfg", SMALL, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("m,k,n", [(1, 192, 448), (3, 128, 320), (17, 96, 200)])
def test_gemv_chain_matches_torch(cfg, m, k, n):
    g = torch.Generator().manual_seed(m * 1000 + k + n)
    x = torch.randn(m, k, generator=g).bfloat16()
    w1 = (torch.randn(n, k, generator=g) / k**0.5).bfloat16()
    w2 = (torch.randn(k, n, generator=g) / n**0.5).bfloat16()
    h, y = torch.empty(m, n, dtype=torch.bfloat16), torch.full((m, k), float("nan"), dtype=torch.bfloat16)
    mk = runtime.make_chain(cfg)
    args = runtime.chain_args(cfg, x, w1, w2, h, y)
    mk.run(*args, backend="cpu")
    ref = reference(x, w1, w2)
    assert float((y.float() - ref).norm() / ref.norm()) < 1e-2


def test_split_chain_rejects_a_step_past_its_chunk():
    with pytest.raises(ValueError, match="bk_down: expected a divisor of bn_up \\* chunk = 96.*got 64"):
        runtime.make_gemv_chain_split(32, 64, 16, 64, 3)


@pytest.mark.parametrize("name", ["up64x128_down16x512", "split up64x128_down16x512 ch56"])
@pytest.mark.parametrize("stream", [False, True], ids=["ring", "streamed+inlined"])
def test_chain_compiles(name, stream, tmp_path, monkeypatch):
    pytest.importorskip("cupy")
    from evtdsl.backends.cuda.compiler import compile_program

    monkeypatch.setenv("EVTDSL_CACHE_DIR", str(tmp_path))
    ck = compile_program(runtime.make_chain(runtime.CHAIN_CONFIGS[name]).ir, arch="sm_90a", stream=stream,
                         inline_tasks=stream)
    assert ck.cubin[:4] == b"\x7fELF"


def test_gemv_diagnose_kernels_match_torch():
    """gemv_diagnose's own megakernels: the GEMV with one task per CTA (tiles dealt p, p + tasks, ...), and the
    two_phase SwiGLU's phases run alone, at sizes that are not multiples of the tiles."""
    import gemv_diagnose

    from evtdsl.library import swiglu

    g = torch.Generator().manual_seed(11)
    m, k, n = 3, 192, 200
    x = torch.randn(m, k, generator=g).bfloat16()
    w = (torch.randn(n, k, generator=g) / k**0.5).bfloat16()
    y = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    gemv_diagnose.make_gemv_tiles(64, 64, 3)(x, w, y)
    ref = x.float() @ w.float().T
    assert float((y.float() - ref).norm() / ref.norm()) < 1e-2

    cfg = swiglu.Config("two_phase", bm=16, bn=32, bk=64, bc=64, chunk=2)
    gate_up, down = gemv_diagnose.phase_kernels(cfg)
    n = 160
    w_gu = (torch.randn(2 * n, k, generator=g) / k**0.5).bfloat16()
    w_d = (torch.randn(k, n, generator=g) / n**0.5).bfloat16()
    h = torch.full((m, n), float("nan"), dtype=torch.bfloat16)
    gate_up(x, w_gu, h)
    gu = (x.float() @ w_gu.float().T).split(n, dim=1)
    href = (torch.nn.functional.silu(gu[0].bfloat16()) * gu[1].bfloat16()).float()
    assert float((h.float() - href).norm() / href.norm()) < 1e-2
    ws = torch.empty(-(-n // (cfg.bn * cfg.chunk)), m, k)
    y = torch.full((m, k), float("nan"), dtype=torch.bfloat16)
    down(h, w_d, ws, torch.zeros_like(x), y)
    yref = h.float() @ w_d.float().T
    assert float((y.float() - yref).norm() / yref.norm()) < 1e-2
    # chunk=0: the down tiles reduce whole rows and write y (plus the residual), no workspace
    _, down_rows = gemv_diagnose.phase_kernels(swiglu.Config("two_phase", bm=16, bn=32, bk=64, bc=64, chunk=0))
    res = torch.randn(m, k, generator=g).bfloat16()
    y.fill_(float("nan"))
    down_rows(h, w_d, res, y)
    yref = yref + res.float()
    assert float((y.float() - yref).norm() / yref.norm()) < 1e-2


def test_gpu_check_summarises_recorded_benchmarks(tmp_path):
    """scripts/gpu_check.py --benchmarks reads the JSON each benchmark writes: here, recorded H200 runs."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import gpu_check

    results = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    shutil.copy(results / "swiglu-h200-20261204-021402.json", tmp_path / "swiglu-20261204-021402.json")
    shutil.copy(results / "runtime-h200-20261204-010042.json", tmp_path / "runtime-20261204-010042.json")
    swiglu_lines = gpu_check.benchmark_summary("swiglu", tmp_path)
    assert "NVIDIA H200" in swiglu_lines[0] and len(swiglu_lines) == 1 + 3 * 3  # 3 shapes x M in (1, 16, 64)
    assert any("8b       M=1   evtdsl   103.6 us" in ln and "torch graph    95.5 us" in ln for ln in swiglu_lines)
    runtime_lines = gpu_check.benchmark_summary("runtime", tmp_path)
    assert any("chain 70B M=1: 259.0 us (86% of copy" in ln for ln in runtime_lines)
    assert gpu_check.benchmark_summary("runtime", tmp_path / "empty") == ["runtime: no JSON written"]


def test_traced_launch_summary_and_chart(tmp_path, capsys):
    """A traced launch's record as the GPU writes it (timeline.py and CudaRun.timeline read it): the tasks in
    start order with their CTA and SM, the per-launch summary, and the Gantt chart for hundreds of CTAs."""
    import matplotlib
    import numpy as np
    import timeline

    from evtdsl.backends.cuda import launch
    from evtdsl.examples import rowsum
    from evtdsl.ir.passes.graph import build_graph, index_loader

    matplotlib.use("Agg")
    program = rowsum.rowsum.ir
    graph = build_graph(program, {"M": 37, "K": 300, "KT": 5}, index_loader(program, {}))
    n = len(graph.instances)
    base = 10**12  # %globaltimer counts ns from some epoch
    raw = np.zeros((n, 4), np.int64)
    for i in range(n):
        final = graph.instances[i].launch == 1
        raw[i] = [base + 1000 * i, base + 1000 * i + (5000 if final else 200), base + 1000 * i + 9000,
                  (7 << 32) | (i % 3)]
    with pytest.raises(evt.EvtError, match=f"lacks 1 of its {n} tasks"):
        launch.task_traces(graph, np.where(np.arange(4 * n).reshape(n, 4) == 4 * n - 2, 0, raw))
    spans = launch.task_traces(graph, raw)
    assert [t.start for t in spans] == sorted(t.start for t in spans) and spans[0].taken == 0.0
    assert {t.sm for t in spans} == {7} and {t.worker for t in spans} == {0, 1, 2}
    first = next(t for t in spans if t.instance == 0)
    assert (first.taken, first.start, first.end) == (0.0, 0.2, 9.0) and first.label == graph.instances[0].label
    summary = timeline.phases(spans)
    assert [p["launch"] for p in summary] == [L.label for L in program.launches]
    assert sum(p["tasks"] for p in summary) == n
    assert summary[1]["median_wait"] == pytest.approx(5.0) and summary[0]["median_wait"] == pytest.approx(0.2)
    assert summary[0]["median_body"] == pytest.approx(8.8)
    # gpu_check --benchmarks timeline prints the summary the script writes
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import gpu_check

    (tmp_path / "timeline-20261204-000000.json").write_text(json.dumps(
        {"device": "NVIDIA H200", "config": "c", "shape": "8b", "M": 1, "phases": summary}))
    (tmp_path / "timeline-1b-20261204-000001.json").write_text(json.dumps(
        {"device": "NVIDIA H200", "config": "d", "shape": "1b", "M": 1, "phases": summary[:1]}))
    os.utime(tmp_path / "timeline-1b-20261204-000001.json", (2e9, 2e9))  # written after the first
    os.utime(tmp_path / "timeline-20261204-000000.json", (1e9, 1e9))
    with pytest.raises(SystemExit):  # --bench-args for a benchmark that --benchmarks does not run
        gpu_check.main(["--benchmarks", "swiglu", "--bench-args", "timeline=--shape 1b"])
    assert "--bench-args: expected NAME=ARGS with NAME one of --benchmarks ['swiglu']" in capsys.readouterr().err
    lines = gpu_check.benchmark_summary("timeline", tmp_path)  # every traced shape, in the order they ran
    assert lines[0] == "timeline (timeline-20261204-000000.json, NVIDIA H200, c, 8b M=1):" and len(lines) == 5
    assert "median wait    5.0 us" in lines[2]
    assert lines[3] == "timeline (timeline-1b-20261204-000001.json, NVIDIA H200, d, 1b M=1):"
    wide = [dataclasses.replace(t, worker=t.worker * 100) for t in spans]  # CTAs up to 200 of 264
    ax = plot_timeline(wide, 264, xlabel="µs")
    assert ax.get_xlabel() == "µs" and len(ax.get_yticks()) == 27 and ax.figure.get_size_inches()[1] <= 10
