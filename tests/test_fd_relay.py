"""Spawning with the parent's fd table small or large, rsubprocess's low-fd slots on or off.

rsubprocess's native spawn hands a child its fds through a few low "slots" so the child copies
only the bottom of the parent's table (``src/spawn/relay.rs``); with the slots off, or none
free, the child copies the whole table as before. What the child sees must not depend on
which: the same fds at the same numbers, the same errors, as CPython's own Popen
(``[asyncio-*]``, the reference). The large table (3000 extra fds) puts every fd the child
needs far above the slots (with the small one, the slots are used only for fds past 64).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import behaviour

EXTRA_FDS = 3000

# Prints the child's open fds (without the one listdir uses), then echoes stdin to stdout and
# each pass_fd's data to stderr.
CHILD = textwrap.dedent(
    """
    import os, sys
    fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
    print(" ".join(str(f) for f in fds if os.path.exists(f"/proc/self/fd/{f}")), flush=True)
    for fd in map(int, sys.argv[1:]):
        sys.stderr.write(os.read(fd, 100).decode() + ";")
    sys.stdout.write(sys.stdin.read())
    """
)


@pytest.fixture(params=["small", "large"])
def table(request):
    """The parent's fd table: as the test harness leaves it, or with 3000 more fds open."""
    extra = []
    if request.param == "large":
        extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(EXTRA_FDS)]
    yield request.param
    for fd in extra:
        os.close(fd)


@pytest.fixture(params=["slots", "copy"])
def relay(request, impl):
    """rsubprocess with its slots on (the default) or off; asyncio runs once."""
    if impl.name == "asyncio":
        if request.param == "copy":
            pytest.skip("the slots are rsubprocess's; asyncio runs once")
        yield request.param
        return
    from rsubprocess import _core

    old = _core._set_fd_relay(request.param == "slots")
    try:
        yield request.param
    finally:
        _core._set_fd_relay(old)


def _pipe_at(fd: int) -> tuple[int, int]:
    """A pipe whose read end is inheritable at number ``fd``."""
    r, w = os.pipe()
    os.dup2(r, fd)
    os.close(r)
    return fd, w


# For the fresh-interpreter tests: three piped spawns of `echo`, each checked.
SPAWN_ECHO_3 = """
async def main():
    for _ in range(3):
        proc = await rsubprocess.create_subprocess_exec("echo", "ok", stdout=rsubprocess.PIPE)
        assert await proc.stdout.read() == b"ok\\n"
        assert await proc.wait() == 0

asyncio.run(main())
"""


