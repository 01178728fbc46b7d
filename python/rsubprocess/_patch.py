"""``install()`` / ``uninstall()``: route asyncio's subprocess entry points to rsubprocess.

Only ``asyncio.create_subprocess_exec/shell`` and their ``asyncio.subprocess`` twins are
swapped; ``asyncio.subprocess.Process`` and the event-loop policy are never touched.
"""

from __future__ import annotations

import asyncio
import asyncio.subprocess as _aio_subprocess
import contextlib
from typing import Any, Iterator

from . import subprocess as _ours

_NAMES = ("create_subprocess_exec", "create_subprocess_shell")
_saved: dict[tuple[int, str], Any] = {}


def install() -> None:
    """Make asyncio's ``create_subprocess_exec/shell`` rsubprocess's. Idempotent."""
    for mod in (asyncio, _aio_subprocess):
        for name in _NAMES:
            key = (id(mod), name)
            if key not in _saved:
                _saved[key] = getattr(mod, name)
            setattr(mod, name, getattr(_ours, name))


def uninstall() -> None:
    """Restore asyncio's own entry points. Idempotent."""
    for mod in (asyncio, _aio_subprocess):
        for name in _NAMES:
            original = _saved.pop((id(mod), name), None)
            if original is not None:
                setattr(mod, name, original)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """``with rsubprocess.installed(): ...`` — install for the block, then restore."""
    already = bool(_saved)
    install()
    try:
        yield
    finally:
        if not already:
            uninstall()
