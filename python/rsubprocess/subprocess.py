"""``asyncio.subprocess``, name for name, with the work done in ``rsubprocess._core``.

Spawning goes through :class:`subprocess.Popen` (looked up at call time) with pipes we create,
so every Popen keyword, error type, errno and filename is exactly the stdlib's.
"""

from __future__ import annotations

import asyncio
import atexit
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import warnings
import weakref
from asyncio import base_events, events, tasks
from typing import Any, Coroutine, Optional

from . import _compat, _core, _extras, _native
from ._transports import SubprocessTransport
from .streams import StreamReader, StreamWriter

__all__ = ("create_subprocess_exec", "create_subprocess_shell")

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

_DEFAULT_LIMIT = 2**16
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Process(_core.Process):
    """A child process, with asyncio's ``Process`` API.

    ``wait()`` returns as soon as the child exits, even when a grandchild keeps a pipe open.
    """

    stdin: Optional[StreamWriter]
    stdout: Optional[StreamReader]
    stderr: Optional[StreamReader]

    #: The command, as ``Popen.args``.
    args: Any = None
    _comm_started = False

    @property
    def _transport(self) -> SubprocessTransport:
        # De-facto private surface of asyncio's Process that third-party code uses.
        return SubprocessTransport(self)

    def wait(self, timeout: Optional[float] = None) -> Coroutine[Any, Any, int]:
        """Wait for the child to exit; return its returncode.

        Returns at exit, even if a grandchild keeps a pipe open. With ``timeout`` (seconds),
        raises :class:`subprocess.TimeoutExpired` if the child is still running then; the
        child keeps running. Cancel safety: cancelling stops waiting only.
        """
        if timeout is None:
            return _core.Process.wait(self)
        return self._wait_timeout(timeout)

    async def _wait_timeout(self, timeout: Any) -> int:
        t = _extras.check_timeout(timeout)
        if self.returncode is not None:
            return self.returncode
        try:
            return await asyncio.wait_for(_core.Process.wait(self), t)
        except asyncio.TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout) from None

    def communicate(
        self, input: Any = None, timeout: Optional[float] = None
    ) -> Coroutine[Any, Any, tuple[Optional[bytes], Optional[bytes]]]:
        """Send ``input``, read stdout and stderr to EOF, wait for exit: ``(stdout, stderr)``.

        With ``timeout``: :class:`subprocess.TimeoutExpired` whose ``stdout``/``stderr`` hold
        what was read so far; nothing is lost, and a later ``communicate()`` returns all the
        output, that part included (as ``Popen.communicate``). The child keeps running.

        Cancel safety: input is queued and stdin closed at the start, so cancelling does not
        un-send it; output read so far stays buffered for a later ``read()``/``communicate()``.
        """
        if timeout is None and not self._comm_started:
            return _core.Process.communicate(self, input)
        return self._communicate_timeout(input, timeout)

    async def _communicate_timeout(
        self, input: Any, timeout: Any
    ) -> tuple[Optional[bytes], Optional[bytes]]:
        t = _extras.check_timeout(timeout)
        if not self._comm_started:
            self._comm_started = True
            # Feed now, before any timer runs, so even timeout=0 sends the input.
            if input is not None and self.stdin is None and not _compat.COMMUNICATE_CLOSES_STDIN:
                raise AttributeError("'NoneType' object has no attribute 'write'")
            if self.stdin is not None and (input is not None or _compat.COMMUNICATE_CLOSES_STDIN):
                if input is not None:
                    self.stdin.write(input)
                self.stdin.close()
        elif input is not None:
            raise ValueError("Cannot send input after starting communication")
        inner = _core.Process.communicate(self, None)
        if t is None:
            return await inner
        try:
            return await asyncio.wait_for(inner, t)
        except asyncio.TimeoutError:
            raise subprocess.TimeoutExpired(
                self.args, timeout, output=_unread(self.stdout), stderr=_unread(self.stderr)
            ) from None

    async def __aenter__(self) -> Process:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Normal exit: close the pipes and wait (as ``Popen.__exit__``). Exception or
        cancellation: kill the child and its descendants, reap, re-raise."""
        if exc_type is None:
            try:
                for r in (self.stdout, self.stderr):
                    if r is not None:
                        r._pipe_close()
                if self.stdin is not None:
                    self.stdin.close()
                await self.wait()
                return
            except BaseException:
                await self._kill_and_reap()
                raise
        await self._kill_and_reap()

    async def _kill_and_reap(self) -> None:
        if self.returncode is None:
            self.kill_tree(signal.SIGKILL)
        # SIGKILL cannot be caught: this wait is short; shielded so a second cancel cannot
        # leave the child unreaped.
        await asyncio.shield(_core.Process.wait(self))


#: The longest a spawn or wait() waits in place of an idle loop's own sleep (seconds). An exec
#: lands 0.1-0.3 ms after the clone; this only bounds a slow one, or a child's run, which is
#: then awaited through the loop as before. Below the 0.1 s after which a debug loop warns
#: about a slow callback.
_IDLE_WAIT_MAX = 0.05
#: The shortest window worth waiting in (seconds). On the 2-vCPU KVM guest of issue 6 a ppoll
#: timeout under ~2 ms cost ~18 us more CPU than one of 5 ms or more (likely the hrtimer that
#: becomes the next event, programmed through a VM exit), which is about all the wait saves;
#: a loop whose next timer is that close (a heartbeat) takes its own trip instead.
_IDLE_WAIT_MIN = 0.005
_NOT_IDLE = (-1, 0)


def _idle_window(loop: Any) -> tuple[int, int]:
    """``(epoll fd, microseconds)`` for which asyncio's selector loop ``loop`` would sleep in
    its selector right now, capped at ``_IDLE_WAIT_MAX``: nothing ready to run, not stopping,
    no timer due sooner. Any fd the loop watches becoming ready makes the epoll fd readable,
    which ends a wait on it at once. ``(-1, 0)`` when the loop is busy, its next timer is due
    within ``_IDLE_WAIT_MIN``, or it does not show this (uvloop, other selectors)."""
    if not isinstance(loop, base_events.BaseEventLoop):
        return _NOT_IDLE
    try:
        if loop._ready or loop._stopping:  # type: ignore[attr-defined]
            return _NOT_IDLE
        selector = loop._selector  # type: ignore[attr-defined]
        timers = loop._scheduled  # type: ignore[attr-defined]
    except AttributeError:
        return _NOT_IDLE
    if type(selector) is not selectors.EpollSelector:
        return _NOT_IDLE
    window = _IDLE_WAIT_MAX
    if timers:
        # As _run_once counts a timer due: within the clock's resolution of now.
        due = timers[0]._when - loop.time() - loop._clock_resolution  # type: ignore[attr-defined]
        window = min(window, due)
    if window < _IDLE_WAIT_MIN:
        return _NOT_IDLE
    return selector.fileno(), int(window * 1e6)


# Looked up at each call, so a test or benchmark can replace _idle_window.
_core._register_idle_window(lambda loop: _idle_window(loop))


def _unread(reader: Optional[StreamReader]) -> Optional[bytes]:
    return None if reader is None else bytes(reader._buffer)


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


def _reader_limit(limit: Any, piped: bool) -> int:
    """The limit for the stdout/stderr readers, checked before anything is spawned."""
    if not piped:
        return _DEFAULT_LIMIT  # asyncio never looks at it without a reader either
    # asyncio raises this inside connection_made() and returns a Process without streams;
    # raising it here, before anything is spawned, is the documented difference.
    return _core.reader_limit(limit)


def _pipesize(kwds: dict[str, Any]) -> int:
    """``pipesize`` for the pipes we create; a bad value is left for Popen to reject."""
    size = kwds.get("pipesize", -1) if _compat.HAS_PIPESIZE else -1
    return size if isinstance(size, int) else -1


#: Every Process whose child may still run, for the atexit hook (registered on first use).
_live: weakref.WeakSet[Process] = weakref.WeakSet()


def _track(proc: Process) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_reap_at_exit)
        _atexit_registered = True
    _live.add(proc)


_atexit_registered = False


def _reap_at_exit() -> None:
    # While the interpreter is still whole: in finalization no warning could be shown.
    for proc in sorted(_live, key=lambda p: p.pid):
        if proc._kill_now():
            warnings.warn(
                f"subprocess {proc.pid} was still running at interpreter exit; "
                "killed and reaped it",
                ResourceWarning,
                stacklevel=1,
            )
    # Exit-watch threads (no pidfd polling) must be out of Python before finalization.
    _core._join_watchers(1.0)


def _adopt(
    loop: Any, popen: Any, pid: int, parent: list[Optional[int]], limit: int, pidfd: Any, args: Any
) -> Process:
    """The Process for a running child. If anything fails here, the child is killed and
    reaped and every fd closed before the exception propagates: no zombie, no leak."""
    proc = None
    try:
        # Owns the fds from here on, also when it raises.
        proc = Process(loop, popen, pid, parent[0], parent[1], parent[2], limit, pidfd)
        proc._start()
        proc.args = args  # as Popen.args: the arguments as given
        _track(proc)
    except BaseException:
        if proc is not None:
            proc._kill_now()
        elif popen is not None:
            popen.kill()
            popen.wait()
        else:
            # Not reaped yet, so the pid cannot have been recycled.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    return proc


async def _create(
    loop: Any,
    args: Any,
    shell: bool,
    stdin: Any,
    stdout: Any,
    stderr: Any,
    limit: Any,
    kwds: dict[str, Any],
) -> Process:
    limit = _reader_limit(limit, stdout == PIPE or stderr == PIPE)
    pdeathsig = _extras.check_pdeathsig(kwds.pop("pdeathsig", None))
    rlimits = _extras.check_rlimits(kwds.pop("rlimits", None))
    parent: list[Optional[int]] = [None, None, None]
    child_fds: list[int] = []
    job = popen = None
    try:
        pipesize = _pipesize(kwds)
        stdio = [stdin, stdout, stderr]
        for i in range(3):
            if stdio[i] == PIPE:
                r, w = os.pipe()  # O_CLOEXEC on both ends
                parent[i], stdio[i] = (w, r) if i == 0 else (r, w)
                child_fds.append(stdio[i])
                if pipesize > 0:
                    fcntl.fcntl(r, F_SETPIPE_SZ, pipesize)
        if _native.native_eligible(kwds):
            job = _native.start_native(
                args, shell, (stdio[0], stdio[1], stdio[2]), kwds, pdeathsig, rlimits
            )
        if job is None:
            if pdeathsig or rlimits:
                kwds["preexec_fn"] = _extras.setup_preexec(
                    pdeathsig, rlimits, kwds.get("preexec_fn")
                )
            popen = subprocess.Popen(
                args,
                shell=shell,
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                universal_newlines=False,
                bufsize=0,
                **kwds,
            )
    except BaseException:
        for fd in parent + child_fds:
            if fd is not None:
                os.close(fd)
        raise
    for fd in child_fds:
        os.close(fd)
    if job is not None:
        try:
            await job.wait_exec(loop)
        except BaseException:
            # Exec failed (the child is reaped already), or we were cancelled: no orphan.
            job._kill_and_reap()
            for fd in parent:
                if fd is not None:
                    os.close(fd)
            raise
        return _adopt(loop, None, job.pid, parent, limit, job.take_pidfd(), args)
    assert popen is not None
    return await _settle(_adopt(loop, popen, popen.pid, parent, limit, None, popen.args))


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
        return await _create(loop, cmd, True, stdin, stdout, stderr, limit, kwds)

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
        return await _create(loop, (program, *args), False, stdin, stdout, stderr, limit, kwds)

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
        return await _create(loop, cmd, True, stdin, stdout, stderr, limit, kwds)

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
        return await _create(loop, (program, *args), False, stdin, stdout, stderr, limit, kwds)
