"""rsubprocess's additions to asyncio's API (issue 8): documented extensions, so they run on
rsubprocess only, on the default loop and uvloop."""

from __future__ import annotations

import asyncio
import gc
import math
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import rsubprocess
from rsubprocess import PIPE

from .helpers import proc_stat, wait_until

pytestmark = pytest.mark.usefixtures("loop_kind")


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


# 1. wait(timeout)


def test_wait_timeout_expires_and_child_keeps_running(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec("sleep", "5")
        with pytest.raises(subprocess.TimeoutExpired) as ei:
            await p.wait(timeout=0.05)
        assert ei.value.cmd == ("sleep", "5") and ei.value.timeout == 0.05
        assert p.returncode is None and alive(p.pid)
        p.kill()
        assert await p.wait(timeout=5) == -signal.SIGKILL

    run(main)


def test_wait_timeout_returns_at_exit_despite_grandchild_holding_stdout(run):
    async def main():
        p = await rsubprocess.create_subprocess_shell(
            "sleep 3 & exit 3", stdout=PIPE, start_new_session=True
        )
        t0 = time.monotonic()
        assert await p.wait(timeout=2) == 3
        assert time.monotonic() - t0 < 1.5
        os.killpg(p.pid, signal.SIGKILL)
        await p.stdout.read()

    run(main)


@pytest.mark.parametrize("timeout", [0, -1, 0.0])
def test_wait_zero_or_negative_timeout_checks_once(run, timeout):
    async def main():
        p = await rsubprocess.create_subprocess_exec("sleep", "5")
        with pytest.raises(subprocess.TimeoutExpired):
            await p.wait(timeout=timeout)
        p.kill()
        await p.wait()
        assert await p.wait(timeout=timeout) == -signal.SIGKILL

    run(main)


@pytest.mark.parametrize(
    ("timeout", "exc"), [(math.nan, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_wait_bad_timeout(run, timeout, exc):
    async def main():
        p = await rsubprocess.create_subprocess_exec("true")
        with pytest.raises(exc):
            await p.wait(timeout=timeout)
        await p.wait()

    run(main)


# 2. communicate(timeout)


def test_communicate_timeout_keeps_partial_output_and_loses_nothing(run):
    async def main():
        p = await rsubprocess.create_subprocess_shell(
            "echo out1; echo err1 >&2; sleep 0.6; echo out2; echo err2 >&2",
            stdout=PIPE,
            stderr=PIPE,
        )
        with pytest.raises(subprocess.TimeoutExpired) as ei:
            await p.communicate(timeout=0.3)
        assert ei.value.stdout == b"out1\n" and ei.value.stderr == b"err1\n"
        assert p.returncode is None
        out, err = await p.communicate()
        assert (out, err) == (b"out1\nout2\n", b"err1\nerr2\n")

    run(main)


def test_communicate_timeout_zero_still_sends_input(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
        with pytest.raises(subprocess.TimeoutExpired) as ei:
            await p.communicate(b"hello", timeout=0)
        assert ei.value.stderr is None  # not a pipe
        with pytest.raises(ValueError, match="Cannot send input after starting communication"):
            await p.communicate(b"again", timeout=5)
        assert await p.communicate(timeout=5) == (b"hello", None)

    run(main)


# 3. async with


def test_async_with_normal_exit_waits(run):
    async def main():
        async with await rsubprocess.create_subprocess_exec(
            "sh", "-c", "sleep 0.05; exit 4", stdout=PIPE
        ) as p:
            pass
        assert p.returncode == 4 and p.stdout.at_eof()

    run(main)


def test_async_with_exception_kills_the_tree(run):
    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            async with await rsubprocess.create_subprocess_shell(
                "sleep 30 & echo $!; wait", stdout=PIPE
            ) as p:
                grandchild = int(await p.stdout.readline())
                raise RuntimeError("boom")
        assert p.returncode == -signal.SIGKILL
        assert wait_until(lambda: not alive(grandchild), 5)

    run(main)


def test_async_with_cancellation_kills_and_reaps(run):
    async def main():
        started = asyncio.Event()
        box = {}

        async def body():
            async with await rsubprocess.create_subprocess_exec("sleep", "30") as p:
                box["p"] = p
                started.set()
                await asyncio.sleep(30)

        task = asyncio.ensure_future(body())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert box["p"].returncode == -signal.SIGKILL

    run(main)


# 4. run()


def test_run_captures_decodes_and_checks(run):
    async def main():
        r = await rsubprocess.run(
            ["sh", "-c", "printf 'a\\r\\nb'; echo e >&2; exit 3"], capture_output=True, text=True
        )
        assert (r.returncode, r.stdout, r.stderr) == (3, "a\nb", "e\n")
        assert r.args == ["sh", "-c", "printf 'a\\r\\nb'; echo e >&2; exit 3"]
        with pytest.raises(subprocess.CalledProcessError) as ei:
            await rsubprocess.run("echo x; exit 2", shell=True, check=True, stdout=PIPE)
        assert (ei.value.returncode, ei.value.output) == (2, b"x\n")
        r = await rsubprocess.run(["cat"], input="héllo", encoding="utf-8", stdout=PIPE)
        assert r.stdout == "héllo"

    run(main)


def test_run_timeout_kills_tree_and_keeps_partial_output(run):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired) as ei:
            await rsubprocess.run(
                "echo first; sleep 30 & echo $! >&2; wait",
                shell=True,
                capture_output=True,
                timeout=0.5,
            )
        assert time.monotonic() - t0 < 3
        assert ei.value.stdout == b"first\n"
        grandchild = int(ei.value.stderr)
        assert wait_until(lambda: not alive(grandchild), 5)

    run(main)


def test_run_cancelled_kills_and_reaps_before_cancelled_error(run, tmp_path):
    pidfile = tmp_path / "pids"

    async def main():
        task = asyncio.ensure_future(
            rsubprocess.run(
                f"echo $$ > {pidfile}; sleep 30 & echo $! >> {pidfile}; wait", shell=True
            )
        )
        assert await asyncio.get_running_loop().run_in_executor(
            None,
            wait_until,
            lambda: len(pidfile.read_text().split()) == 2 if pidfile.exists() else False,
            5,
        )
        shell, grandchild = map(int, pidfile.read_text().split())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Both gone by the time CancelledError arrived: the shell reaped, the sleep killed.
        assert proc_stat(shell) is None
        assert wait_until(lambda: not alive(grandchild), 5)

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": b"x", "stdin": PIPE}, "stdin and input arguments may not both be used."),
        (
            {"capture_output": True, "stdout": PIPE},
            "stdout and stderr arguments may not be used with capture_output.",
        ),
    ],
)
def test_run_bad_argument_combinations_match_subprocess(run, kwargs, message):
    with pytest.raises(ValueError) as sync_err:
        subprocess.run(["true"], **kwargs)
    assert str(sync_err.value) == message

    async def main():
        with pytest.raises(ValueError) as ei:
            await rsubprocess.run(["true"], **kwargs)
        assert str(ei.value) == message

    run(main)


# 5. kill_tree


def test_kill_tree_reaches_setsid_and_regrouped_descendants(run):
    async def main():
        p = await rsubprocess.create_subprocess_shell(
            "setsid sleep 30 & echo $!; sh -c 'sleep 30 & echo $!; wait' & wait", stdout=PIPE
        )
        pids = [int(await p.stdout.readline()) for _ in range(2)]
        n = p.kill_tree()
        assert n >= 4  # sh, setsid'd sleep, inner sh, its sleep
        assert await p.wait() == -signal.SIGKILL
        assert wait_until(lambda: not any(alive(x) for x in pids), 5)
        assert p.kill_tree() == 0  # reaped: never signals a reused pid

    run(main)


def test_kill_tree_with_sigterm_continues_stopped_processes(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec("sleep", "30")
        assert p.kill_tree(signal.SIGTERM) == 1
        assert await asyncio.wait_for(p.wait(), 5) == -signal.SIGTERM

    run(main)


# 6. rusage


def test_rusage_none_until_reaped(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec(
            sys.executable, "-c", "x = bytearray(64 << 20); sum(range(10**6))"
        )
        assert p.rusage is None
        await p.wait()
        ru = p.rusage
        assert isinstance(ru, resource.struct_rusage)
        assert ru.ru_maxrss > 60 * 1024  # KiB
        assert ru.ru_utime + ru.ru_stime > 0

    run(main)


# 7. pdeathsig / rlimits


@pytest.mark.parametrize("popen_path", [False, True])
def test_rlimits_applied_in_child(run, popen_path):
    extra = {"preexec_fn": (lambda: None)} if popen_path else {}

    async def main():
        r = await rsubprocess.run(
            ["sh", "-c", "ulimit -n; ulimit -Hn"],
            capture_output=True,
            rlimits={resource.RLIMIT_NOFILE: (50, 60)},
            **extra,
        )
        assert r.stdout == b"50\n60\n"

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"rlimits": {12345: (1, 1)}}, ValueError),
        ({"rlimits": {resource.RLIMIT_NOFILE: 5}}, TypeError),
        ({"rlimits": {resource.RLIMIT_NOFILE: (10, 5)}}, ValueError),
        ({"rlimits": [1]}, TypeError),
        ({"pdeathsig": 0}, ValueError),
        ({"pdeathsig": 4242}, ValueError),
        ({"pdeathsig": "9"}, AttributeError),
    ],
)
def test_child_setup_bad_input(run, kwargs, exc):
    async def main():
        with pytest.raises(exc):
            await rsubprocess.create_subprocess_exec("true", **kwargs)

    run(main)


