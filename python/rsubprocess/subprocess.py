"""``asyncio.subprocess``, name for name, with the work done in ``rsubprocess._core``.

Spawning goes through :class:`subprocess.Popen` (looked up at call time) with pipes we create,
so every Popen keyword, error type, errno and filename is exactly the stdlib's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from asyncio import events, tasks
from typing import Any, Optional

from . import _compat, _core
from ._transports import SubprocessTransport
from .streams import StreamReader, StreamWriter

__all__ = ("create_subprocess_exec", "create_subprocess_shell")

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

_DEFAULT_LIMIT = 2**16


class Process(_core.Process):
    """A child process, with asyncio's ``Process`` API.

    ``wait()`` returns as soon as the child exits, even when a grandchild keeps a pipe open.
    """

    stdin: Optional[StreamWriter]
    stdout: Optional[StreamReader]
    stderr: Optional[StreamReader]

    @property
    def _transport(self) -> SubprocessTransport:
        # De-facto private surface of asyncio's Process that third-party code uses.
        return SubprocessTransport(self)


def _check_exec_kwargs(kwds: dict[str, Any]) -> None:
    # asyncio's BaseEventLoop.subprocess_exec checks, in its order and with its messages.
    if kwds.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if kwds.pop("shell", False):
        raise ValueError("shell must be False")
    _check_common(kwds)


def _check_shell_kwargs(cmd: Any, kwds: dict[str, Any]) -> None:
    if not isinstance(cmd, (bytes, str)):
        raise ValueError("cmd must be a string")
    if kwds.pop("universal_newlines", False):
        raise ValueError("universal_newlines must be False")
    if not kwds.pop("shell", True):
        raise ValueError("shell must be True")
    _check_common(kwds)


def _check_common(kwds: dict[str, Any]) -> None:
    if kwds.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    if kwds.pop("text", None):
        raise ValueError("text must be False")
    if kwds.pop("encoding", None) is not None:
        raise ValueError("encoding must be None")
    if kwds.pop("errors", None) is not None:
        raise ValueError("errors must be None")
    if "loop" in kwds:
        raise TypeError(_compat.LOOP_TYPEERROR)


def _spawn(
    loop: Any,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    limit: int,
    kwds: dict[str, Any],
) -> Process:
    if limit <= 0 and (stdout == PIPE or stderr == PIPE):
        # asyncio raises this inside connection_made() and returns a Process without streams;
        # raising it here, before anything is spawned, is the documented difference.
        raise ValueError("Limit cannot be <= 0")
    parent_fds: list[int] = []
    child_fds: list[int] = []
    try:
        pipesize = kwds.get("pipesize", -1) if _compat.HAS_PIPESIZE else -1

        def pipe(parent_reads: bool) -> int:
            r, w = os.pipe()  # O_CLOEXEC on both ends
            parent, child = (r, w) if parent_reads else (w, r)
            parent_fds.append(parent)
            child_fds.append(child)
            if pipesize is not None and pipesize > 0:
                import fcntl

                fcntl.fcntl(parent, 1031, pipesize)  # F_SETPIPE_SZ
            return child

        stdin_fd = stdout_fd = stderr_fd = None
        if stdin == PIPE:
            stdin = pipe(parent_reads=False)
            stdin_fd = parent_fds[-1]
        if stdout == PIPE:
            stdout = pipe(parent_reads=True)
            stdout_fd = parent_fds[-1]
        if stderr == PIPE:
            stderr = pipe(parent_reads=True)
            stderr_fd = parent_fds[-1]
        popen = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=0,
            **kwds,
        )
    except BaseException:
        for fd in parent_fds + child_fds:
            os.close(fd)
        raise
    for fd in child_fds:
        os.close(fd)
    proc = Process(loop, popen, popen.pid, stdin_fd, stdout_fd, stderr_fd, limit)
    proc._start()
    return proc


async def _settle(proc: Process) -> Process:
    """One loop turn after spawning, where asyncio connects its pipes.

    A task cancelled here kills and reaps the child before ``CancelledError`` propagates,
    as asyncio's ``_make_subprocess_transport`` does, so no orphan is left behind.
    """
    try:
        await tasks.sleep(0)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        raise
    return proc


def _loop_for(loop: Any) -> Any:
    if loop is None:
        return events.get_event_loop() if _compat.ACCEPTS_LOOP_KWARG else events.get_running_loop()
    warnings.warn(_compat.LOOP_DEPRECATION, DeprecationWarning, stacklevel=3)
    return loop


if sys.version_info < (3, 10):  # _compat.ACCEPTS_LOOP_KWARG, spelled for mypy

    async def create_subprocess_shell(
        cmd: Any,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        loop: Any = None,
        limit: int = _DEFAULT_LIMIT,
        **kwds: Any,
    ) -> Process:
        loop = _loop_for(loop)
        _check_shell_kwargs(cmd, kwds)
        return await _settle(_spawn(loop, cmd, True, stdin, stdout, stderr, limit, kwds))

    async def create_subprocess_exec(
        program: Any,
        *args: Any,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        loop: Any = None,
        limit: int = _DEFAULT_LIMIT,
        **kwds: Any,
    ) -> Process:
        loop = _loop_for(loop)
        _check_exec_kwargs(kwds)
        return await _settle(
            _spawn(loop, (program, *args), False, stdin, stdout, stderr, limit, kwds)
        )

else:

    async def create_subprocess_shell(
        cmd: Any,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        limit: int = _DEFAULT_LIMIT,
        **kwds: Any,
    ) -> Process:
        """Run ``cmd`` through the shell; asyncio's ``create_subprocess_shell``.

        Cancel safety: a task cancelled before its first step spawns nothing; cancelled
        after the spawn, it kills and reaps the child before ``CancelledError`` propagates.
        """
        loop = events.get_running_loop()
        _check_shell_kwargs(cmd, kwds)
        return await _settle(_spawn(loop, cmd, True, stdin, stdout, stderr, limit, kwds))

    async def create_subprocess_exec(
        program: Any,
        *args: Any,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        limit: int = _DEFAULT_LIMIT,
        **kwds: Any,
    ) -> Process:
        """Run ``program`` with ``args``; asyncio's ``create_subprocess_exec``.

        Cancel safety: as for :func:`create_subprocess_shell`.
        """
        loop = events.get_running_loop()
        _check_exec_kwargs(kwds)
        return await _settle(
            _spawn(loop, (program, *args), False, stdin, stdout, stderr, limit, kwds)
        )
