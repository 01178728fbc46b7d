"""Behaviour of create_subprocess_exec/shell and Process, on every implementation x loop.

Each test runs four times: ``[asyncio-asyncio]`` is CPython's own behaviour (the reference),
``[asyncio-uvloop]`` is asyncio's Process class over uvloop's transports (uvloop's own deviations
from CPython are spelled out where they matter), and ``[rsubprocess-*]`` must behave like the
reference except for DESIGN.md 1b's deliberate differences (tests marked ``difference``).
Where asyncio's result depends on the version, the expected value is written per version.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
import warnings
from typing import Any

import pytest

from tests.helpers import (
    PIPE_MAX_SIZE,
    PY,
    asyncio_reference,
    behaviour,
    children,
    finish,
    format_contexts,
    in_forked_child,
    open_fds,
    proc_stat,
    run_on_new_loop,
    spawn_outcome,
    swallow_unraisable,
    uvloop_leftovers,
    wait_until,
)

SH = shutil.which("sh")
CAT = shutil.which("cat")
TRUE = shutil.which("true")
SLEEP = shutil.which("sleep")
assert SH and CAT and TRUE and SLEEP


class FakePath:
    """os.PathLike that is not a pathlib.Path (test.support.os_helper.FakePath)."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def __fspath__(self) -> Any:
        return self.path


@functools.cache
def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


# uvloop bug: write() on a pipe transport closed by the peer raises RuntimeError ("unable to
# perform operation on <WriteUnixTransport closed=True ...>; the handler is closed") instead of
# dropping the data, and asyncio's communicate() only ignores BrokenPipe/ConnectionReset. It only
# happens when the child has exited before the write, hence not strict.
UVLOOP_WRITE_AFTER_CLOSE = pytest.mark.xfail(
    raises=RuntimeError, strict=False, reason="uvloop: write() after peer close raises RuntimeError"
)


# --- spawning and return codes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "rc"),
    [((TRUE,), 0), (("false",), 1), ((SH, "-c", "exit 3"), 3), ((SH, "-c", "exit 255"), 255)],
    ids=["true", "false", "exit3", "exit255"],
)
def test_exec_returncode(impl, run, argv, rc):
    async def main():
        proc = await impl.create_subprocess_exec(*argv)
        assert isinstance(proc, impl.Process)
        assert await proc.wait() == rc
        assert proc.returncode == rc

    run(main)


@pytest.mark.parametrize("cmd", ["exit 7", b"exit 7"], ids=["str", "bytes"])
def test_shell_exit_code(impl, run, cmd):
    async def main():
        proc = await impl.create_subprocess_shell(cmd)
        assert await proc.wait() == 7
        assert proc.returncode == 7

    run(main)


def test_shell_pid_is_the_shell(impl, run):
    async def main():
        proc = await impl.create_subprocess_shell("echo $$", stdout=impl.PIPE)
        out, err = await proc.communicate()
        assert err is None
        assert int(out) == proc.pid
        assert proc.returncode == 0

    run(main)


def test_exec_pid_and_repr(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(SH, "-c", "echo $$", stdout=impl.PIPE)
        assert isinstance(proc.pid, int)
        assert proc.pid > 0
        assert repr(proc) == f"<Process {proc.pid}>"
        assert proc.returncode is None or proc.returncode == 0
        out, _ = await proc.communicate()
        assert int(out) == proc.pid
        # No returncode in the repr, before or after exit.
        assert repr(proc) == f"<Process {proc.pid}>"

    run(main)


_AUDITED: list[tuple[Any, ...]] = []
_AUDITING = threading.local()


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen" and getattr(_AUDITING, "on", False):
        _AUDITED.append(args)


sys.addaudithook(_audit_hook)  # hooks cannot be removed: it records only inside audited()


@contextlib.contextmanager
def audited():
    _AUDITED.clear()
    _AUDITING.on = True
    try:
        yield _AUDITED
    finally:
        _AUDITING.on = False


@pytest.mark.parametrize(
    ("shell", "cmd", "kwds", "event"),
    [
        (False, (TRUE,), {}, (TRUE, [TRUE], None, None)),
        (False, (TRUE, "a", b"b"), {}, (TRUE, [TRUE, "a", b"b"], None, None)),
        (False, ("true",), {}, ("true", ["true"], None, None)),
        (False, (TRUE, "\udcff"), {}, (TRUE, [TRUE, "\udcff"], None, None)),
        (True, "exit 0", {}, ("/bin/sh", ["/bin/sh", "-c", "exit 0"], None, None)),
        (True, b"exit 0", {}, ("/bin/sh", ["/bin/sh", "-c", b"exit 0"], None, None)),
        (False, (TRUE,), {"cwd": "/"}, (TRUE, [TRUE], "/", None)),
        (False, (TRUE,), {"env": {"A": "b"}}, (TRUE, [TRUE], None, {"A": "b"})),
    ],
    ids=["abs", "args", "path-search", "surrogateescape", "shell", "shell-bytes", "cwd", "env"],
)
def test_popen_audit_event(impl, run, loop_kind, shell, cmd, kwds, event):
    """Popen's ``subprocess.Popen`` audit event, once per spawn, with Popen's arguments,
    including on rsubprocess's paths that do not go through Popen."""
    expected = [event]
    if behaviour(impl, loop_kind) == "uvloop":
        expected = []  # uvloop spawns with libuv, not Popen: no audit event at all

    async def main():
        for _ in range(3):  # the first native spawn and the later ones take different paths
            with audited() as events:
                if shell:
                    proc = await impl.create_subprocess_shell(cmd, **kwds)
                else:
                    proc = await impl.create_subprocess_exec(*cmd, **kwds)
                assert await proc.wait() == 0
            assert events == expected

    run(main)


@pytest.mark.parametrize(
    ("argv", "exc"),
    [
        ((TRUE, "\ud800"), UnicodeEncodeError),
        (("tr\ud800ue",), UnicodeEncodeError),
        ((TRUE, "a\0b"), ValueError),
        ((b"/bin/tr\0ue",), ValueError),
    ],
    ids=["lone-surrogate-arg", "lone-surrogate-program", "nul-arg", "nul-bytes-program"],
)
def test_plain_arguments_that_fail(impl, run, loop_kind, argv, exc):
    """Arguments that look plain (str or bytes, no keywords) but that Popen rejects: the same
    exception, no child, and the next plain spawn still works."""
    uvloop_runs_it = behaviour(impl, loop_kind) == "uvloop" and exc is ValueError

    async def main():
        for _ in range(2):
            before = children()
            if uvloop_runs_it:
                # uvloop: no error; the command runs, cut at the NUL.
                proc = await impl.create_subprocess_exec(*argv)
                await proc.wait()
                continue
            with pytest.raises(exc):
                await impl.create_subprocess_exec(*argv)
            assert children() == before
            proc = await impl.create_subprocess_exec(TRUE)
            assert await proc.wait() == 0

    run(main)


@pytest.mark.parametrize("where", ["below-limit", "beyond-limit"])
@pytest.mark.parametrize("shell", [False, True], ids=["exec", "shell"])
def test_plain_call_with_a_closed_fd(impl, run, loop_kind, where, shell):
    """stdin a number that is no open fd, and no keyword: EBADF. Where CPython takes
    posix_spawn (3.13+ with closefrom), glibc refuses an fd at or above the open-files limit
    in the parent (no filename) and the child's dup2 fails on one below it (the program's
    name); the fork path fails in the child either way, with no filename."""
    limit = os.sysconf("SC_OPEN_MAX")
    fd = limit - 1 if where == "below-limit" else limit + 10
    assert fd not in open_fds()
    program = "/bin/sh" if shell else TRUE  # Popen's shell, not the one on PATH
    posix_spawn = PY >= (3, 13) and getattr(subprocess, "_HAVE_POSIX_SPAWN_CLOSEFROM", False)
    filename = program if posix_spawn and where == "below-limit" else None

    async def main():
        for _ in range(2):  # the first native spawn and the later ones take different paths
            with pytest.raises(OSError) as info:
                if shell:
                    await impl.create_subprocess_shell("exit 0", stdin=fd)
                else:
                    await impl.create_subprocess_exec(TRUE, stdin=fd)
            if behaviour(impl, loop_kind) == "uvloop":
                continue  # uvloop: its own spawn's errors, not Popen's
            assert info.value.errno == errno.EBADF
            assert info.value.filename == filename

    run(main)


def test_pathlike_program_and_args(impl, run, loop_kind, tmp_path):
    data = tmp_path / "data.txt"
    data.write_bytes(b"path-like\n")

    variants = [
        (pathlib.Path(CAT), data),
        (FakePath(CAT), FakePath(str(data))),
        (os.fsencode(CAT), os.fsencode(data)),
        (FakePath(os.fsencode(CAT)), FakePath(os.fsencode(data))),
    ]
    if behaviour(impl, loop_kind) == "uvloop":
        variants.pop()  # uvloop: "TypeError: Expected bytes, got FakePath"

    async def main():
        outputs = []
        for program, arg in variants:
            proc = await impl.create_subprocess_exec(program, arg, stdout=impl.PIPE)
            outputs.append(await proc.communicate())
            assert proc.returncode == 0
        assert outputs == [(b"path-like\n", None)] * len(variants)

    run(main)


@pytest.mark.parametrize(
    ("method", "sig"),
    [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM), ("send_signal", signal.SIGUSR1)],
)
def test_signal_returncode(impl, run, method, sig):
    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30")
        assert proc.returncode is None
        if method == "send_signal":
            proc.send_signal(sig)
        else:
            getattr(proc, method)()
        assert await proc.wait() == -sig
        assert proc.returncode == -sig

    run(main)