def test_pdeathsig_kills_child_when_parent_dies(tmp_path):
    # The parent is a fresh interpreter that spawns a child with pdeathsig and is then killed.
    script = (
        "import asyncio, signal, sys, rsubprocess\n"
        "async def main():\n"
        "    p = await rsubprocess.create_subprocess_exec(\n"
        "        'sleep', '30', pdeathsig=signal.SIGKILL)\n"
        "    print(p.pid, flush=True)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    assert wait_until(lambda: not alive(child), 5)


# 8. lines()


def test_lines_has_no_limit_and_keeps_last_partial_line(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; sys.stdout.write('a' * 300000 + '\\nb\\n' + 'c' * 70000)",
            stdout=PIPE,
        )
        sizes = [len(line) async for line in p.stdout.lines()]
        assert sizes == [300001, 2, 70000]
        await p.wait()

    run(main)


def test_lines_max_line_raises_without_losing_yielded_data(run):
    async def main():
        p = await rsubprocess.create_subprocess_exec(
            sys.executable, "-c", "print('ok'); print('x' * 1000); print('tail')", stdout=PIPE
        )
        it = p.stdout.lines(max_line=100)
        assert await it.__anext__() == b"ok\n"
        with pytest.raises(asyncio.LimitOverrunError):
            await it.__anext__()
        # Nothing was consumed: the long line is still there for an unlimited reader.
        rest = [line async for line in p.stdout.lines()]
        assert rest == [b"x" * 1000 + b"\n", b"tail\n"]
        await p.wait()

    run(main)


def test_lines_coroutine_dropped_mid_wait_is_closed(run):
    # As test_process.test_coroutine_dropped_mid_wait_is_closed, for lines()' coroutines
    # (recycled like readline()'s).
    async def main():
        p = await rsubprocess.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(0.2); print('one')", stdout=PIPE
        )
        coro = p.stdout.lines().__anext__()
        assert coro.send(None) is not None
        del coro
        gc.collect()
        assert [line async for line in p.stdout.lines()] == [b"one\n"]
        await p.wait()

    run(main)


@pytest.mark.parametrize("max_line", [0, -5])
def test_lines_bad_max_line(run, max_line):
    async def main():
        p = await rsubprocess.create_subprocess_exec("true", stdout=PIPE)
        with pytest.raises(ValueError):
            p.stdout.lines(max_line=max_line)
        await p.communicate()

    run(main)
