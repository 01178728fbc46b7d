"""The Rust-backed ``StreamReader`` and ``StreamWriter``."""

from __future__ import annotations

from ._core import StreamReader, StreamWriter

__all__ = ("StreamReader", "StreamWriter")
