"""What a task sees of the future it waits on, on every implementation x loop.

rsubprocess's ops wait on their own future type (``_core.Waiter``), which steps the waiting
task inside the fd callback that completes it rather than one loop iteration later. These tests
pin down that nothing else changes: cancellation (with and without a message), timeouts,
pure-Python tasks, exceptions and KeyboardInterrupt raised by the woken task, and the order of
several waiting tasks all behave as with asyncio's own Future.
"""

from __future__ import annotations

import asyncio
import shutil
import sys

import pytest

from tests.helpers import close_loop, finish, new_loop

SH = shutil.which("sh")
assert SH


async def _line_later(impl, delay: float = 0.05):
    """A child that prints one line after ``delay`` seconds, then sleeps."""
    return await impl.create_subprocess_exec(
        SH, "-c", f"sleep {delay}; echo hello; exec sleep 30", stdout=impl.PIPE
    )


@pytest.mark.parametrize("msg", [None, "stop it"])
def test_cancel_waiting_read_with_message(impl, run, msg):
    async def main():
        proc = await impl.create_subprocess_exec(SH, "-c", "exec sleep 30", stdout=impl.PIPE)
        seen = []

        async def reader():
            try:
                await proc.stdout.readline()
            except asyncio.CancelledError as exc:
                seen.append(exc.args)
                raise

        try:
            task = asyncio.ensure_future(reader())
            await asyncio.sleep(0.02)
            assert not task.done()
            assert task.cancel() if msg is None else task.cancel(msg)
            with pytest.raises(asyncio.CancelledError) as info:
                await task
            assert seen == [() if msg is None else (msg,)]
            # 3.9 and 3.10 drop the message on the way out of the task.
            outer = () if msg is None or sys.version_info < (3, 11) else (msg,)
            assert info.value.args == outer
            assert task.cancelled()
        finally:
            await finish(proc)

    run(main)


def test_cancel_then_data_is_not_lost(impl, run):
    async def main():
        proc = await _line_later(impl, 0.1)
        try:
            task = asyncio.ensure_future(proc.stdout.readline())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await proc.stdout.readline() == b"hello\n"
        finally:
            await finish(proc)

    run(main)


def test_wait_for_timeout_then_read(impl, run):
    async def main():
        proc = await _line_later(impl, 0.2)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(proc.stdout.readline(), 0.02)
            assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"hello\n"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.02)
            assert proc.returncode is None
        finally:
            await finish(proc)

    run(main)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout() is 3.11+")
def test_timeout_context_manager_on_wait(impl, run):
    async def main():
        proc = await _line_later(impl, 0.01)
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await proc.wait()
            assert await proc.stdout.readline() == b"hello\n"
        finally:
            await finish(proc)

    run(main)


def test_pure_python_task_drives_every_wait(impl, run):
    """asyncio's Python Task (``tasks._PyTask``) takes the generic path for yielded futures."""

    async def body():
        proc = await impl.create_subprocess_exec(
            SH, "-c", "read x; echo got $x; exit 3", stdin=impl.PIPE, stdout=impl.PIPE
        )
        await asyncio.sleep(0.01)
        proc.stdin.write(b"it\n")
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        return line, await proc.wait(), await proc.stdout.read()

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.tasks._PyTask(body(), loop=loop)
        assert await task == (b"got it\n", 3, b"")

    run(main)


def test_exception_in_woken_task_goes_to_the_task(impl, run):
    async def reader(proc):
        line = await proc.stdout.readline()
        raise ValueError(line)

    async def main():
        proc = await _line_later(impl)
        try:
            with pytest.raises(ValueError) as info:
                await asyncio.ensure_future(reader(proc))
            assert info.value.args == (b"hello\n",)
        finally:
            await finish(proc)

    run(main)  # the fixture fails the test if the loop's exception handler was called


def test_keyboard_interrupt_in_woken_task_stops_the_loop(impl, loop_kind):
    procs = []

    async def main():
        proc = await _line_later(impl)
        procs.append(proc)
        await proc.stdout.readline()
        raise KeyboardInterrupt

    loop = new_loop(loop_kind)
    try:
        task = loop.create_task(main())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(task)
        assert isinstance(task.exception(), KeyboardInterrupt)
        # The loop survives it, as with asyncio.
        loop.run_until_complete(finish(procs[0]))
    finally:
        assert close_loop(loop) == []


def test_tasks_waiting_on_many_pipes_all_resume(impl, run):
    async def one(i):
        proc = await impl.create_subprocess_exec(
            SH, "-c", f"sleep 0.0{i % 5}; echo {i}", stdout=impl.PIPE
        )
        line = await proc.stdout.readline()
        rc = await proc.wait()
        return line, rc, await proc.stdout.read()

    async def main():
        results = await asyncio.gather(*(one(i) for i in range(20)))
        assert results == [(b"%d\n" % i, 0, b"") for i in range(20)]

    run(main)


def test_readers_resumed_by_one_callback_see_consistent_state(impl, run):
    """A task woken inside the read callback reads again at once; the next chunk must still
    arrive (the reader keeps polling) and nothing is read twice."""

    async def main():
        proc = await impl.create_subprocess_exec(
            SH,
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.01; done",
            stdout=impl.PIPE,
        )
        got = [line async for line in proc.stdout]
        assert got == [b"line%d\n" % i for i in range(1, 9)]
        assert await proc.wait() == 0

    run(main)
