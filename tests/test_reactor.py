"""The per-loop epoll instance that watches error pipes and pidfds (``bridge::reactor``).

rsubprocess registers one epoll fd of its own with each loop (``add_reader``) instead of one
reader per error pipe and pidfd. These tests pin down what that must never change: one
instance per loop however many children are watched, closed with the loop (nothing outlives
it but what still watches), a watch on a closed loop raising what ``add_reader`` raises, and a
forked child never touching the instance it shares with its parent. Internals of
rsubprocess's, so rsubprocess only; every behavioural test in the suite runs through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import os
import subprocess
import sys
import warnings

import pytest
import rsubprocess
from rsubprocess import subprocess as rs_subprocess

from tests.helpers import in_forked_child


def _epoll_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventpoll]":
                fds.add(int(name))
        except OSError:
            pass  # the listing's own fd
    return fds


@pytest.fixture
def fresh_loop():
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_one_instance_for_many_watched_children(fresh_loop):
    loop = fresh_loop
    before = _epoll_fds()

    async def main() -> set[int]:
        procs = [await rsubprocess.create_subprocess_exec("sleep", "30") for _ in range(20)]
        during = _epoll_fds()
        for p in procs:
            p.kill()
        for p in procs:
            assert await p.wait() == -9
        return during

    during = loop.run_until_complete(main())
    assert len(during - before) == 1, (before, during)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_instance_exists_from_the_first_spawn_on(fresh_loop, monkeypatch, pidfd):
    """The first spawn on a loop makes its instance, also when the exec is waited for in
    place (an idle loop) and the exit by a thread (no pidfd): an fd baseline taken after a
    warm-up spawn must hold, not grow at whichever spawn first found the loop busy."""
    if not pidfd:
        monkeypatch.setenv("RSUBPROCESS_NO_PIDFD", "1")
    # The idle loop's in-place exec wait, however long the exec takes.
    monkeypatch.setattr(rs_subprocess, "_IDLE_WAIT_MAX", 3600.0)
    before = _epoll_fds()

    async def spawn_and_wait() -> set[int]:
        proc = await rsubprocess.create_subprocess_exec("/bin/true")
        assert await proc.wait() == 0
        return _epoll_fds()

    first = fresh_loop.run_until_complete(spawn_and_wait())
    assert len(first - before) == 1, (before, first)

    async def busy_spawn() -> set[int]:
        async def spin() -> None:
            while True:
                await asyncio.sleep(0)

        spinner = asyncio.ensure_future(spin())
        try:
            return await spawn_and_wait()
        finally:
            spinner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await spinner

    assert fresh_loop.run_until_complete(busy_spawn()) == first


def test_instance_is_closed_with_the_loop():
    before = _epoll_fds()

    async def main() -> None:
        procs = [await rsubprocess.create_subprocess_exec("/bin/true") for _ in range(5)]
        for p in procs:
            assert await p.wait() == 0

    asyncio.run(main())
    # No gc.collect(): closing the loop lets go of the instance at once.
    assert _epoll_fds() == before


def test_instance_lives_while_a_child_is_watched_past_the_loop():
    before = _epoll_fds()
    loop = asyncio.new_event_loop()
    proc = loop.run_until_complete(rsubprocess.create_subprocess_exec("sleep", "30"))
    loop.close()  # the loop's own epoll fd goes; ours still holds the pidfd
    assert len(_epoll_fds() - before) == 1
    assert proc._kill_now()
    del proc
    gc.collect()
    assert _epoll_fds() == before


def _popen_process(loop: asyncio.AbstractEventLoop) -> tuple[subprocess.Popen[bytes], object]:
    popen = subprocess.Popen(["sleep", "30"])
    proc = rs_subprocess.Process(loop, popen, popen.pid, None, None, None, 2**16, None)
    return popen, proc


def test_watch_on_a_closed_loop_raises_what_add_reader_raises():
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError) as ours:
        loop.add_reader(0, lambda: None)
    popen, proc = _popen_process(loop)
    try:
        with pytest.raises(RuntimeError) as exc:
            proc._start()  # type: ignore[attr-defined]
        assert str(exc.value) == str(ours.value)
    finally:
        assert proc._kill_now()  # type: ignore[attr-defined]
        assert popen.returncode == -9


def test_watch_on_a_closed_loop_whose_instance_still_lives_raises_too():
    loop = asyncio.new_event_loop()
    first = loop.run_until_complete(rsubprocess.create_subprocess_exec("sleep", "30"))
    loop.close()  # `first` keeps the loop's instance alive
    popen, proc = _popen_process(loop)
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            proc._start()  # type: ignore[attr-defined]
    finally:
        assert proc._kill_now()  # type: ignore[attr-defined]
        assert popen.returncode == -9
        assert first._kill_now()


@pytest.mark.skipif(sys.platform != "linux", reason="fork + pidfd")
def test_forked_child_leaves_the_parents_watches_alone(fresh_loop, no_threads):
    """A forked child shares the parent's instance (one open file): if it changed it, the
    parent's watch on its own child would be gone and its wait() would hang. The forked
    child runs the inherited exit callback, as the inherited loop would if it ran there
    (the child is not its parent, so it finds it lost and stops watching), and spawns on a
    loop of its own."""
    loop = fresh_loop
    proc = loop.run_until_complete(rsubprocess.create_subprocess_exec("cat", stdin=subprocess.PIPE))

    def in_child() -> None:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            proc._on_exit()  # type: ignore[attr-defined]

        async def spawn_here() -> None:
            for _ in range(3):
                p = await rsubprocess.create_subprocess_exec("/bin/true")
                assert await p.wait() == 0

        asyncio.run(spawn_here())

    in_forked_child(in_child)

    async def finish() -> int:
        assert proc.stdin is not None
        proc.stdin.close()
        return await asyncio.wait_for(proc.wait(), 10)

    assert loop.run_until_complete(finish()) == 0
