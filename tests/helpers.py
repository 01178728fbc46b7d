"""Helpers shared by the test modules (no fixtures here: see conftest.py).

Everything that compares rsubprocess with asyncio gets asyncio's behaviour from this module:
``ASYNCIO`` holds asyncio's entry points captured when the test package is imported, before any
``rsubprocess.install()`` could replace them.
"""

from __future__ import annotations

import asyncio
import asyncio.subprocess as _aio_subprocess
import contextlib
import gc
import os
import signal
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

PY = sys.version_info[:2]

# test.support.PIPE_MAX_SIZE: larger than any pipe buffer.
PIPE_MAX_SIZE = 4 * 1024 * 1024 + 1

ASYNCIO = types.SimpleNamespace(
    name="asyncio",
    create_subprocess_exec=_aio_subprocess.create_subprocess_exec,
    create_subprocess_shell=_aio_subprocess.create_subprocess_shell,
    PIPE=_aio_subprocess.PIPE,
    STDOUT=_aio_subprocess.STDOUT,
    DEVNULL=_aio_subprocess.DEVNULL,
    Process=_aio_subprocess.Process,
    StreamReader=asyncio.StreamReader,
    StreamWriter=asyncio.StreamWriter,
    module=_aio_subprocess,
)

# The functions install() replaces, keyed by (module, attribute): checked after every test.
ASYNCIO_ENTRY_POINTS = {
    (asyncio, "create_subprocess_exec"): asyncio.create_subprocess_exec,
    (asyncio, "create_subprocess_shell"): asyncio.create_subprocess_shell,
    (_aio_subprocess, "create_subprocess_exec"): _aio_subprocess.create_subprocess_exec,
    (_aio_subprocess, "create_subprocess_shell"): _aio_subprocess.create_subprocess_shell,
}


def load_rsubprocess() -> types.SimpleNamespace:
    import rsubprocess

    return types.SimpleNamespace(
        name="rsubprocess",
        create_subprocess_exec=rsubprocess.create_subprocess_exec,
        create_subprocess_shell=rsubprocess.create_subprocess_shell,
        PIPE=rsubprocess.PIPE,
        STDOUT=rsubprocess.STDOUT,
        DEVNULL=rsubprocess.DEVNULL,
        Process=rsubprocess.Process,
        StreamReader=rsubprocess.StreamReader,
        StreamWriter=rsubprocess.StreamWriter,
        module=rsubprocess,
    )


def behaviour(impl: types.SimpleNamespace, loop_kind: str) -> str:
    """Whose behaviour a combination shows.

    ``"cpython"``: asyncio's own code on asyncio's loop, the reference.
    ``"uvloop"``: asyncio's Process class over uvloop's subprocess transport, which differs
    from CPython in places (each such place is spelled out in the tests).
    ``"rsubprocess"``: must match ``"cpython"`` except for DESIGN.md 1b's deliberate differences.
    """
    if impl.name == "rsubprocess":
        return "rsubprocess"
    return "cpython" if loop_kind == "asyncio" else "uvloop"


def new_loop(loop_kind: str, debug: bool = True) -> asyncio.AbstractEventLoop:
    """A fresh loop; asyncio's in debug mode unless ``debug`` is False (timing scenarios,
    where debug mode's slow-callback log would be noise)."""
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    loop = asyncio.new_event_loop()
    loop.set_debug(debug)
    return loop


#: How long cancelled tasks get to finish when a test loop is closed.
CANCEL_GRACE = 10.0


def cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """asyncio.runners._cancel_all_tasks, returning the tasks that were still pending.

    Unlike asyncio.run(), it gives up on tasks that ignore their cancellation after
    CANCEL_GRACE seconds (reported to the loop's exception handler): a hung task fails its
    test instead of hanging the whole run (pytest-timeout's alarm does not always get
    through a uvloop loop blocked in epoll)."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not pending:
        return []
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_GRACE))
    for task in pending:
        if not task.done():
            loop.call_exception_handler(
                {"message": "task ignored its cancellation at test loop shutdown", "task": task}
            )
            continue
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during test loop shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    return pending


def close_loop(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """Close like asyncio.run() does; return the tasks that were left pending."""
    try:
        leftover = cancel_all_tasks(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        if hasattr(loop, "shutdown_default_executor"):
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return leftover


class _TestRaisedTimeout(Exception):
    pass


def run_on_new_loop(
    loop_kind: str,
    coro_or_fn: Any,
    timeout: float,
    contexts: list[dict[str, Any]],
) -> Any:
    """Run a coroutine (or a no-argument callable returning one) on a fresh loop."""
    coro = coro_or_fn() if callable(coro_or_fn) else coro_or_fn

    async def body() -> Any:
        # Tell the test's own TimeoutErrors apart from the hard timeout below.
        try:
            return await coro
        except asyncio.TimeoutError as exc:
            raise _TestRaisedTimeout from exc

    loop = new_loop(loop_kind)
    loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx))
    asyncio.set_event_loop(loop)
    leftover: list[asyncio.Task[Any]] = []
    try:
        try:
            return loop.run_until_complete(asyncio.wait_for(body(), timeout))
        except asyncio.TimeoutError:
            raise AssertionError(f"test coroutine timed out after {timeout} s") from None
        except _TestRaisedTimeout as exc:
            raise exc.__cause__ from None  # type: ignore[misc]
    finally:
        leftover = close_loop(loop)
        if leftover:
            contexts.append(
                {"message": "tasks still pending when the test finished", "tasks": leftover}
            )


def format_contexts(contexts: list[dict[str, Any]]) -> str:
    lines = []
    for ctx in contexts:
        lines.append("; ".join(f"{k}={v!r}" for k, v in ctx.items()))
    return "\n".join(lines)


def asyncio_reference(fn: Callable[[types.SimpleNamespace], Any], timeout: float = 30) -> Any:
    """Run ``fn(ASYNCIO)`` on a fresh CPython asyncio loop: what asyncio itself does.

    Must be called outside a running loop (from the test body).
    """
    contexts: list[dict[str, Any]] = []
    result = run_on_new_loop("asyncio", lambda: fn(ASYNCIO), timeout, contexts)
    assert not contexts, "asyncio reference run called the exception handler:\n" + (
        format_contexts(contexts)
    )
    return result


def exc_summary(exc: BaseException) -> tuple[Any, ...]:
    """What must be equal between asyncio and rsubprocess for an exception."""
    return (
        type(exc),
        str(exc),
        exc.args,
        getattr(exc, "errno", None),
        getattr(exc, "strerror", None),
        getattr(exc, "filename", None),
        getattr(exc, "filename2", None),
    )


async def spawn_outcome(create: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """("ok", returncode) or ("raise", exc_summary...) for a create_subprocess_* call."""
    try:
        proc = await create(*args, **kwargs)
    except Exception as exc:
        summary = exc_summary(exc)
        del exc
        return ("raise", *summary)
    return ("ok", await proc.wait())


@contextlib.contextmanager
def swallow_unraisable() -> Iterator[list[Any]]:
    """Collect "Exception ignored in ..." reports instead of letting them fail the test.

    Only for asyncio's known noise (DESIGN 1b, ``loop=`` on 3.10+).
    """
    seen: list[Any] = []
    old = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        seen.append((unraisable.exc_type, str(unraisable.exc_value), repr(unraisable.object)))

    sys.unraisablehook = hook
    try:
        yield seen
        gc.collect()
    finally:
        sys.unraisablehook = old


# --- /proc scans -------------------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory fd of listdir itself, already closed
    return fds


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def children(ppid: int | None = None) -> dict[int, str]:
    """{pid: state} of every process whose parent is ``ppid`` (default: this process)."""
    if ppid is None:
        ppid = os.getpid()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None and st[1] == ppid:
            found[int(name)] = st[0]
    return found


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_names() -> list[str]:
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def in_forked_child(fn: Callable[[], None]) -> None:
    """Runs ``fn`` in a child made by ``os.fork()`` (which never returns into pytest) and
    fails with the child's traceback unless ``fn`` returned."""
    import traceback

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(rfd)
            fn()
            status = 0
        except BaseException:
            with contextlib.suppress(BaseException):
                os.write(wfd, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(wfd)
    chunks = []
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    report = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, report


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def settle(
    predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.01
) -> bool:
    """``wait_until`` inside a running loop, which meanwhile closes transports and reaps."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def kill_and_reap(pids: Iterable[int], grace: float = 1.0) -> None:
    """SIGKILL, then reap whichever are still our children after ``grace`` seconds (their
    owner -- asyncio's watcher thread, rsubprocess -- gets the chance to reap them first)."""
    pids = set(pids)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not (set(children()) & pids), grace)
    for pid in set(children()) & pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


@contextlib.contextmanager
def uvloop_leftovers(active: bool) -> Iterator[list[int]]:
    """uvloop bug (asyncio-uvloop only): a cancelled create_subprocess_* can leave the child
    running and its transport unclosed (ResourceWarning at loop close). Yields the list of
    such children, killed and reaped on exit, so it is recorded as asyncio's result instead
    of failing the next test."""
    killed: list[int] = []
    if not active:
        yield killed
        return
    before = set(children())
    with warnings.catch_warnings(), swallow_unraisable():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield killed
        finally:
            gc.collect()
    killed.extend(set(children()) - before)
    kill_and_reap(killed, grace=0)


async def warm_up(ns: types.SimpleNamespace) -> None:
    """Spawns with every pipe and a bulk transfer on the running loop, before an fd baseline
    is taken: loops and rsubprocess make some resources lazily (uvloop opens /dev/null on
    first use, rsubprocess its runtime)."""
    proc = await ns.create_subprocess_exec("cat", stdin=ns.PIPE, stdout=ns.PIPE, stderr=ns.PIPE)
    await proc.communicate(b"x" * (1 << 20))
    proc = await ns.create_subprocess_shell("exit 0", stdin=ns.DEVNULL, stdout=ns.DEVNULL)
    await proc.wait()


async def finish(proc: Any) -> int:
    """Kill (if needed), drain and reap ``proc`` so that nothing leaks."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    for reader in (proc.stdout, proc.stderr):
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.read()
    return await proc.wait()