def test_send_signal_after_sync_readiness(impl, run):
    # CPython's test_send_signal: signal a child known to be running (it printed a line).
    async def main():
        proc = await impl.create_subprocess_exec(
            SH, "-c", "echo sleeping; exec sleep 30", stdout=impl.PIPE
        )
        assert await proc.stdout.readline() == b"sleeping\n"
        proc.send_signal(signal.SIGHUP)
        assert await proc.wait() == -signal.SIGHUP
        assert await proc.stdout.read() == b""

    old = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        run(main)
    finally:
        signal.signal(signal.SIGHUP, old)


def test_kill_shell_with_pipe(impl, run):
    # CPython's test_kill_issue43884 (creationflags=0 accepted), without its 1 s sleep.
    async def main():
        proc = await impl.create_subprocess_shell(
            "sleep 0.05; sleep 30", stdout=impl.PIPE, creationflags=0, start_new_session=True
        )
        await asyncio.sleep(0.2)
        proc.kill()
        try:
            for _ in range(500):
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
            assert proc.returncode == -signal.SIGKILL
        finally:
            # "sleep 30" still holds stdout (CPython 3.11+'s wait() would wait for it).
            killpg(proc.pid)
            assert await proc.stdout.read() == b""
        assert await proc.wait() == -signal.SIGKILL

    run(main)


# --- standard streams -------------------------------------------------------------------------


def test_stdio_attributes(impl, run):
    async def main():
        kinds = {"None": None, "PIPE": impl.PIPE, "DEVNULL": impl.DEVNULL}
        for stream in ("stdin", "stdout", "stderr"):
            for label, value in kinds.items():
                proc = await impl.create_subprocess_exec(TRUE, **{stream: value})
                for other in ("stdin", "stdout", "stderr"):
                    attr = getattr(proc, other)
                    if other == stream and label == "PIPE":
                        cls = impl.StreamWriter if other == "stdin" else impl.StreamReader
                        assert isinstance(attr, cls), (stream, label, attr)
                    else:
                        assert attr is None, (stream, label, other, attr)
                assert await proc.communicate() == (
                    b"" if stream == "stdout" and label == "PIPE" else None,
                    b"" if stream == "stderr" and label == "PIPE" else None,
                )
                assert proc.returncode == 0

    run(main)


def test_devnull_gives_none_in_communicate(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(
            CAT, stdin=impl.DEVNULL, stdout=impl.PIPE, stderr=impl.DEVNULL
        )
        assert await proc.communicate() == (b"", None)
        proc = await impl.create_subprocess_shell(
            "echo out; echo err >&2", stdout=impl.DEVNULL, stderr=impl.PIPE
        )
        assert proc.stdout is None
        assert await proc.communicate() == (None, b"err\n")
        assert proc.returncode == 0

    run(main)


def test_stderr_to_stdout(impl, run):
    async def main():
        proc = await impl.create_subprocess_shell(
            "echo out; echo err >&2; echo out2", stdout=impl.PIPE, stderr=impl.STDOUT
        )
        assert proc.stderr is None
        assert await proc.communicate() == (b"out\nerr\nout2\n", None)

    run(main)


def test_int_fd_stdio(impl, run):
    async def main():
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        try:
            os.write(in_w, b"via fd\n")
            os.close(in_w)
            in_w = -1
            proc = await impl.create_subprocess_exec(CAT, stdin=in_r, stdout=out_w)
            assert proc.stdin is None
            assert proc.stdout is None
            assert await proc.wait() == 0
            os.close(out_w)
            out_w = -1
            assert os.read(out_r, 100) == b"via fd\n"
        finally:
            for fd in (out_r, out_w, in_r, in_w):
                if fd >= 0:
                    os.close(fd)

    run(main)


def test_file_object_stdio(impl, run, tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"file object\n")
    dst = tmp_path / "out"

    async def main():
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            proc = await impl.create_subprocess_exec(CAT, stdin=fin, stdout=fout)
            assert await proc.wait() == 0
        assert dst.read_bytes() == b"file object\n"

    run(main)


# --- communicate() --------------------------------------------------------------------------


# Each side of the first bulk buffer (64 KiB), of the window faulted in ahead of a bulk read
# (a quarter of L2: 256 KiB where L2 is 1 MiB) and of the 1 MiB pipe.
SIZES = [0, 1, 65535, 65536, 65537, 2 * 65536 - 1, 2 * 65536 + 1]
SIZES += [(1 << 18) - 1, 1 << 18, (1 << 18) + 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 16 << 20]


@pytest.mark.parametrize("size", SIZES)
def test_communicate_through_cat(impl, run, size):
    data = random_bytes(size)

    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        out, err = await proc.communicate(data)
        assert err is None
        assert len(out) == size
        assert out == data
        assert proc.returncode == 0

    run(main, timeout=60)


def test_communicate_bytearray_and_memoryview(impl, run):
    async def main():
        for data in (bytearray(b"bytearray"), memoryview(b"memoryview")):
            proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
            assert await proc.communicate(data) == (bytes(data), None)

    run(main)


def test_communicate_none_input_stdin_pipe(impl, run):
    """3.12+ close stdin when input is None; 3.9-3.11 leave it open, so `cat` never ends."""

    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        if PY >= (3, 12):
            assert await proc.communicate() == (b"", None)
            assert proc.returncode == 0
            return
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(), 0.5)
        assert proc.returncode is None  # cat still waits for input
        assert not proc.stdin.is_closing()
        proc.stdin.write(b"late")
        proc.stdin.close()
        assert await proc.stdout.read() == b"late"
        assert await proc.wait() == 0

    run(main)


def test_communicate_input_without_stdin_pipe(impl, run):
    """3.9-3.11: AttributeError from `None.write`; 3.12+: input ignored."""

    async def main():
        proc = await impl.create_subprocess_exec(TRUE, stdout=impl.PIPE)
        if PY >= (3, 12):
            assert await proc.communicate(b"ignored") == (b"", None)
        else:
            with pytest.raises(AttributeError) as info:
                await proc.communicate(b"ignored")
            assert str(info.value) == "'NoneType' object has no attribute 'write'"
            # gather() left the stdout reader it started running: let it reach EOF. (No kill():
            # before 3.13 its poll() could steal the exit status, gh-87744.)
            for _ in range(500):
                if proc.stdout.at_eof():
                    break
                await asyncio.sleep(0.01)
            assert proc.stdout.at_eof()
            await asyncio.sleep(0.05)  # the orphaned reader task finishes
            assert await proc.wait() == 0
        assert proc.returncode == 0

    run(main)


