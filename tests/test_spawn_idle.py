"""Spawn and ``wait()`` wait in place of an idle loop's sleep, and never longer than that.

On asyncio's selector loop, rsubprocess waits for a child's exec (in ``create_subprocess_exec``)
and for its exit (in ``wait()``) inside the awaiting task's step when the loop has nothing else
to do (``_idle_window``), instead of a trip through the loop; the wait ends as soon as the loop
would have woken: an fd it watches becomes ready, its next timer is due. These tests check
both ends. Exec: a child is held between clone and exec with the tests-only exec gate
(``_core._set_exec_gate``). Exit: a child that runs until killed. The behavioural tests run on
asyncio too, where the gate does nothing (its spawn is Popen's, which has exec'd on return).

The wait's cap is raised to an hour in the behavioural tests, so a wait that missed the loop's
wake-up would hang the test instead of falling back to the loop a little later; their timers
are due later than the shortest window (``_IDLE_WAIT_MIN``), so the wait does happen.
"""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import threading
from typing import Any

import pytest
from rsubprocess import _core, _native
from rsubprocess import subprocess as rs_subprocess


def _bare_spawn_args() -> tuple[Any, ...]:
    """What ``create_subprocess_exec("/bin/true")`` passes to ``_core.spawn``."""
    args = _native._plain(("/bin/true",), False, (None, None, None))
    assert args is not None
    return args


@pytest.fixture
def gate():
    """A pipe whose read end every native spawn's child reads one byte from before its exec;
    ``gate.release()`` lets one child through."""
    r, w = os.pipe()
    prev = _core._set_exec_gate(r)

    class Gate:
        def release(self) -> None:
            os.write(w, b"x")

    try:
        yield Gate()
    finally:
        _core._set_exec_gate(prev)
        os.close(r)
        os.close(w)


@pytest.fixture
def no_cap(monkeypatch):
    monkeypatch.setattr(rs_subprocess, "_IDLE_WAIT_MAX", 3600.0)


def _first_step_of_wait_exec(job: Any) -> None:
    """One step of ``job.wait_exec`` (on a loop that is not running): it raises StopIteration
    or the exec's error when the result is already in, and returns if it would suspend."""
    loop = asyncio.new_event_loop()
    try:
        job.wait_exec(loop).send(None)
    finally:
        loop.close()


def _reap(job: Any) -> None:
    fd = job.take_pidfd()
    os.waitid(os.P_PIDFD, fd, os.WEXITED)
    os.close(fd)


# --- the window ----------------------------------------------------------------------------


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Any) -> Any:
    async def main() -> Any:
        return fn(asyncio.get_running_loop())

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_idle_window_of_an_idle_selector_loop_is_the_cap():
    loop = asyncio.new_event_loop()
    fd = loop._selector.fileno()  # type: ignore[attr-defined]
    window = _on_loop(loop, rs_subprocess._idle_window)
    assert window == (fd, int(rs_subprocess._IDLE_WAIT_MAX * 1e6))


def test_idle_window_is_empty_with_a_callback_ready():
    def fn(loop: asyncio.AbstractEventLoop) -> Any:
        loop.call_soon(lambda: None)
        return rs_subprocess._idle_window(loop)

    assert _on_loop(asyncio.new_event_loop(), fn) == (-1, 0)


def test_idle_window_ends_before_the_next_timer():
    def fn(loop: asyncio.AbstractEventLoop) -> Any:
        loop.call_later(0.03, lambda: None)
        loop.call_later(3600, lambda: None)
        return rs_subprocess._idle_window(loop)

    fd, us = _on_loop(asyncio.new_event_loop(), fn)
    assert fd >= 0 and rs_subprocess._IDLE_WAIT_MIN * 1e6 <= us <= 30_000


def test_idle_window_is_empty_with_a_timer_closer_than_the_shortest_window():
    def fn(loop: asyncio.AbstractEventLoop) -> Any:
        loop.call_later(rs_subprocess._IDLE_WAIT_MIN / 2, lambda: None)
        return rs_subprocess._idle_window(loop)

    assert _on_loop(asyncio.new_event_loop(), fn) == (-1, 0)


def test_idle_window_is_empty_with_a_timer_due():
    def fn(loop: asyncio.AbstractEventLoop) -> Any:
        loop.call_at(loop.time() - 1, lambda: None)
        return rs_subprocess._idle_window(loop)

    assert _on_loop(asyncio.new_event_loop(), fn) == (-1, 0)


def test_idle_window_is_empty_once_the_loop_is_stopping():
    def fn(loop: asyncio.AbstractEventLoop) -> Any:
        loop.stop()
        return rs_subprocess._idle_window(loop)

    assert _on_loop(asyncio.new_event_loop(), fn) == (-1, 0)


def test_idle_window_is_empty_where_the_loop_does_not_show_it():
    # A selector without an epoll fd to wait on, and uvloop, whose ready queue is not visible.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    assert _on_loop(loop, rs_subprocess._idle_window) == (-1, 0)
    import uvloop

    assert _on_loop(uvloop.new_event_loop(), rs_subprocess._idle_window) == (-1, 0)


