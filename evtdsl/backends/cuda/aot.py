"""Ahead-of-time builds: fill the kernel cache with no GPU present, so that serving starts warm.

    python -m evtdsl.backends.cuda.aot --arch sm_90a evtdsl.examples.gemm_chain my_model.py

imports each module (a dotted name or a .py path), finds every megakernel in it and compiles it for the
arch into the cache (``$EVTDSL_CACHE_DIR`` or ``~/.cache/evtdsl``). A later process with the same evtdsl,
NVRTC, options and arch loads the cubins without compiling. ``evtdsl build`` is the same command.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from ...frontend.megakernel import Megakernel
from .compiler import DEFAULT_ARCH, CompiledKernel, compile_program


def import_target(target: str) -> ModuleType:
    """A module from a dotted name or a path to a .py file."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def megakernels(module: ModuleType) -> dict[str, Megakernel]:
    """The module's megakernels by attribute name (each object once), plus those its
    ``evtdsl_megakernels()`` function returns (for modules that build kernels from factories)."""
    found: dict[str, Megakernel] = {}
    listed = getattr(module, "evtdsl_megakernels", None)
    items = list(vars(module).items()) + (list(listed().items()) if callable(listed) else [])
    for name, obj in items:
        if isinstance(obj, Megakernel) and all(obj is not o for o in found.values()):
            found[name] = obj
    return found


def build(targets: list[str], arch: str = DEFAULT_ARCH, num_threads: int = 256,
          debug: bool | None = None) -> list[tuple[str, CompiledKernel]]:
    """Compile every megakernel of every target module into the cache."""
    out = []
    for target in targets:
        module = import_target(target)
        for name, mk in megakernels(module).items():
            out.append((f"{module.__name__}.{name}", compile_program(mk.ir, arch=arch, num_threads=num_threads,
                                                                     debug=debug)))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``evtdsl build`` (shared with the ``evtdsl`` command line)."""
    parser.add_argument("modules", nargs="+", help="dotted module names or .py files holding megakernels")
    parser.add_argument("--arch", default=DEFAULT_ARCH, help=f"target, e.g. sm_90a (default {DEFAULT_ARCH})")
    parser.add_argument("--threads", type=int, default=256, help="threads per CTA (default 256)")


def run(args: argparse.Namespace) -> int:
    """Build what parsed ``args`` name and print one line per kernel."""
    built = build(args.modules, arch=args.arch, num_threads=args.threads)
    for name, k in built:
        how = "compiled" if "nvrtc" in k.timings else "cached"
        print(f"{name}: {k.name} for {k.arch}, {how}, {len(k.cubin)} bytes -> {k.path}")
    if not built:
        print("no megakernels found in " + ", ".join(args.modules), file=sys.stderr)
        return 1
    return 0


def build_main(argv: list[str] | None = None) -> int:
    """``evtdsl build [--arch sm_90a] [--threads 256] MODULE...``"""
    parser = argparse.ArgumentParser(prog="evtdsl build", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(build_main())
