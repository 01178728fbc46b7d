"""Native spawn's pooled child stacks (``src/sys/child.rs``, ``ChildStack``).

A child runs on a stack in our memory until its exec. The pooled stacks are free again when
the kernel zeroes their word (CLONE_CHILD_CLEARTID, at the child's exec or exit), not when the
loop reads the exec: these tests check that every way a child leaves our memory frees its
stack, and that a child held before its exec keeps its own (the tests-only exec gate). A
stack freed too early would be a second child's while the first still runs on it; one never
freed would make every later spawn map a stack of its own. rsubprocess only: asyncio has no
such stacks.
"""

from __future__ import annotations

import asyncio

import pytest
import rsubprocess
from rsubprocess import _core

from tests.test_spawn_idle import gate  # noqa: F401  (the exec gate fixture)

pytestmark = pytest.mark.skipif(
    not _core.native_spawn_available(), reason="no native spawn on this build"
)


async def _held(n: int) -> list[asyncio.Task[rsubprocess.Process]]:
    """``n`` spawns of /bin/true whose children wait at the gate, before their exec."""
    tasks = [
        asyncio.ensure_future(rsubprocess.create_subprocess_exec("/bin/true")) for _ in range(n)
    ]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if _core._child_stacks_busy() >= n:
            break
    return tasks


def test_a_child_keeps_its_stack_until_its_exec_and_frees_it_by_exec(gate):  # noqa: F811
    async def main():
        assert _core._child_stacks_busy() == 0
        tasks = await _held(3)
        # Each child still before its exec: three stacks taken, none shared.
        assert _core._child_stacks_busy() == 3
        for _ in tasks:
            gate.release()
        for proc in await asyncio.gather(*tasks):
            assert await proc.wait() == 0
        # The word is zeroed in the exec before the error pipe closes: free by now.
        assert _core._child_stacks_busy() == 0

    asyncio.run(main())


def test_a_failed_exec_and_a_cancelled_spawn_free_their_stacks(gate):  # noqa: F811
    async def main():
        gate.release()
        with pytest.raises(FileNotFoundError):
            await rsubprocess.create_subprocess_exec("/nonexistent/rsubprocess-test")
        assert _core._child_stacks_busy() == 0
        # Cancelled while its child waits at the gate: killed and reaped, so its stack is free.
        (task,) = await _held(1)
        assert _core._child_stacks_busy() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _core._child_stacks_busy() == 0

    asyncio.run(main())


def test_more_children_at_once_than_pooled_stacks():
    """200 at once (the pool has 64): the rest map stacks of their own; all work, and once
    they are done every pooled stack is free."""

    async def main():
        async def one() -> int:
            proc = await rsubprocess.create_subprocess_exec("/bin/true")
            return await proc.wait()

        assert await asyncio.gather(*(one() for _ in range(200))) == [0] * 200
        assert _core._child_stacks_busy() == 0

    asyncio.run(main())
