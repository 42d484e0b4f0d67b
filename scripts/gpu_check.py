#!/usr/bin/env python3
"""Check the CUDA backend on a GPU machine, in one command, and print a short summary:

1. the GPU tests (``pytest -m gpu tests/test_cuda_gpu.py tests/test_library_gpu.py``): examples, ops zoo and
   library against the CPU backend, both schedules, several worker counts, timeouts, back-to-back launches,
   CUDA graphs; every SwiGLU variant at M = 1 ... 128 against float32, a real-size patched Llama;
2. the compile-only and emulation tests (test_cuda_codegen.py, test_cuda_emulate.py, test_cuda_kernels.py);
3. compute-sanitizer memcheck, racecheck and synccheck on a small driver that runs the examples and the
   ops zoo on the GPU, and the GEMM chain and the SwiGLU again with weights streamed into registers (when
   compute-sanitizer is on PATH or under /usr/local/cuda*/bin);
4. with ``--benchmarks swiglu,runtime,timeline``: those benchmarks (JSON and plots under ``results/`` in the
   logs folder), and their headline figures in the summary (best evtdsl variant against torch in a CUDA graph;
   for the timeline, when each launch of a traced SwiGLU ran, per shape); ``--bench-args`` passes a benchmark
   more arguments (its configs, shapes, repeats).

Logs go to ``$OUT`` when set (the device runner returns that folder), else to a temporary folder.

    python scripts/gpu_check.py [--no-sanitizer] [--gpu-only] [--benchmarks swiglu,runtime,timeline]
                                [--bench-args NAME=ARGS ...] [--step-timeout 500]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIVER = """\
import sys
sys.path.insert(0, {tests!r})
import test_cuda_gpu as T
from test_cuda_kernels import OUTPUTS, zoo, zoo_inputs

for name, (mk, make, outputs, rtol) in T._examples().items():
    for schedule in ("static", "dynamic"):
        T.run_both(mk, make(), outputs, schedule, rtol=rtol)
        print("ok", name, schedule, flush=True)
T.run_both(zoo, zoo_inputs(36, 80), OUTPUTS, "dynamic", rtol=1e-3)
print("ok zoo", flush=True)
# weights streamed into registers (EVTDSL_STREAM_WEIGHTS, off by default): the GEMM chain's two GEMMs use it
import os
os.environ["EVTDSL_STREAM_WEIGHTS"] = "1"
mk, make, outputs, rtol = T._examples()["gemm_chain"]
for inline in ("0", "1"):  # task bodies called, then inlined (EVTDSL_INLINE_TASKS)
    os.environ["EVTDSL_INLINE_TASKS"] = inline
    for schedule in ("static", "dynamic"):
        T.run_both(mk, make(), outputs, schedule, rtol=rtol)
        print("ok gemm_chain streamed", "inlined" if inline == "1" else "called", schedule, flush=True)
import evtdsl as evt
from evtdsl.library import mlp, swiglu
from test_cuda_emulate import swiglu_inputs
# the streamed two_phase SwiGLU (two streamed dots sharing x, h read at L2), tiles in bounds (K, N multiples of
# the tiles) and partial ones, and with down tiles that reduce whole rows (chunk=0) in steps of 512 columns of
# h, over 16 and 32 rows of x
for cfg in (swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=64, chunk=2, stream=1),
            swiglu.Config("two_phase", bm=16, bn=64, bk=128, bc=16, chunk=0, bkd=512, stream=1),
            swiglu.Config("two_phase", bm=32, bn=64, bk=128, bc=16, chunk=0, bkd=512, stream=1)):
    for k, n in ((256, 512), (192, 320)):
        m = 20 if cfg.bm > 16 else 3
        T.run_both(swiglu.megakernel_for(cfg, evt.bf16), swiglu_inputs(cfg, evt.bf16, m=m, k=k, n=n), ("y",),
                   "static", rtol=2e-3, **mlp.codegen_options(cfg))
        print("ok swiglu streamed", cfg.name, k, n, flush=True)
