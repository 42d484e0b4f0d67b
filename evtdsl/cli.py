"""The ``evtdsl`` command: ``demo`` runs the examples and checks them against NumPy; ``ir`` prints a
megakernel's IR; ``build`` compiles a module's megakernels ahead of time (no GPU needed); ``tune`` measures
the library's kernel variants on a GPU for the kernel scheduler."""
from __future__ import annotations

import argparse
import importlib
import sys
import time

import numpy as np


def _gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _demo_cases(rng: np.random.Generator):
    """(name, megakernel, args, check) for each example, at sizes that are not multiples of the tiles."""
    from . import dtypes as dt
    from .examples import gemm_chain, routing, rowsum

    x = rng.standard_normal((37, 300)).astype(np.float32)
    part, y = np.empty((37, 5), np.float32), np.empty(37, np.float32)
    yield ("split-K row sum", rowsum.rowsum, [x, part, y],
           lambda: float(np.abs(y - x.astype(np.float64).sum(1)).max()), 1e-3)

    m, k, n, p = 21, 72, 100, 40
    bf = dt.bf16.np_dtype
    xb = rng.standard_normal((m, k)).astype(bf)
    w1 = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(bf)
    w2 = (rng.standard_normal((p, n)) / np.sqrt(n)).astype(bf)
    g, h, yc = np.empty((m, n), np.float32), np.empty((m, n), bf), np.empty((m, p), np.float32)

    def chain_err():
        gg = xb.astype(np.float32) @ w1.astype(np.float32).T
        ref = (gg / (1 + np.exp(-gg))).astype(bf).astype(np.float32) @ w2.astype(np.float32).T
        return float(np.linalg.norm(yc - ref) / np.linalg.norm(ref))

    yield "GEMM -> silu -> GEMM (bf16)", gemm_chain.mlp_chain, [xb, w1, w2, g, h, yc], chain_err, 1e-2

    t, d, ne = 45, 64, 6
    xt = rng.standard_normal((t, d)).astype(np.float32)
    expert_of = rng.integers(0, ne, t).astype(np.int32)
    w = (rng.standard_normal((ne, d, d)) / np.sqrt(d)).astype(np.float32)
    pos, counts, tile_ptr = routing.route(expert_of, ne)
    n_pad = int(tile_ptr[-1]) * routing.BM
    xs, ys, yt = np.zeros((n_pad, d), np.float32), np.empty((n_pad, d), np.float32), np.empty((t, d), np.float32)
    yield ("data-dependent routing", routing.moe_route, [xt, expert_of, pos, counts, tile_ptr, w, xs, ys, yt],
           lambda: float(np.abs(yt - routing.reference(xt, expert_of, w)).max()), 1e-3)


def demo(args) -> int:
    backend = args.backend or ("cuda" if _gpu_available() else "cpu")
    print(f"evtdsl demo on the {backend} backend" + ("" if backend == "cuda" else " (no GPU found)"))
    rng = np.random.default_rng(args.seed)
    failed = 0
    for name, mk, arrays, err, tol in _demo_cases(rng):
        for schedule in ("static", "dynamic"):
            if backend == "cuda":
                import torch

                dev = [torch.from_numpy(a.view(np.int16)).cuda().view(torch.bfloat16) if a.dtype.name == "bfloat16"
                       else torch.from_numpy(a).cuda() for a in arrays]
                t0 = time.perf_counter()
                mk.run(*dev, backend="cuda", schedule=schedule)
                for a, d in zip(arrays, dev):
                    a[...] = (d.view(torch.int16).cpu().numpy().view(a.dtype) if a.dtype.name == "bfloat16"
                              else d.cpu().numpy())
            else:
                t0 = time.perf_counter()
                mk.run(*arrays, workers=args.workers, schedule=schedule, seed=args.seed)
            ms = (time.perf_counter() - t0) * 1e3
            e = err()
            ok = e <= tol
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {name:<30} {schedule:<8} error {e:.2e} (tolerance {tol:.0e})"
                  f"  {ms:7.1f} ms")
    print("all examples match NumPy" if not failed else f"{failed} example run(s) did not match NumPy")
    return 1 if failed else 0


def _load(spec: str):
    mod_name, _, attr = spec.partition(":")
    mod = importlib.import_module(mod_name)
    return getattr(mod, attr) if attr else mod


def show_ir(args) -> int:
    from .frontend.megakernel import Megakernel

    obj = _load(args.target)
    kernels = [obj] if isinstance(obj, Megakernel) else [v for v in vars(obj).values() if isinstance(v, Megakernel)]
    if not kernels:
        print(f"no @evt.megakernel found in {args.target}", file=sys.stderr)
        return 2
    for mk in kernels:
        print(mk.ir)
    return 0


def build(args) -> int:
    from .backends.cuda import aot

    return aot.run(args)


def tune(args) -> int:
    if not _gpu_available():
        print("evtdsl tune measures on a GPU; none was found", file=sys.stderr)
        return 2
    from .library import scheduler

    results = scheduler.tune_on_gpu(args.hidden, args.intermediate, args.dtype,
                                    m_buckets=[int(m) for m in args.m.split(",")])
    for key, entry in results.items():
        us = entry["us"]
        print(f"{key}: {entry['choice']}  ({us[entry['choice']]:.1f} us; torch {us['torch']:.1f} us)")
    print(f"profile written to {scheduler.user_profile_path()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evtdsl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the examples and check them against NumPy")
    p.add_argument("--backend", choices=["cpu", "cuda"], help="default: cuda when a GPU is present, else cpu")
    p.add_argument("--workers", type=int, default=4, help="simulated workers on the CPU backend")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    p = sub.add_parser("ir", help="print the IR of the megakernels in MODULE[:NAME]")
    p.add_argument("target", help="for example evtdsl.examples.rowsum")
    p.set_defaults(func=show_ir)
    p = sub.add_parser("build", help="compile the megakernels of modules into the cache (no GPU needed)")
    from .backends.cuda.aot import add_arguments

    add_arguments(p)
    p.set_defaults(func=build)
    p = sub.add_parser("tune", help="measure the library's variants on this GPU and keep the fastest")
    p.add_argument("kernel", choices=["swiglu"])
    p.add_argument("--hidden", type=int, required=True, help="hidden size K")
    p.add_argument("--intermediate", type=int, required=True, help="intermediate size N")
    p.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    p.add_argument("--m", default="1,2,4,8,16,32,64,128", help="batch sizes (M buckets) to tune")
    p.set_defaults(func=tune)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