def run_fresh(code: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (``-X dev``): the slots are per process."""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _env_without_slots_setting() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RSUBPROCESS_SPAWN_SLOTS"}


def test_child_gets_stdio_and_pass_fds_at_their_numbers_and_nothing_else(
    impl, run, loop_kind, table, relay
):
    async def main():
        # One pass_fd low, one above every fd of the large table.
        low_r, low_w = os.pipe()
        high_r, high_w = _pipe_at(EXTRA_FDS + 500)
        try:
            os.write(low_w, b"low")
            os.write(high_w, b"high")
            proc = await impl.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                str(low_r),
                str(high_r),
                stdin=impl.PIPE,
                stdout=impl.PIPE,
                stderr=impl.PIPE,
                pass_fds=(low_r, high_r),
            )
            out, err = await proc.communicate(b"echo me")
        finally:
            for fd in (low_r, low_w, high_r, high_w):
                os.close(fd)
        assert proc.returncode == 0, err
        fds, echoed = out.decode().split("\n", 1)
        seen = {int(f) for f in fds.split()}
        if behaviour(impl, loop_kind) == "uvloop":
            # uvloop's spawn leaves some of its own fds open in the child; only ours count.
            assert seen >= {0, 1, 2, low_r, high_r}
        else:
            assert sorted(seen) == sorted({0, 1, 2, low_r, high_r})
        assert echoed == "echo me"
        assert err == b"low;high;"

    run(main)


def test_stderr_to_stdout_and_inherited_stdio(impl, run, table, relay):
    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; print('out'); print('err', file=sys.stderr)",
            stdout=impl.PIPE,
            stderr=impl.STDOUT,
        )
        out, _ = await proc.communicate()
        assert sorted(out.split()) == [b"err", b"out"]
        proc = await impl.create_subprocess_exec("true", stdin=impl.DEVNULL)
        assert await proc.wait() == 0

    run(main)


@pytest.mark.parametrize(
    ("kwds", "err", "filename"),
    [
        ({"program": "/nonexistent/prog"}, errno.ENOENT, "/nonexistent/prog"),
        ({"cwd": "/nonexistent/dir"}, errno.ENOENT, "/nonexistent/dir"),
        ({"program": "/etc/passwd"}, errno.EACCES, "/etc/passwd"),
    ],
    ids=["exec", "cwd", "eacces"],
)
def test_spawn_errors_are_popens(impl, run, loop_kind, table, relay, kwds, err, filename):
    async def main():
        kwds2 = dict(kwds)
        program = kwds2.pop("program", "true")
        with pytest.raises(OSError) as info:
            await impl.create_subprocess_exec(program, stdout=impl.PIPE, **kwds2)
        assert info.value.errno == err
        if behaviour(impl, loop_kind) != "uvloop":  # uvloop's OSError carries no filename
            assert info.value.filename == filename

    run(main)


def test_more_concurrent_piped_spawns_than_slots(impl, run, table, relay):
    """60 piped children at once take 240 slot uses against 32 slots: some copy, all work."""

    async def one(i: int) -> bytes:
        proc = await impl.create_subprocess_exec(
            "cat", stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE
        )
        out, err = await proc.communicate(b"%d" % i)
        assert (proc.returncode, err) == (0, b"")
        return out

    async def main():
        outs = await asyncio.gather(*(one(i) for i in range(60)))
        assert outs == [b"%d" % i for i in range(60)]

    run(main)


def test_cancelled_spawns_leave_no_slot_held(impl, run, table, relay):
    """Spawns cancelled at once (some before their child could unshare) neither hang nor keep a
    pipe end open in the parent: a later child's stdout still reaches EOF."""

    async def main():
        for _ in range(20):
            task = asyncio.ensure_future(
                impl.create_subprocess_exec("cat", stdin=impl.PIPE, stdout=impl.PIPE)
            )
            await asyncio.sleep(0)
            task.cancel()
            try:
                proc = await task
            except asyncio.CancelledError:
                continue
            proc.kill()
            await proc.communicate()
        proc = await impl.create_subprocess_exec("echo", "done", stdout=impl.PIPE)
        assert await proc.stdout.read() == b"done\n"
        assert await proc.wait() == 0

    run(main, timeout=60)


def test_slot_taken_over_by_someone_else_is_never_written_over():
    """A slot fd closed and reused by other code (a closerange, a dup2) is theirs: rsubprocess
    notices, leaves it alone, and spawns with the plain copy from then on. Run in a fresh
    interpreter: the slots stay retired for the rest of the process."""
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        import rsubprocess
        from rsubprocess import _core

        _core._set_fd_relay(True)
        slots = _core._fd_relay_slots()
        assert len(slots) > 2, slots
        # Past the kernel's first 64 fds, where spawns use the slots.
        extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(100)]
        victim = slots[1]  # the first slot a spawn fills (slots[0] is the placeholder)
        r, w = os.pipe()
        os.dup2(r, victim)  # someone else's pipe now lives at our slot's number
        before = os.fstat(victim)
        SPAWN_ECHO_3
        after = os.fstat(victim)
        assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
        os.write(w, b"still mine")
        assert os.read(victim, 100) == b"still mine"
        # The other slots are closed, not left open.
        gone = [slots[0], *slots[2:]]
        assert all(not os.path.exists(f"/proc/self/fd/{fd}") for fd in gone), slots
        print("ok")
        """
    ).replace("SPAWN_ECHO_3", SPAWN_ECHO_3)
    res = run_fresh(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok\n"


FORK_DURING_SPAWN = textwrap.dedent(
    """
    import asyncio, os, signal, sys, time, warnings
    import {mod} as impl

    # One CPU for us and our children: a new child then rarely runs (and unshares) before we
    # fork, so the fork lands while the slots hold its fds.
    os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
    # A table past the kernel's first 64 fds, where rsubprocess uses its slots.
    extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range(100)]
    pool = []  # the placeholder, then the slots
    if impl.__name__ == "rsubprocess":
        from rsubprocess import _core
        _core._set_fd_relay(True)
        pool = _core._fd_relay_slots()
    slots = pool[1:]

    def filled():
        links = [os.readlink(f"/proc/self/fd/{{fd}}") for fd in slots]
        return [link for link in links if "rsubprocess-slot" not in link]

    def open_slots():
        return [fd for fd in pool if os.path.exists(f"/proc/self/fd/{{fd}}")]

    async def main():
        in_window = 0
        for _ in range(30):
            task = asyncio.ensure_future(impl.create_subprocess_exec("true", stdout=impl.PIPE))
            await asyncio.sleep(0)  # spawned; the loop has not yet seen the child unshare
            in_window += bool(filled())
            r, w = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                pid = os.fork()
            if pid == 0:
                os.write(w, repr(open_slots()).encode())
                time.sleep(60)  # a long-lived forked worker, holding whatever it inherited
                os._exit(0)
            os.close(w)
            try:
                assert os.read(r, 100) == b"[]", "the forked process kept the pool's fds"
                # The spawn completes (its error pipe reaches EOF) and stdout's EOF comes
                # when `true` exits, not when the forked process does.
                proc = await asyncio.wait_for(task, 10)
                assert await asyncio.wait_for(proc.stdout.read(), 10) == b""
                assert await proc.wait() == 0
            finally:
                os.close(r)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        print(in_window)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("mod", ["asyncio.subprocess", "rsubprocess"])