"""


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer")) + sorted(
        glob.glob("/opt/nvidia/*/bin/compute-sanitizer"))
    return candidates[-1] if candidates else None


def run_step(name: str, cmd: list[str], logs: Path, env: dict[str, str], timeout: int) -> dict:
    log = logs / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}.log"
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        out, code = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n[gpu_check] timed out after {timeout} s"
        code = "timeout"
    log.write_text(f"$ {' '.join(cmd)}\n\n{out}")
    tail = [ln for ln in out.strip().splitlines() if ln.strip()]
    detail = next((ln for ln in reversed(tail) if re.search(r"passed|failed|error|skipped|ERROR SUMMARY", ln)),
                  tail[-1] if tail else "")
    return {"name": name, "ok": code == 0, "code": code, "seconds": time.perf_counter() - t0,
            "detail": detail.strip("= "), "log": str(log)}


# name: the benchmark command (run with --out <logs>/results)
BENCHMARKS = {"swiglu": ["benchmarks/swiglu.py"], "runtime": ["benchmarks/runtime.py"],
              "timeline": ["benchmarks/timeline.py"]}


def benchmark_summary(name: str, folder: Path) -> list[str]:
    """Headline lines of the newest JSON a benchmark wrote into ``folder``."""
    found = sorted(folder.glob(f"{name}-*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        return [f"{name}: no JSON written"]
    if name == "timeline":  # a traced launch per shape: when each launch's tasks ran
        lines = []
        for path in found:
            res = json.loads(path.read_text())
            lines.append(f"timeline ({path.name}, {res['device']}, {res['config']}, {res['shape']} M={res['M']}):")
            for p in res["phases"]:
                lines.append(f"  {p['launch']:20s} {p['tasks']:5d} tasks, {p['first_start']:7.1f} - "
                             f"{p['last_end']:7.1f} us, median body {p['median_body']:6.1f} us, median wait "
                             f"{p['median_wait']:6.1f} us")
        return lines
    res = json.loads(found[-1].read_text())
    lines = [f"{name} ({found[-1].name}, {res['device']}, copy {res['copy_TBps']:.2f} TB/s):"]
    if name == "swiglu":
        for r in res["rows"]:
            if r["M"] in (1, 16, 64):
                best = r["variants"].get(r["best"] or "", {})
                us = best.get("us", float("nan"))
                lines.append(f"  {r['shape']:8s} M={r['M']:<3d} evtdsl {us:7.1f} us ({best.get('frac_copy', 0):4.0%} of copy)"
                             f"  torch graph {r['torch_graph_us']:7.1f} us  (speed {r['torch_graph_us'] / us:.2f}x torch's)")
    elif name == "runtime":
        for size in dict.fromkeys(r["size"] for r in res["gemv_chain"]):
            rows = [r for r in res["gemv_chain"] if r["size"] == size and r["M"] == 1]
            if rows:
                b = min(rows, key=lambda r: r["us"])
                lines.append(f"  chain {size} M=1: {b['us']:.1f} us ({b['frac_copy']:.0%} of copy; {b['codegen']}, "
                             f"{b['config']}, {b['schedule']})  torch graph {b['torch_graph_us']:.1f} us")
        lines.append(f"  launch: megakernel {res['launch']['megakernel_graph_us']:.1f} us, plain kernel "
                     f"{res['launch']['plain_kernel_graph_us']:.1f} us (graph replay)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-sanitizer", action="store_true", help="skip the compute-sanitizer runs")
    parser.add_argument("--gpu-only", action="store_true",
                        help="skip the compile and emulation tests (they need no GPU and run in CI)")
    parser.add_argument("--benchmarks", default="",
                        help=f"comma-separated benchmarks to run after the checks: {', '.join(BENCHMARKS)}")
    parser.add_argument("--bench-args", action="append", default=[], metavar="NAME=ARGS",
                        help="more arguments for one benchmark, e.g. swiglu='--configs a,b --repeats 10' (repeatable)")
    parser.add_argument("--step-timeout", type=int, default=500, help="seconds per step (default 500)")
    args = parser.parse_args(argv)
    benches = [b for b in args.benchmarks.split(",") if b]
    unknown = [b for b in benches if b not in BENCHMARKS]
    if unknown:
        parser.error(f"--benchmarks: unknown {unknown}; expected names from {list(BENCHMARKS)}")
    extra: dict[str, list[str]] = {}
    for item in args.bench_args:
        name, sep, rest = item.partition("=")
        if not sep or name not in benches:
            parser.error(f"--bench-args: expected NAME=ARGS with NAME one of --benchmarks {benches}, got {item!r}")
        extra[name] = extra.get(name, []) + shlex.split(rest)

    logs = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="evtdsl-gpu-check-"))
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # the kernel cache stays out of the logs folder, which the device runner returns
    env.setdefault("EVTDSL_CACHE_DIR", tempfile.mkdtemp(prefix="evtdsl-gpu-check-cache-"))
    py = sys.executable
    results = []

    smi = shutil.which("nvidia-smi")
    if smi:
        results.append(run_step("nvidia-smi", [smi, "-L"], logs, env, 60))
    gpu = run_step("GPU tests", [py, "-m", "pytest", "-m", "gpu", "tests/test_cuda_gpu.py", "tests/test_library_gpu.py",
                                 "-q", "-rfE", "-p", "no:cacheprovider"], logs, env, args.step_timeout)
    if gpu["ok"] and " passed" not in gpu["detail"]:
        gpu.update(ok=False, code="no GPU test ran", detail=gpu["detail"] + " (does torch see a GPU?)")
    results.append(gpu)
    if not args.gpu_only:
        results.append(run_step("compile and emulation tests",
                                [py, "-m", "pytest", "tests/test_cuda_codegen.py", "tests/test_cuda_emulate.py",
                                 "tests/test_cuda_kernels.py", "-q", "-rfE", "-p", "no:cacheprovider"],
                                logs, env, args.step_timeout))

    sanitizer = None if args.no_sanitizer else find_sanitizer()
    if sanitizer:
        driver = logs / "sanitizer_driver.py"
        driver.write_text(DRIVER.format(tests=str(REPO / "tests")))
        # warm the kernel cache outside the sanitizer, and give waits room under its slowdown
        results.append(run_step("driver (no sanitizer)", [py, str(driver)], logs, env, args.step_timeout))
        slow_env = {**env, "EVTDSL_WAIT_TIMEOUT_MS": "600000"}
        for tool in ("memcheck", "racecheck", "synccheck"):
            results.append(run_step(f"compute-sanitizer {tool}",
                                    [sanitizer, "--tool", tool, "--error-exitcode", "99", py, str(driver)],
                                    logs, slow_env, args.step_timeout))
    elif not args.no_sanitizer:
        print("compute-sanitizer not found: skipping the sanitizer runs")

    summaries = []
    for b in benches:
        results.append(run_step(f"benchmark {b}", [py, *BENCHMARKS[b], "--out", str(logs / "results"),
                                                   *extra.get(b, [])], logs, env, args.step_timeout))
        summaries += benchmark_summary(b, logs / "results")

    width = max(len(r["name"]) for r in results)
    print(f"\nevtdsl CUDA backend check (logs in {logs})")
    for r in results:
        status = "PASS" if r["ok"] else f"FAIL ({r['code']})"
        print(f"  {r['name']:<{width}}  {status:<12} {r['seconds']:7.1f} s  {r['detail'][:100]}")
    for line in summaries:
        print(line)
    failed = [r for r in results if not r["ok"]]
    print("all steps passed" if not failed else f"{len(failed)} step(s) failed: "
          + ", ".join(f"{r['name']} -> {r['log']}" for r in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