def test_communicate_empty_input(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(
            CAT, stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE
        )
        assert await proc.communicate(b"") == (b"", b"")
        assert proc.returncode == 0

    run(main)


def test_communicate_stderr_first_no_deadlock(impl, run):
    # 3 MB to stderr before anything goes to stdout: reading stdout alone would deadlock.
    async def main():
        proc = await impl.create_subprocess_shell(
            "head -c 3000000 /dev/zero >&2; head -c 3000000 /dev/zero | tr '\\0' 'o'",
            stdout=impl.PIPE,
            stderr=impl.PIPE,
        )
        out, err = await proc.communicate()
        assert out == b"o" * 3000000
        assert err == b"\0" * 3000000
        assert proc.returncode == 0

    run(main)


# A tee to both stdout and stderr that, unlike `tee /dev/stderr`, also works when the pipes
# are socketpairs (uvloop).
PY_TEE = """
import sys
read, out, err = sys.stdin.buffer.read1, sys.stdout.buffer, sys.stderr.buffer
while True:
    data = read(65536)
    if not data:
        break
    out.write(data)
    out.flush()
    err.write(data)
    err.flush()
"""


def test_communicate_input_and_two_outputs_concurrently(impl, run):
    data = random_bytes(3 << 20)

    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable, "-c", PY_TEE, stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE
        )
        out, err = await proc.communicate(data)
        assert out == data
        assert err == data
        assert proc.returncode == 0

    run(main)


@pytest.mark.parametrize("stdout", ["PIPE", "None"])
def test_communicate_ignores_broken_pipe(impl, run, loop_kind, request, stdout):
    # The child exits without reading 10 MiB of input: communicate() must swallow the EPIPE.
    if behaviour(impl, loop_kind) == "uvloop":
        request.applymarker(UVLOOP_WRITE_AFTER_CLOSE)

    async def main():
        proc = await impl.create_subprocess_shell(
            "echo done",
            stdin=impl.PIPE,
            stdout=impl.PIPE if stdout == "PIPE" else impl.DEVNULL,
        )
        out, err = await proc.communicate(b"x" * (10 << 20))
        assert out == (b"done\n" if stdout == "PIPE" else None)
        assert err is None
        assert proc.returncode == 0
        # Collect the stdin pipe's close error: CPython 3.9/3.10 otherwise log "Future exception
        # was never retrieved" for it (spec V8), through the loop's exception handler.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await proc.stdin.wait_closed()

    run(main)