def test_fork_while_slots_are_filled_keeps_no_pipe_open(mod):
    """os.fork() (a multiprocessing worker) between a spawn and the loop's sweep: the forked
    process must not keep the child's pipe ends through the slots, or the parent's read would
    wait for that process to exit. Fresh interpreter: forks, pins itself to one CPU."""
    res = run_fresh(FORK_DURING_SPAWN.format(mod=mod), timeout=120)
    assert res.returncode == 0, res.stderr
    if mod == "rsubprocess":
        # Otherwise the test proved nothing: the fork must have hit the window at least once.
        assert int(res.stdout) > 0, res.stdout


@pytest.mark.parametrize(
    ("extra_fds", "nofile", "reserved"),
    [(0, None, False), (100, None, True), (100, 200, False)],
    ids=["small-table", "large-table", "low-nofile-limit"],
)
def test_slots_reserved_only_where_they_pay(extra_fds, nofile, reserved):
    """On by default, but reserved by the first spawn whose fds are past the kernel's first
    64-entry table, and never under a soft RLIMIT_NOFILE below 256: a script that spawns a few
    children, or one short of fds, holds no extra fds. Fresh interpreter each."""
    code = textwrap.dedent(
        f"""
        import asyncio, os, resource
        import rsubprocess
        from rsubprocess import _core

        if {nofile!r} is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile!r}, resource.getrlimit(
                resource.RLIMIT_NOFILE)[1]))
        extra = [os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC) for _ in range({extra_fds})]
        SPAWN_ECHO_3
        print(len(_core._fd_relay_slots()))
        """
    ).replace("SPAWN_ECHO_3", SPAWN_ECHO_3)
    res = run_fresh(code, env=_env_without_slots_setting())
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) == (33 if reserved else 0)


def test_pidfds_of_many_live_children_stay_out_of_the_first_table():
    """40 children alive at once: their pidfds (and error pipes) are kept above the kernel's
    first 64-entry table, which every relayed child copies and closes again (35 us a child
    at 1600 at once when it was full of them). A child spawned meanwhile still gets its
    stdio and nothing else. Fresh interpreter: the slots and the move are per process."""
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        import rsubprocess
        from rsubprocess import _core

        def ours_low():
            low = []
            for fd in range(16, 64):
                try:
                    what = os.readlink(f"/proc/self/fd/{fd}")
                except FileNotFoundError:
                    continue
                if what == "anon_inode:[pidfd]":
                    low.append(fd)
            return low

        async def main():
            procs = [await rsubprocess.create_subprocess_exec("sleep", "60") for _ in range(40)]
            try:
                print(len(ours_low()), len(_core._fd_relay_slots()))
                child = await rsubprocess.create_subprocess_exec(
                    sys.executable, "-c",
                    "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd'))[:4])",
                    stdout=rsubprocess.PIPE,
                )
                print((await child.communicate())[0].decode().strip())
            finally:
                for p in procs:
                    p.kill()
                    await p.wait()

        asyncio.run(main())
        """
    )
    res = run_fresh(code, env=_env_without_slots_setting())
    assert res.returncode == 0, res.stderr
    # listdir's own fd is the child's fourth.
    assert res.stdout.split("\n")[:2] == ["0 33", "[0, 1, 2, 3]"], res.stdout


def test_slots_turned_off_by_environment():
    code = "from rsubprocess import _core; print(_core._set_fd_relay(False))"
    res = run_fresh(code, env={**os.environ, "RSUBPROCESS_SPAWN_SLOTS": "0"})
    assert res.stdout == "False\n", res.stderr
    res = run_fresh(code, env=_env_without_slots_setting())
    assert res.stdout == "True\n", res.stderr
