"""The Python-facing ``StreamReader`` and ``StreamWriter``.

Each is the Rust class first and asyncio's class second in the MRO: every method is served
from Rust, and ``isinstance(proc.stdout, asyncio.StreamReader)`` (and the static type) still
holds for code written against asyncio. asyncio's own ``__init__``/``__del__`` never run;
the state lives in Rust.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any

from . import _core

__all__ = ("StreamReader", "StreamWriter")

_DEFAULT_LIMIT = 2**16


class StreamReader(_core.StreamReader, asyncio.StreamReader):
    """asyncio's ``StreamReader``, served from a Rust buffer.

    Cancel safety of every read: bytes leave the buffer only when the call returns them, so a
    cancelled ``read*()`` consumes nothing.
    """

    # asyncio's StreamReaderProtocol reads this; asyncio fills it only in debug mode.
    _source_traceback = None

    def __init__(self, limit: int = _DEFAULT_LIMIT, loop: Any = None) -> None:
        # All state was set up by the Rust __new__ (with asyncio's checks and messages).
        pass


class StreamWriter(_core.StreamWriter, asyncio.StreamWriter):
    """asyncio's ``StreamWriter`` over the child's stdin pipe, served from Rust.

    Not constructible around arbitrary transports: rsubprocess creates it for ``stdin=PIPE``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def transport(self) -> Any:
        from ._transports import WritePipeTransport

        return WritePipeTransport(self)

    if sys.version_info >= (3, 11):

        def __del__(self, warnings: Any = warnings) -> None:
            # asyncio 3.11+: an unclosed writer warns when collected. Ours is only collected
            # once the loop dropped its pipe registration, i.e. the loop was closed.
            if not self.is_closing():
                warnings.warn("loop is closed", ResourceWarning)

    else:

        def __del__(self) -> None:
            pass


_core._register_stream_types(StreamReader, StreamWriter)