# --- the wait ------------------------------------------------------------------------------


def test_wait_idle_returns_at_once_when_the_loop_fd_is_ready(gate):
    ep = select.epoll()
    r, w = os.pipe()
    job = None
    try:
        ep.register(r, select.EPOLLIN)
        job = _core.spawn(*_bare_spawn_args())
        # The child is held before its exec: only a wait that ends on the empty epoll's
        # timeout, then on the ready one, can return here (pytest-timeout catches a hang).
        assert job._wait_idle(ep.fileno(), 20_000) is False
        os.write(w, b"x")
        assert job._wait_idle(ep.fileno(), 3_600_000_000) is False
        gate.release()
        assert job._wait_idle(-1, 3_600_000_000) is True
        # The exec result is in: wait_exec completes without suspending.
        with pytest.raises(StopIteration):
            _first_step_of_wait_exec(job)
        _reap(job)
        job = None
    finally:
        if job is not None:
            gate.release()
            job._kill_and_reap()
        ep.close()
        os.close(r)
        os.close(w)


def test_wait_idle_reports_an_exec_failure_to_wait_exec(gate):
    args = list(_bare_spawn_args())
    args[1] = [b"/nonexistent/rsubprocess-idle"]
    job = _core.spawn(*args)
    gate.release()
    assert job._wait_idle(-1, 3_600_000_000) is True
    with pytest.raises(FileNotFoundError):
        _first_step_of_wait_exec(job)


# --- the loop keeps running while an exec is pending ----------------------------------------


def test_loop_serves_io_while_an_exec_is_pending(impl, run, gate, no_cap):
    """A reader callback lets the child exec: the spawn can only finish if the loop runs it."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        released = []

        def on_readable() -> None:
            os.read(r, 1)
            loop.remove_reader(r)
            if impl.name == "rsubprocess":
                gate.release()
            released.append(True)

        loop.add_reader(r, on_readable)
        writer = threading.Timer(0.01, os.write, (w, b"x"))
        writer.start()
        try:
            proc = await impl.create_subprocess_exec("/bin/true")
            rc = await proc.wait()
        finally:
            writer.join()
            loop.remove_reader(r)
            os.close(r)
            os.close(w)
        if impl.name == "rsubprocess":
            assert released == [True]
        return rc

    assert run(main()) == 0


def test_loop_runs_a_timer_due_while_an_exec_is_pending(impl, run, gate, no_cap):
    """A timer lets the child exec: the spawn's wait must end before the timer is due."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        if impl.name == "rsubprocess":
            loop.call_later(0.03, gate.release)
        proc = await impl.create_subprocess_exec("/bin/true")
        return await proc.wait()

    assert run(main()) == 0


# --- and while a wait() is pending ----------------------------------------------------------


def test_loop_serves_io_while_a_wait_is_pending(impl, run, no_cap):
    """A reader callback kills the child: wait() can only return if the loop runs it."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        proc = await impl.create_subprocess_exec("sleep", "3600")
        r, w = os.pipe()

        def on_readable() -> None:
            os.read(r, 1)
            loop.remove_reader(r)
            proc.kill()

        loop.add_reader(r, on_readable)
        writer = threading.Timer(0.01, os.write, (w, b"x"))
        writer.start()
        try:
            return await proc.wait()
        finally:
            writer.join()
            loop.remove_reader(r)
            os.close(r)
            os.close(w)

    assert run(main()) == -9


def test_loop_runs_a_timer_due_while_a_wait_is_pending(impl, run, no_cap):
    async def main() -> int:
        loop = asyncio.get_running_loop()
        proc = await impl.create_subprocess_exec("sleep", "3600")
        loop.call_later(0.03, proc.kill)
        return await proc.wait()

    assert run(main()) == -9


def test_wait_timeout_expires_while_the_loop_is_idle(impl, run, no_cap):
    import subprocess

    async def main() -> int:
        proc = await impl.create_subprocess_exec("sleep", "3600")
        try:
            if impl.name == "rsubprocess":
                with pytest.raises(subprocess.TimeoutExpired):
                    await proc.wait(timeout=0.02)
            else:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.02)
        finally:
            proc.kill()
        return await proc.wait()

    assert run(main()) == -9


def test_exit_seen_in_an_idle_wait_wakes_the_other_waiters(impl, run, no_cap):
    """Task a waits through the loop; task b, alone with an idle loop, sees the exit (a thread
    kills the child) and reaps: a's wake-up must go through the loop, not step a inside b."""

    async def main() -> list[int]:
        proc = await impl.create_subprocess_exec("sleep", "3600")

        async def b() -> int:
            await asyncio.sleep(0)  # a is waiting by now
            return await proc.wait()

        killer = threading.Timer(0.02, proc.kill)
        killer.start()
        try:
            return list(await asyncio.gather(proc.wait(), b()))
        finally:
            killer.join()

    assert run(main()) == [-9, -9]