def test_second_communicate(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        assert await proc.communicate(b"once") == (b"once", None)
        assert await proc.communicate() == (b"", None)
        assert proc.returncode == 0

    run(main)


def test_communicate_after_exit_returns_buffered_output(impl, run):
    async def main():
        proc = await impl.create_subprocess_shell(
            "echo out; echo err >&2", stdout=impl.PIPE, stderr=impl.PIPE
        )
        assert await proc.wait() == 0
        assert await proc.communicate() == (b"out\n", b"err\n")

    run(main)


def test_communicate_concurrent_processes(impl, run):
    # CPython's test_subprocess_communicate_stdout (gh-100133).
    async def one(i):
        proc = await impl.create_subprocess_exec("echo", f"foo{i}", stdout=impl.PIPE)
        out, _ = await proc.communicate()
        return out.decode().strip()

    async def main():
        assert await asyncio.gather(*(one(i) for i in range(20))) == [f"foo{i}" for i in range(20)]

    run(main)


# --- coroutine-shaped awaitables (DESIGN 1.5) ------------------------------------------------


def test_awaitables_are_coroutines(impl, run):
    """Everything that is ``async def`` in asyncio is a coroutine: create_task() accepts it and
    nothing happens before it first runs."""

    async def main():
        loop = asyncio.get_running_loop()
        before = set(children())
        coro = impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        assert asyncio.iscoroutine(coro)
        await asyncio.sleep(0.05)
        assert set(children()) == before  # not spawned until awaited
        proc = await loop.create_task(coro)
        calls = [proc.stdout.read(), proc.wait()]
        assert all(asyncio.iscoroutine(c) for c in calls)
        reader, waiter = (loop.create_task(c) for c in calls)
        proc.stdin.write(b"x")
        drain = proc.stdin.drain()
        assert asyncio.iscoroutine(drain)
        await loop.create_task(drain)
        proc.stdin.close()
        await loop.create_task(proc.stdin.wait_closed())
        assert await reader == b"x"
        assert await waiter == 0
        assert await loop.create_task(proc.communicate()) == (b"", None)

    run(main)


# --- wait() ---------------------------------------------------------------------------------


def test_concurrent_wait(impl, run):
    async def main():
        proc = await impl.create_subprocess_shell("sleep 0.1; exit 4")
        assert await asyncio.gather(*(proc.wait() for _ in range(10))) == [4] * 10
        assert await asyncio.gather(*(proc.wait() for _ in range(10))) == [4] * 10

    run(main)


def test_wait_after_exit_is_immediate(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        assert await proc.communicate(b"data") == (b"data", None)
        for _ in range(3):
            task = asyncio.ensure_future(proc.wait())
            await asyncio.sleep(0)
            assert task.done()
            assert task.result() == 0

    run(main)


def test_wait_is_lazy(impl, run):
    # Calling wait() and dropping the coroutine unawaited must not break a later wait().
    async def main():
        proc = await impl.create_subprocess_exec(TRUE)
        coro = proc.wait()
        coro.close()
        assert await proc.wait() == 0

    run(main)


def test_cancel_wait_leaves_child_alone(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30")
        task = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert proc.returncode is None
        st = proc_stat(proc.pid)
        assert st is not None
        assert st[0] != "Z"
        # A waiter cancelled before it ever ran.
        task = asyncio.ensure_future(proc.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL

    run(main)


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 10, 50])
def test_cancel_during_create(impl, run, loop_kind, yields):
    """Cancelled while being created: CancelledError with the child already killed and reaped,
    or a Process that the test then cleans up (when creation finished before the cancel)."""
    kind = behaviour(impl, loop_kind)

    async def main():
        before = set(children())
        task = asyncio.ensure_future(impl.create_subprocess_exec(SLEEP, "30", stdout=impl.PIPE))
        for _ in range(yields):
            await asyncio.sleep(0)
        if not task.cancel():
            # Creation finished before the cancel: a normal Process.
            await finish(task.result())
            assert set(children()) == before
            return
        if yields == 0:
            # Cancelled before its first step: nothing may have been spawned.
            assert set(children()) == before
        with pytest.raises(asyncio.CancelledError):
            await task  # the cancellation is not swallowed
        # asyncio kills *and reaps* the child before CancelledError propagates.
        if kind != "uvloop":
            assert set(children()) == before

    with uvloop_leftovers(kind == "uvloop"):
        run(main)


def test_cancel_during_create_call_soon(impl, run, loop_kind):
    # CPython's test_cancel_make_subprocess_transport_exec.
    kind = behaviour(impl, loop_kind)

    async def main():
        before = set(children())
        task = asyncio.ensure_future(impl.create_subprocess_exec(SLEEP, "30"))
        asyncio.get_running_loop().call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        if kind != "uvloop":  # uvloop's bug: the child often lives on (see uvloop_leftovers)
            assert set(children()) == before  # killed and reaped already

    with uvloop_leftovers(kind == "uvloop"):
        run(main)


@pytest.mark.difference
def test_wait_returns_at_exit_while_grandchild_holds_pipe(impl, run, loop_kind):
    """DESIGN 1b: rsubprocess's wait() returns at exit. CPython 3.9/3.10 (and uvloop) too;
    CPython 3.11+ also waits for every pipe to close, so a grandchild holding stdout blocks it."""
    kind = behaviour(impl, loop_kind)
    blocks = kind == "cpython" and PY >= (3, 11)

    async def main():
        proc = await impl.create_subprocess_shell(
            "sleep 30 & sleep 0.2; exit 3", stdout=impl.PIPE, start_new_session=True
        )
        try:
            t0 = time.monotonic()
            if blocks:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 1.0)
                assert proc.returncode == 3  # the exit was seen, wait() still blocks
            else:
                assert await asyncio.wait_for(proc.wait(), 5) == 3
                assert time.monotonic() - t0 < 5
                assert proc.returncode == 3
        finally:
            killpg(proc.pid)
            assert await proc.stdout.read() == b""
            assert await proc.wait() == 3

    run(main)


# --- signals after exit -----------------------------------------------------------------------


@pytest.mark.difference
def test_signal_after_exit_without_pipes(impl, run, loop_kind):
    """Without pipes, after wait() every implementation raises ProcessLookupError."""

    async def main():
        for method in ("kill", "terminate", "send_signal"):
            proc = await impl.create_subprocess_exec(TRUE)
            assert await proc.wait() == 0
            await asyncio.sleep(0)
            args = (signal.SIGTERM,) if method == "send_signal" else ()
            with pytest.raises(ProcessLookupError):
                getattr(proc, method)(*args)
            assert proc.returncode == 0

    run(main)


@pytest.mark.difference
def test_signal_after_exit_with_pipe_open(impl, run, loop_kind):
    """DESIGN 1b: once rsubprocess knows the returncode, signals raise ProcessLookupError.

    CPython (every version) only raises once all pipes are closed: with a grandchild holding
    stdout, kill() after the exit is a silent no-op. uvloop raises like rsubprocess."""
    kind = behaviour(impl, loop_kind)

    async def main():
        proc = await impl.create_subprocess_shell(
            "sleep 30 & exit 0", stdout=impl.PIPE, start_new_session=True
        )
        try:
            for _ in range(500):
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
            assert proc.returncode == 0
            for method, args in [("kill", ()), ("terminate", ()), ("send_signal", (0,))]:
                if kind == "cpython":
                    getattr(proc, method)(*args)  # no-op: the pipe is still open
                else:
                    with pytest.raises(ProcessLookupError):
                        getattr(proc, method)(*args)
        finally:
            killpg(proc.pid)
            assert await proc.stdout.read() == b""
            assert await proc.wait() == 0

    run(main)


def test_signal_between_exit_and_notification(impl, run, loop_kind):
    """The child has exited but the loop has not processed it yet: no error (asyncio <3.13
    polls, 3.13 ignores ESRCH, rsubprocess signals the pidfd). CPython 3.12's poll() steals the
    exit status from its pidfd watcher, which then reports 255 (gh-87744)."""
    kind = behaviour(impl, loop_kind)

    async def main():
        for method, args in [("kill", ()), ("terminate", ()), ("send_signal", (signal.SIGUSR1,))]:
            proc = await impl.create_subprocess_exec(TRUE)
            # Block the loop (so the exit is not processed) until the child has exited: a
            # zombie, or gone if a watcher thread reaped it (CPython 3.9-3.11).
            deadline = time.monotonic() + 10
            while (proc_stat(proc.pid) or ("Z",))[0] != "Z" and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            if kind == "uvloop" and proc.returncode is not None:
                # uvloop's libuv may have reaped the child already (not always).
                assert proc.returncode == 0
                with pytest.raises(ProcessLookupError):
                    getattr(proc, method)(*args)
            else:
                assert proc.returncode is None
                getattr(proc, method)(*args)
            rc = await proc.wait()
            # CPython 3.12: 255 when poll() won the race against the pidfd watcher (usual).
            assert rc in ((0, 255) if kind == "cpython" and PY == (3, 12) else (0,))

    run(main)


# --- StreamReader on proc.stdout ----------------------------------------------------------------


def test_stdout_read_methods(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(
            "printf", "line1\\nline2\\nabcdefgh", stdout=impl.PIPE
        )
        out = proc.stdout
        assert await out.readline() == b"line1\n"
        assert await out.readuntil(b"2") == b"line2"
        assert await out.read(0) == b""
        assert await out.read(1) == b"\n"
        assert await out.readexactly(3) == b"abc"
        assert await out.readexactly(0) == b""
        assert await out.readuntil(bytearray(b"e")) == b"de"
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await out.readexactly(10)
        assert info.value.partial == b"fgh"
        assert info.value.expected == 10
        assert str(info.value) == "3 bytes read on a total of 10 expected bytes"
        assert out.at_eof()
        assert await out.read() == b""
        assert await out.readline() == b""
        assert await out.read(5) == b""
        with pytest.raises(asyncio.IncompleteReadError) as info:
            await out.readuntil(b"x")
        assert info.value.partial == b""
        assert info.value.expected is None
        assert await proc.wait() == 0

    run(main)


def test_stdout_readexactly_negative(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec("echo", "x", stdout=impl.PIPE)
        with pytest.raises(ValueError) as info:
            await proc.stdout.readexactly(-1)
        assert str(info.value) == "readexactly size can not be less than zero"
        with pytest.raises(ValueError) as info:
            await proc.stdout.readuntil(b"")
        assert str(info.value) == "Separator should be at least one-byte string"
        assert await proc.stdout.read() == b"x\n"
        await proc.wait()

    run(main)


def test_stdout_at_eof_and_partial_line(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec("printf", "a\\nb\\n\\nc", stdout=impl.PIPE)
        assert not proc.stdout.at_eof()
        lines = [line async for line in proc.stdout]
        assert lines == [b"a\n", b"b\n", b"\n", b"c"]
        assert proc.stdout.at_eof()
        assert await proc.wait() == 0

    run(main)


def test_stdout_async_for_many_lines(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec("seq", "1", "20000", stdout=impl.PIPE)
        n = 0
        async for line in proc.stdout:
            n += 1
            assert line == b"%d\n" % n
        assert n == 20000
        assert await proc.wait() == 0

    run(main)


@pytest.mark.parametrize("chunk", [1, 4096, 65536, 1 << 20])
def test_stdout_read_n_large(impl, run, chunk):
    async def main():
        proc = await impl.create_subprocess_shell(
            "head -c 3000000 /dev/zero | tr '\\0' 'z'", stdout=impl.PIPE
        )
        total = 0
        reads = 0
        while True:
            data = await proc.stdout.read(chunk if chunk > 1 else 7)
            if not data:
                break
            assert len(data) <= (chunk if chunk > 1 else 7)
            assert data == b"z" * len(data)
            total += len(data)
            reads += 1
            if reads > 100 and chunk == 1:
                break
        if chunk == 1:
            total += len(await proc.stdout.read())
        assert total == 3000000
        assert await proc.wait() == 0

    run(main)


def test_read_stdout_after_process_exit(impl, run):
    # CPython's test_read_stdout_after_process_exit: slow reader, child exits with status 1.
    async def main():
        proc = await impl.create_subprocess_shell(
            "head -c 262144 /dev/zero; exit 1", stdout=impl.PIPE
        )
        total = 0
        while True:
            data = await proc.stdout.read(65536)
            if not data:
                break
            total += len(data)
            await asyncio.sleep(0.05)
        assert total == 262144
        assert await proc.wait() == 1

    run(main)


def test_readline_over_limit(impl, run):
    async def main():
        # One printf = one write() below PIPE_BUF: the whole output arrives in one chunk.
        proc = await impl.create_subprocess_exec(
            "printf", "aaaaaaaaaaaaaaaaaaaaaaaa\\nok\\n", stdout=impl.PIPE, limit=10
        )
        with pytest.raises(ValueError) as info:
            await proc.stdout.readline()
        assert str(info.value) == "Separator is found, but chunk is longer than limit"
        assert await proc.stdout.readline() == b"ok\n"
        assert await proc.stdout.readline() == b""
        assert await proc.wait() == 0

        proc = await impl.create_subprocess_exec(
            "printf", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", stdout=impl.PIPE, limit=10
        )
        with pytest.raises(ValueError) as info:
            await proc.stdout.readline()
        assert str(info.value) == "Separator is not found, and chunk exceed the limit"
        assert await proc.stdout.readline() == b""
        assert await proc.wait() == 0

    run(main)


def test_readuntil_limit_overrun_keeps_buffer(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(
            "printf", "aaaaaaaaaaaaaaaaaaaaaaaa\\n", stdout=impl.PIPE, limit=10
        )
        with pytest.raises(asyncio.LimitOverrunError) as info:
            await proc.stdout.readuntil(b"\n")
        assert info.value.args[0] == "Separator is found, but chunk is longer than limit"
        assert info.value.consumed == 24
        assert await proc.stdout.readexactly(25) == b"a" * 24 + b"\n"
        assert await proc.wait() == 0

    run(main)


def test_async_for_over_limit_raises(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(
            "printf", "short\\naaaaaaaaaaaaaaaaaaaaaaaa\\n", stdout=impl.PIPE, limit=10
        )
        seen = []
        with pytest.raises(ValueError):
            async for line in proc.stdout:
                seen.append(line)
        assert seen == [b"short\n"]
        await finish(proc)

    run(main)


def test_cancelled_read_keeps_buffered_data(impl, run):
    async def main():
        proc = await impl.create_subprocess_shell(
            "printf ab; exec sleep 30", stdout=impl.PIPE, stdin=impl.DEVNULL
        )
        try:
            task = asyncio.ensure_future(proc.stdout.readexactly(5))
            for _ in range(30):
                await asyncio.sleep(0.01)
                if task.done():
                    break
            assert not task.done()  # 2 of 5 bytes: readexactly() keeps waiting
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await proc.stdout.read(2) == b"ab"
        finally:
            await finish(proc)

    run(main)


def test_concurrent_reads_raise_runtimeerror(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30", stdout=impl.PIPE)
        try:
            first = asyncio.ensure_future(proc.stdout.readline())
            await asyncio.sleep(0.05)
            for name, call in [
                ("readuntil", proc.stdout.readline),
                ("readuntil", functools.partial(proc.stdout.readuntil, b"x")),
                ("read", functools.partial(proc.stdout.read, 5)),
                ("readexactly", functools.partial(proc.stdout.readexactly, 5)),
            ]:
                with pytest.raises(RuntimeError) as info:
                    await call()
                assert str(info.value) == (
                    f"{name}() called while another coroutine is already waiting for incoming data"
                )
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
        finally:
            await finish(proc)

    run(main)


def test_unread_output_is_not_buffered_without_bound(impl, run):
    """Flow control: with nobody reading, the reader stops reading the pipe once it holds more
    than 2 * limit, so a child writing 10 MB blocks instead of finishing."""

    async def main():
        proc = await impl.create_subprocess_shell(
            "head -c 10000000 /dev/zero", stdout=impl.PIPE, limit=65536
        )
        await asyncio.sleep(0.5)
        assert proc.returncode is None  # blocked in write()
        st = proc_stat(proc.pid)
        assert st is not None
        assert st[0] in "SD"
        data = await proc.stdout.read()
        assert len(data) == 10000000
        assert await proc.wait() == 0

    run(main)


def test_read_is_lazy(impl, run):
    # DESIGN 1.5: calling read() without awaiting it must not consume data.
    async def main():
        proc = await impl.create_subprocess_exec("echo", "lazy", stdout=impl.PIPE)
        await asyncio.sleep(0.1)
        coro = proc.stdout.read()
        coro.close()
        coro = proc.stdout.readline()
        coro.close()
        assert await proc.stdout.read() == b"lazy\n"
        await proc.wait()

    run(main)


@pytest.mark.parametrize("call", ["readline", "anext", "read", "readexactly", "wait"])
def test_coroutine_dropped_mid_wait_is_closed(impl, run, call):
    """A coroutine suspended on a wait and then dropped is closed, as the interpreter closes an
    ``async def`` it frees: its waiter goes away, so the next read does not find the stream
    "already waiting", and no data is lost (rsubprocess reuses per-line coroutines; a
    suspended one must never be kept alive by that)."""

    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable,
            "-c",
            "import time; time.sleep(0.2); print('one'); print('two')",
            stdout=impl.PIPE,
        )
        coro = {
            "readline": lambda: proc.stdout.readline(),
            "anext": lambda: proc.stdout.__anext__(),
            "read": lambda: proc.stdout.read(),
            "readexactly": lambda: proc.stdout.readexactly(4),
            "wait": lambda: proc.wait(),
        }[call]()
        fut = coro.send(None)  # suspended: nothing is buffered yet
        assert fut is not None
        del coro, fut
        gc.collect()
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"one\n"
        assert await proc.stdout.readline() == b"two\n"
        assert await proc.wait() == 0

    run(main)


def test_per_line_coroutines_are_distinct(impl, run):
    # Two readline() coroutines taken before either runs are two objects, and each await
    # takes the next line in the order they are awaited; an awaited one cannot be awaited again
    # (and is not handed out again while we hold it).
    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable,
            "-c",
            "print('a'); print('b'); print('c'); print('d')",
            stdout=impl.PIPE,
        )
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first is not second
        assert await second == b"a\n"
        assert await first == b"b\n"
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await first
        third = proc.stdout.readline()
        assert third is not first and third is not second
        assert await third == b"c\n"
        rest = [line async for line in proc.stdout]
        assert rest == [b"d\n"]
        assert await proc.wait() == 0

    run(main)


# --- stdin (StreamWriter) ---------------------------------------------------------------------


def test_stdin_write_drain_close(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        w = proc.stdin
        w.write(b"hello ")
        w.write(b"")
        w.writelines([b"wor", bytearray(b"l"), memoryview(b"d")])
        await w.drain()
        assert not w.is_closing()
        assert w.can_write_eof()
        w.close()
        assert w.is_closing()
        await w.wait_closed()
        assert await proc.stdout.read() == b"hello world"
        assert await proc.wait() == 0

    run(main)


def test_stdin_write_eof(impl, run, loop_kind):
    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        proc.stdin.write(b"eof")
        proc.stdin.write_eof()
        # uvloop's pipe transport does not report closing after write_eof().
        assert proc.stdin.is_closing() is (behaviour(impl, loop_kind) != "uvloop")
        assert await proc.stdout.read() == b"eof"
        assert await proc.wait() == 0
        await proc.stdin.wait_closed()

    run(main)


def test_stdin_large_write_with_drain(impl, run):
    data = random_bytes(5 << 20)

    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)

        async def feed():
            for i in range(0, len(data), 100000):
                proc.stdin.write(data[i : i + 100000])
                await proc.stdin.drain()
            proc.stdin.close()

        out, _ = await asyncio.gather(proc.stdout.read(), feed())
        assert out == data
        assert await proc.wait() == 0

    run(main)


def test_stdin_close_flushes_pending_writes(impl, run):
    data = random_bytes(3 << 20)

    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        proc.stdin.write(data)  # far more than the pipe holds: most of it is buffered
        proc.stdin.close()  # no drain(): close() still delivers everything, then EOF
        assert await proc.stdout.read() == data
        assert await proc.wait() == 0
        await proc.stdin.wait_closed()

    run(main)


def test_stdin_write_str_is_rejected(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
        with pytest.raises((TypeError, AssertionError)):
            proc.stdin.write("text")
        assert await proc.communicate(b"bytes") == (b"bytes", None)

    run(main)


def test_drain_raises_when_child_exited(impl, run):
    # CPython's test_stdin_broken_pipe: the child exits once the write buffer is filled.
    async def main():
        rfd, wfd = os.pipe()
        try:
            proc = await impl.create_subprocess_exec(
                "head",
                "-c",
                "1",
                f"/proc/self/fd/{rfd}",
                stdin=impl.PIPE,
                stdout=impl.DEVNULL,
                pass_fds=(rfd,),
            )
            proc.stdin.write(b"x" * PIPE_MAX_SIZE)
            os.write(wfd, b"go")
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await proc.stdin.drain()
            # Retrieve the close exception too (else 3.9/3.10 log "Future exception was never
            # retrieved", spec V8).
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                await proc.stdin.wait_closed()
            assert await proc.wait() == 0
        finally:
            os.close(rfd)
            os.close(wfd)

    run(main)


def test_drain_after_child_exited_and_pipe_closed(impl, run, loop_kind):
    async def main():
        proc = await impl.create_subprocess_exec(TRUE, stdin=impl.PIPE)
        assert await proc.wait() == 0
        await asyncio.sleep(0.1)  # let the pipe close be noticed
        if behaviour(impl, loop_kind) == "uvloop":
            with pytest.raises(RuntimeError, match="the handler is closed"):
                proc.stdin.write(b"x")  # uvloop bug, see UVLOOP_WRITE_AFTER_CLOSE
            return
        proc.stdin.write(b"x")  # silently dropped
        with pytest.raises(ConnectionResetError) as info:
            await proc.stdin.drain()
        assert str(info.value) == "Connection lost"

    run(main)


# --- Popen options ------------------------------------------------------------------------------


def test_pass_fds(impl, run):
    async def main():
        rfd, wfd = os.pipe()
        try:
            cmd = f"echo passed > /proc/self/fd/{wfd}"
            proc = await impl.create_subprocess_shell(cmd, pass_fds=(wfd,))
            assert await proc.wait() == 0
            assert os.read(rfd, 100) == b"passed\n"
            # Not inheritable and not passed: the child cannot open it.
            proc = await impl.create_subprocess_shell(cmd, stderr=impl.DEVNULL)
            assert await proc.wait() != 0
        finally:
            os.close(rfd)
            os.close(wfd)

    run(main)


def test_close_fds_false_inherits_only_inheritable(impl, run, loop_kind):
    """With close_fds=False the child sees 0, 1, 2 and the parent's inheritable fds only:
    no pipe end, pidfd, eventfd or epoll fd of the implementation (test_stdin_not_inheritable)."""

    async def main():
        inheritable = {fd for fd in open_fds() if fd > 2 and os.get_inheritable(fd)}
        proc = await impl.create_subprocess_exec(
            "ls",
            "/proc/self/fd",
            stdin=impl.PIPE,
            stdout=impl.PIPE,
            stderr=impl.PIPE,
            close_fds=False,
        )
        proc.stdin.close()
        out, err = await proc.communicate()
        assert err == b""
        child_fds = {int(x) for x in out.split()}
        expected = {0, 1, 2} | inheritable
        assert expected <= child_fds
        if behaviour(impl, loop_kind) == "uvloop":
            # uvloop: the child also inherits some of uvloop's own fds (/dev/null, ...).
            assert len(child_fds - expected) > 1
        else:
            assert len(child_fds - expected) == 1, (child_fds, expected)  # ls's directory fd

        # A child reading stdin to EOF finishes: the parent's write end did not leak into it.
        proc = await impl.create_subprocess_exec(
            "wc", "-c", stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE, close_fds=False
        )
        out, err = await proc.communicate(b"abc")
        assert (out.strip(), err, proc.returncode) == (b"3", b"", 0)

    run(main)


@pytest.mark.parametrize("as_path", [False, True])
def test_cwd(impl, run, tmp_path, as_path):
    async def main():
        cwd = tmp_path if as_path else str(tmp_path)
        proc = await impl.create_subprocess_exec("pwd", "-P", cwd=cwd, stdout=impl.PIPE)
        out, _ = await proc.communicate()
        assert out == os.fsencode(os.path.realpath(tmp_path)) + b"\n"

    run(main)


def test_env(impl, run):
    async def main():
        env = dict(os.environ, FOO="bar baz")
        proc = await impl.create_subprocess_shell('echo "$FOO"', env=env, stdout=impl.PIPE)
        assert await proc.communicate() == (b"bar baz\n", None)
        proc = await impl.create_subprocess_exec("/usr/bin/env", env={}, stdout=impl.PIPE)
        assert await proc.communicate() == (b"", None)
        proc = await impl.create_subprocess_exec("/usr/bin/env", env={b"A": b"1"}, stdout=impl.PIPE)
        assert await proc.communicate() == (b"A=1\n", None)

    run(main)


@pytest.mark.parametrize("new_session", [False, True])
def test_start_new_session(impl, run, new_session):
    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30", start_new_session=new_session)
        try:
            st = proc_stat(proc.pid)
            assert st is not None
            _, _, pgrp, session = st
            if new_session:
                assert (pgrp, session) == (proc.pid, proc.pid)
            else:
                assert (pgrp, session) == (os.getpgrp(), os.getsid(0))
        finally:
            await finish(proc)
        # CPython's test_start_new_session.
        proc = await impl.create_subprocess_shell("exit 8", start_new_session=new_session)
        assert await proc.wait() == 8

    run(main)


def test_process_group(impl, run, loop_kind):
    """process_group is a Popen keyword from 3.11; before that Popen's TypeError."""
    kind = behaviour(impl, loop_kind)
    expected = asyncio_reference(
        lambda ns: spawn_outcome(ns.create_subprocess_exec, TRUE, process_group=0)
    )
    if PY >= (3, 11):
        assert expected == ("ok", 0)
    else:
        assert expected[:2] == ("raise", TypeError)

    async def main():
        if kind == "uvloop":
            outcome = await spawn_outcome(impl.create_subprocess_exec, TRUE, process_group=0)
            assert outcome[1:3] == (ValueError, "unexpected kwargs: process_group")
            return
        assert await spawn_outcome(impl.create_subprocess_exec, TRUE, process_group=0) == (expected)
        if PY >= (3, 11):
            proc = await impl.create_subprocess_exec(SLEEP, "30", process_group=0)
            try:
                st = proc_stat(proc.pid)
                assert st is not None
                assert st[2] == proc.pid
                assert st[3] == os.getsid(0)
            finally:
                await finish(proc)

    run(main)


def test_umask(impl, run, loop_kind):
    async def main():
        if behaviour(impl, loop_kind) == "uvloop":
            with pytest.raises(ValueError, match="unexpected kwargs: umask"):
                await impl.create_subprocess_shell("umask", umask=0o077)
            return
        proc = await impl.create_subprocess_shell("umask", umask=0o077, stdout=impl.PIPE)
        assert await proc.communicate() == (b"0077\n", None)

    run(main)


@pytest.mark.difference
def test_dev_stdin_readable(impl, run, loop_kind):
    """DESIGN 1b: stdin=PIPE is a pipe on every version. CPython 3.9 (and uvloop) use a
    socketpair, and open("/dev/stdin") fails there with ENXIO."""
    kind = behaviour(impl, loop_kind)
    socketpair = (kind == "cpython" and PY < (3, 10)) or kind == "uvloop"

    async def main():
        proc = await impl.create_subprocess_exec(
            CAT, "/dev/stdin", stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE
        )
        if socketpair:
            # Not fed: cat may already have failed (and uvloop would raise, see above).
            proc.stdin.close()
            out, err = await proc.communicate()
        else:
            out, err = await proc.communicate(b"abc")
        if socketpair:
            assert (out, proc.returncode) == (b"", 1)
            assert b"No such device or address" in err
        else:
            assert (out, err, proc.returncode) == (b"abc", b"", 0)

    run(main)


# --- spawn errors: exactly asyncio's exception ----------------------------------------------------


def _not_executable(tmp_path: pathlib.Path) -> str:
    path = tmp_path / "script.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    return str(path)


SPAWN_ERRORS = {
    "missing-program": (lambda tmp: (("/nonexistent/program",), {}), FileNotFoundError),
    "missing-in-path": (lambda tmp: (("no-such-program-xyz",), {}), FileNotFoundError),
    "bad-cwd": (lambda tmp: ((TRUE,), {"cwd": str(tmp / "missing")}), FileNotFoundError),
    "not-executable": (lambda tmp: ((_not_executable(tmp),), {}), PermissionError),
    "directory": (lambda tmp: ((str(tmp),), {}), PermissionError),
    "nul-in-program": (lambda tmp: (("tr\0ue",), {}), ValueError),
    "nul-in-arg": (lambda tmp: ((TRUE, "a\0b"), {}), ValueError),
    "nul-in-env": (lambda tmp: ((TRUE,), {"env": {"A": "b\0c"}}), ValueError),
    "int-arg": (lambda tmp: ((TRUE, 1), {}), TypeError),
    "none-program": (lambda tmp: ((None,), {}), TypeError),
    "e2big": (lambda tmp: ((TRUE, *["x" * 100_000] * 40), {}), OSError),
    "stdout-STDOUT": (lambda tmp: ((TRUE,), {"stdout": -2}), (OSError, ValueError)),
    "stdin-STDOUT": (lambda tmp: ((TRUE,), {"stdin": -2}), (OSError, ValueError)),
    "bad-fd": (lambda tmp: ((TRUE,), {"stdout": 987}), OSError),
}

# uvloop spawns by itself: these are its results where they are not CPython's (type, message).
UVLOOP_SPAWN_ERRORS = {
    "missing-program": (FileNotFoundError, "[Errno 2] No such file or directory"),
    "missing-in-path": (FileNotFoundError, "[Errno 2] No such file or directory"),
    "bad-cwd": (FileNotFoundError, "[Errno 2] No such file or directory"),
    "not-executable": (PermissionError, "[Errno 13] Permission denied"),
    "directory": (PermissionError, "[Errno 13] Permission denied"),
    "nul-in-program": None,  # uvloop truncates at the NUL and runs "tr"
    "nul-in-arg": None,
    "nul-in-env": None,
    "e2big": (OSError, "[Errno 7] Argument list too long"),
    "stdout-STDOUT": (ValueError, "subprocess.STDOUT is supported only by stderr parameter"),
    "stdin-STDOUT": (OSError, "[Errno 9] Bad file descriptor"),
    "bad-fd": (OSError, "[Errno 9] Bad file descriptor"),
}
# uvloop leaks the /dev/null fd it opened when the spawn fails in these cases.
UVLOOP_SPAWN_FD_LEAK = {"stdout-STDOUT", "bad-fd"}


@pytest.mark.parametrize("case", sorted(SPAWN_ERRORS))
def test_spawn_error_matches_asyncio(impl, run, loop_kind, tmp_path, case):
    make_args, exc_type = SPAWN_ERRORS[case]
    args, kwargs = make_args(tmp_path)
    expected = asyncio_reference(
        lambda ns: spawn_outcome(ns.create_subprocess_exec, *args, **kwargs)
    )
    assert expected[0] == "raise"
    assert issubclass(expected[1], exc_type)
    if case == "e2big":
        assert expected[4] == errno.E2BIG
    if case == "bad-cwd":
        assert expected[6] == kwargs["cwd"]
    kind = behaviour(impl, loop_kind)

    async def main():
        fds = open_fds()
        outcome = await spawn_outcome(impl.create_subprocess_exec, *args, **kwargs)
        if kind == "uvloop" and case in UVLOOP_SPAWN_FD_LEAK:
            leaked = [fd for fd, target in open_fds().items() if fd not in fds]
            assert [open_fds()[fd] for fd in leaked] == ["/dev/null"]
            os.close(leaked[0])
        if kind == "uvloop" and case in UVLOOP_SPAWN_ERRORS:
            uv = UVLOOP_SPAWN_ERRORS[case]
            if uv is None:
                assert outcome[0] == "ok"
            else:
                assert outcome[1:3] == uv
            return
        # type, str, args, errno, strerror, filename, filename2
        assert outcome == expected

    run(main)


def test_spawn_error_via_shell(impl, run, tmp_path):
    async def main():
        proc = await impl.create_subprocess_shell("exec /nonexistent/program", stderr=impl.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 127
        assert b"/nonexistent/program" in err

    run(main)


# --- argument checks: exactly asyncio's exception -----------------------------------------------

KWARG_CASES = {
    # id: (exec|shell, args, kwargs)
    "exec-text": ("exec", (TRUE,), {"text": True}),
    "exec-text-false": ("exec", (TRUE,), {"text": False}),
    "exec-text-1": ("exec", (TRUE,), {"text": 1}),
    "exec-encoding": ("exec", (TRUE,), {"encoding": "utf-8"}),
    "exec-encoding-none": ("exec", (TRUE,), {"encoding": None}),
    "exec-errors": ("exec", (TRUE,), {"errors": "strict"}),
    "exec-universal_newlines": ("exec", (TRUE,), {"universal_newlines": True}),
    "exec-universal_newlines-false": ("exec", (TRUE,), {"universal_newlines": False}),
    "exec-bufsize-1": ("exec", (TRUE,), {"bufsize": 1}),
    "exec-bufsize--1": ("exec", (TRUE,), {"bufsize": -1}),
    "exec-bufsize-0": ("exec", (TRUE,), {"bufsize": 0}),
    "exec-shell": ("exec", (TRUE,), {"shell": True}),
    "exec-shell-false": ("exec", (TRUE,), {"shell": False}),
    "exec-unknown": ("exec", (TRUE,), {"foo": 1}),
    "exec-order-un-text": ("exec", (TRUE,), {"universal_newlines": True, "text": True}),
    "exec-order-shell-bufsize": ("exec", (TRUE,), {"shell": True, "bufsize": 1}),
    "exec-order-bufsize-text": ("exec", (TRUE,), {"bufsize": 1, "text": True}),
    "exec-order-encoding-errors": ("exec", (TRUE,), {"encoding": "x", "errors": "y"}),
    "exec-order-text-unknown": ("exec", (TRUE,), {"text": True, "foo": 1}),
    "exec-program-int": ("exec", (1,), {}),
    "exec-program-list": ("exec", ([TRUE],), {}),
    "exec-creationflags": ("exec", (TRUE,), {"creationflags": 1}),
    "exec-creationflags-0": ("exec", (TRUE,), {"creationflags": 0}),
    "exec-startupinfo": ("exec", (TRUE,), {"startupinfo": 1}),
    "exec-pipesize": ("exec", (TRUE,), {"pipesize": 1 << 16}),
    "shell-list": ("shell", ([TRUE],), {}),
    "shell-pathlike": ("shell", (pathlib.Path(TRUE),), {}),
    "shell-int": ("shell", (1,), {}),
    "shell-bytes": ("shell", (b"true",), {}),
    "shell-bytearray": ("shell", (bytearray(b"true"),), {}),
    "shell-false": ("shell", ("true",), {"shell": False}),
    "shell-true": ("shell", ("true",), {"shell": True}),
    "shell-text": ("shell", ("true",), {"text": True}),
    "shell-universal_newlines": ("shell", ("true",), {"universal_newlines": True}),
    "shell-bufsize": ("shell", ("true",), {"bufsize": 1}),
    "shell-order-list-text": ("shell", ([TRUE],), {"text": True}),
    "shell-order-false-bufsize": ("shell", ("true",), {"shell": False, "bufsize": 1}),
    "shell-unknown": ("shell", ("true",), {"foo": 1}),
    "shell-executable": ("shell", ("true",), {"executable": "/bin/sh"}),
}

# uvloop's own checks (kind, type, message) where they differ from CPython's.
UVLOOP_KWARGS = {
    "exec-text": ("raise", ValueError, "unexpected kwargs: text"),
    "exec-text-false": ("raise", ValueError, "unexpected kwargs: text"),
    "exec-text-1": ("raise", ValueError, "unexpected kwargs: text"),
    "exec-encoding": ("raise", ValueError, "unexpected kwargs: encoding"),
    "exec-encoding-none": ("raise", ValueError, "unexpected kwargs: encoding"),
    "exec-errors": ("raise", ValueError, "unexpected kwargs: errors"),
    "exec-unknown": ("raise", ValueError, "unexpected kwargs: foo"),
    "exec-order-encoding-errors": ("raise", ValueError, "unexpected kwargs: encoding, errors"),
    "exec-order-text-unknown": ("raise", ValueError, "unexpected kwargs: text, foo"),
    "exec-creationflags": ("raise", ValueError, "creationflags is not supported"),
    "exec-startupinfo": ("raise", ValueError, "startupinfo is not supported"),
    "exec-pipesize": ("raise", ValueError, "unexpected kwargs: pipesize"),
    "shell-list": ("raise", TypeError, "expected str, bytes or os.PathLike object, not list"),
    "shell-pathlike": ("ok", 0),
    "shell-int": ("raise", TypeError, "expected str, bytes or os.PathLike object, not int"),
    "shell-bytearray": (
        "raise",
        TypeError,
        "expected str, bytes or os.PathLike object, not bytearray",
    ),
    "shell-text": ("raise", ValueError, "unexpected kwargs: text"),
    "shell-order-list-text": ("raise", ValueError, "unexpected kwargs: text"),
    "shell-unknown": ("raise", ValueError, "unexpected kwargs: foo"),
}


@pytest.mark.parametrize("case", list(KWARG_CASES))
def test_arguments_match_asyncio(impl, run, loop_kind, case):
    which, args, kwargs = KWARG_CASES[case]

    def call(ns):
        create = ns.create_subprocess_exec if which == "exec" else ns.create_subprocess_shell
        return spawn_outcome(create, *args, **kwargs)

    expected = asyncio_reference(call)
    kind = behaviour(impl, loop_kind)

    async def main():
        outcome = await call(impl)
        if kind == "uvloop" and case in UVLOOP_KWARGS:
            assert outcome[:3] == UVLOOP_KWARGS[case]
            return
        assert outcome == expected

    run(main)


@pytest.mark.difference
@pytest.mark.parametrize("which", ["exec", "shell"])
def test_loop_argument(impl, run, loop_kind, which):
    """3.9: accepted with asyncio's DeprecationWarning. 3.10+: TypeError; asyncio also prints
    "Exception ignored in BaseSubprocessTransport.__del__" (AttributeError: _closed), which
    rsubprocess does not (DESIGN 1b)."""
    kind = behaviour(impl, loop_kind)

    async def main():
        loop = asyncio.get_running_loop()
        create = impl.create_subprocess_exec if which == "exec" else impl.create_subprocess_shell
        cmd = TRUE if which == "exec" else "true"
        if PY < (3, 10):
            with pytest.warns(DeprecationWarning) as record:
                proc = await create(cmd, loop=loop)
            assert [str(w.message) for w in record] == [
                "The loop argument is deprecated since Python 3.8 and scheduled for removal "
                "in Python 3.10."
            ]
            assert await proc.wait() == 0
            return
        if kind == "uvloop":
            with pytest.raises(ValueError, match="unexpected kwargs: loop"):
                await create(cmd, loop=loop)
            return
        with swallow_unraisable() as noise:
            with pytest.raises(TypeError) as info:
                await create(cmd, loop=loop)
            message = str(info.value)
            del info
        if kind == "cpython":
            assert message == (
                "BaseSubprocessTransport.__init__() got multiple values for argument 'loop'"
            )
            assert len(noise) == 1
            assert noise[0][0] is AttributeError
            assert "_closed" in noise[0][1]
        else:
            assert "loop" in message
            assert noise == []

    run(main)


# --- a child still running when its loop closes ---------------------------------------------


@pytest.mark.difference
def test_child_running_when_loop_closes(impl, loop_kind):
    """DESIGN 1b: rsubprocess kills and reaps the child and says so with a ResourceWarning,
    without "Exception ignored" noise. CPython 3.9-3.11 and uvloop leave it running; CPython
    3.12+ kills it (from the transport's __del__), may leave a zombie, and leaks the pidfd."""
    kind = behaviour(impl, loop_kind)
    holder: dict[str, int] = {}
    contexts: list[dict[str, Any]] = []

    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30")
        holder["pid"] = proc.pid

    fds = open_fds()
    with warnings.catch_warnings(record=True) as caught, swallow_unraisable() as noise:
        warnings.simplefilter("always")
        run_on_new_loop(loop_kind, main, 30, contexts)
        gc.collect()
        pid = holder["pid"]
        if kind == "rsubprocess":
            assert wait_until(lambda: pid not in children(), 5), children()
            assert proc_stat(pid) is None
        elif kind == "cpython" and PY >= (3, 12):
            # Killed by the transport's __del__; reaped or not depending on Popen's _cleanup().
            assert wait_until(lambda: (proc_stat(pid) or ("Z",))[0] == "Z", 5)
            if proc_stat(pid) is not None:
                os.waitpid(pid, 0)
            # The pidfd it watched the child with is never closed.
            leaked = [fd for fd, target in open_fds().items() if fd not in fds]
            assert [open_fds()[fd] for fd in leaked] == ["anon_inode:[pidfd]"]
            os.close(leaked[0])
        else:
            time.sleep(0.2)
            st = proc_stat(pid)
            assert st is not None
            assert st[0] != "Z"  # still running
            os.kill(pid, signal.SIGKILL)
            if kind == "cpython":
                # The watcher thread reaps it, then lets the transport go.
                assert wait_until(lambda: pid not in children(), 5)
                assert wait_until(
                    lambda: not [t for t in threading.enumerate() if t.name.startswith("asyncio")],
                    5,
                )
            else:
                assert wait_until(lambda: (proc_stat(pid) or ("Z",))[0] == "Z", 5)
                os.waitpid(pid, 0)
            gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    if kind == "rsubprocess":
        assert any(str(pid) in m for m in messages), messages
        assert noise == []
    elif kind == "cpython":
        assert any(m.startswith("unclosed transport <_UnixSubprocessTransport") for m in messages)
    else:
        assert any(m.startswith("unclosed resource <UVProcessTransport") for m in messages)
    assert not contexts, format_contexts(contexts)


# --- threads and fork -------------------------------------------------------------------------


async def _small_workload(impl: types.SimpleNamespace) -> tuple[Any, ...]:
    proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE)
    out, _ = await proc.communicate(b"x" * 200_000)
    shell = await impl.create_subprocess_shell("exit 5")
    return (len(out), proc.returncode, await shell.wait())


def test_loops_in_non_main_threads(impl, loop_kind):
    """Two loops, each in its own thread, spawning at the same time."""
    results: list[Any] = []
    contexts: list[dict[str, Any]] = []

    def target():
        try:
            results.append(run_on_new_loop(loop_kind, lambda: _small_workload(impl), 30, contexts))
        except BaseException:
            results.append(traceback.format_exc())

    threads = [threading.Thread(target=target) for _ in range(2)]
    # uvloop refuses concurrent spawns from two loops ("RuntimeError: Racing with another loop
    # to spawn a process."): run its threads one after the other.
    sequential = behaviour(impl, loop_kind) == "uvloop"
    for t in threads:
        t.start()
        if sequential:
            t.join(60)
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert results == [(200_000, 0, 5)] * 2, "\n".join(map(str, results))
    assert not contexts, format_contexts(contexts)


def test_in_forked_child(impl, loop_kind, run, no_threads):
    # Use the implementation in the parent first, so the child inherits its state.
    assert run(lambda: _small_workload(impl)) == (200_000, 0, 5)
    if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
        pytest.fail(f"threads outlived their work: {threading.enumerate()}")

    def in_child() -> None:
        contexts: list[dict[str, Any]] = []
        value = run_on_new_loop(loop_kind, lambda: _small_workload(impl), 30, contexts)
        if value != (200_000, 0, 5):
            raise AssertionError(f"unexpected result in the child: {value!r}")
        if contexts:
            raise AssertionError(format_contexts(contexts))

    in_forked_child(in_child)
    # And the parent still works after the fork.
    assert run(lambda: _small_workload(impl)) == (200_000, 0, 5)
