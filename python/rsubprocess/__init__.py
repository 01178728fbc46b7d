"""rsubprocess: ``asyncio.subprocess`` reimplemented in Rust, as a drop-in replacement."""

from ._patch import install, installed, uninstall
from ._run import run
from .streams import StreamReader, StreamWriter
from .subprocess import (
    DEVNULL,
    PIPE,
    STDOUT,
    Process,
    create_subprocess_exec,
    create_subprocess_shell,
)

__version__ = "0.1.0"

__all__ = (
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "Process",
    "StreamReader",
    "StreamWriter",
    "create_subprocess_exec",
    "create_subprocess_shell",
    "install",
    "installed",
    "run",
    "uninstall",
)
