"""User-facing errors: each names the user's file:line, shows the source line with a caret, and hides
evtdsl's own frames from the traceback unless ``EVTDSL_DEBUG=1``."""
from __future__ import annotations

import functools
import linecache
import types
from dataclasses import dataclass
from pathlib import Path

from . import knobs

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
# User-level code shipped with evtdsl: its frames stay in tracebacks like any user's.
_USER_DIRS = tuple(
    str(p)
    for p in (
        Path(__file__).resolve().parent / "library",
        Path(__file__).resolve().parent.parent / "library",
        Path(__file__).resolve().parent / "examples",
    )
)


@dataclass(frozen=True)
class SourceLoc:
    """A place in the user's Python source: file, 1-based line, 0-based column."""

    file: str
    line: int
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        text = linecache.getline(self.file, self.line).rstrip("\n")
        if not text:
            return ""
        stripped = text.lstrip()
        indent = len(text) - len(stripped)
        caret = " " * max(self.col - indent, 0) + "^"
        return f"    {stripped}\n    {caret}"


class EvtError(Exception):
    """Base class of every error evtdsl raises about a user's program."""

    def __init__(self, message: str, loc: SourceLoc | None = None):
        self.message = message
        self.loc = loc
        super().__init__(self._format())

    def _format(self) -> str:
        if self.loc is None:
            return self.message
        where = f"{self.loc.file}:{self.loc.line}"
        excerpt = self.loc.excerpt()
        return f"{where}: {self.message}" + (f"\n{excerpt}" if excerpt else "")


class UnsupportedSyntaxError(EvtError):
    """A Python construct that task code cannot contain."""


class TypeMismatchError(EvtError):
    """Shapes or dtypes that do not fit together."""


class EdgeMapError(EvtError):
    """A wait/notify map whose arity or range does not fit its task or event tensor."""


class EventCountError(EvtError):
    """An event's wait count differs from the number of notifications its notifiers send."""


class DeadlockError(EvtError):
    """Tasks wait on events that can never fire (a cycle, or notifications that never come)."""


class RaceError(EvtError):
    """Two tasks touch one region, at least one writing, and no event orders them."""


class UninitializedReadError(EvtError):
    """A task reads output memory that no task has written."""


class ArgumentError(EvtError, TypeError):
    """A megakernel was called with arguments of the wrong shape, dtype, device or stride."""


class DeviceTimeoutError(EvtError, RuntimeError):
    """A GPU task waited longer than the bound on an event."""


def _is_internal(filename: str) -> bool:
    return filename.startswith(_PACKAGE_DIR) and not filename.startswith(_USER_DIRS)


def _strip_internal_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    frames = []
    while tb is not None:
        if not _is_internal(tb.tb_frame.f_code.co_filename):
            frames.append(tb)
        tb = tb.tb_next
    new_tb = None
    for t in reversed(frames):
        new_tb = types.TracebackType(new_tb, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return new_tb


def user_facing(fn):
    """Decorate a public entry point: EvtErrors leave it with evtdsl's frames removed from the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EvtError as e:
            if knobs.DEBUG.get():
                raise
            raise e.with_traceback(_strip_internal_frames(e.__traceback__)) from None

    return wrapper


def caller_loc(skip_internal: bool = True) -> SourceLoc | None:
    """The innermost frame outside evtdsl: where the user's call came from."""
    import sys

    f = sys._getframe(1)
    while f is not None and skip_internal and _is_internal(f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return None
    col = 0
    try:
        pos = list(f.f_code.co_positions())[f.f_lasti // 2]
        if pos[0] == f.f_lineno and pos[2] is not None:
            col = pos[2]
    except (IndexError, AttributeError):
        pass
    return SourceLoc(f.f_code.co_filename, f.f_lineno, col)
