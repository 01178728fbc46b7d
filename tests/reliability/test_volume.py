"""Volume: thousands of spawns, failed spawns and concurrent pipes; fds and zombies stay flat.

rsubprocess runs the issue's counts on both loops (2,000 spawn+wait, 1,000 failed spawns,
500 concurrent ``cat`` echoes of 64 KiB); asyncio runs reduced counts (``scaled``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import pytest

from tests.helpers import (
    asyncio_reference,
    behaviour,
    children,
    exc_summary,
    open_fds,
    settle,
    warm_up,
)
from tests.reliability.conftest import fd_count, scaled, zombies

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

SH = shutil.which("sh")
TRUE = shutil.which("true")
FALSE = shutil.which("false")
CAT = shutil.which("cat")
BATCH = 25


def test_spawn_wait_volume(impl, run, tag):
    n = scaled(impl.name, 2000, 300)
    programs = [((TRUE,), 0), ((FALSE,), 1), ((SH, "-c", "exit 7"), 7)]
    env = tag.env()

    async def one(i: int) -> tuple[int, int]:
        argv, rc = programs[i % len(programs)]
        if i % 4 == 3:
            proc = await impl.create_subprocess_shell(f"exit {i % 100}", env=env)
            rc = i % 100
        else:
            proc = await impl.create_subprocess_exec(*argv, env=env)
        return await proc.wait(), rc

    async def main():
        await warm_up(impl)
        fd0 = fd_count()
        samples = []
        for start in range(0, n, BATCH):
            results = await asyncio.gather(*(one(i) for i in range(start, min(n, start + BATCH))))
            wrong = [(got, want) for got, want in results if got != want]
            assert not wrong, f"wrong returncodes (got, expected): {wrong[:10]}"
            # Every child was waited for: none may be left, not even as a zombie.
            assert await settle(lambda: not children() and fd_count() == fd0), (
                f"after {start + BATCH} spawns: children {children()}, fds {fd_count()} "
                f"(baseline {fd0})"
            )
            samples.append(fd_count())
        assert set(samples) == {fd0}
        return fd0

    t0 = time.monotonic()
    fd0 = run(main, timeout=140)
    print(f"{impl.name}: {n} spawn+wait in {time.monotonic() - t0:.1f} s, fds {fd0} throughout")


@pytest.fixture
def not_executable(tmp_path):
    path = tmp_path / "not-executable.sh"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o644)
    return str(path)


def test_failed_spawn_volume(impl, run, loop_kind, tmp_path, not_executable, tag):
    """Missing program, not executable, bad cwd: the exception asyncio raises, every time,
    with pipes or without, and nothing left behind."""
    n = scaled(impl.name, 1000, 250)
    kinds = [
        ((str(tmp_path / "no-such-program"),), {}),
        ((not_executable,), {}),
        ((TRUE,), {"cwd": str(tmp_path / "no-such-dir")}),
    ]
    stdios = [{}, {"stdout": -1}, {"stdin": -1, "stdout": -1, "stderr": -1}]
    env = tag.env()

    async def outcome(ns, i):
        argv, kwds = kinds[i % 3]
        try:
            await ns.create_subprocess_exec(*argv, env=env, **kwds, **stdios[(i // 3) % 3])
        except Exception as exc:
            return exc_summary(exc)
        return "spawned"

    def reference(ns):
        async def main():
            return [await outcome(ns, i) for i in range(9)]

        return main()

    expected = asyncio_reference(reference)
    if behaviour(impl, loop_kind) == "uvloop":
        # uvloop's own spawn errors carry no filename: compare what it does get right.
        expected = [e[:1] + e[3:4] for e in expected]
        summarize = lambda s: s if isinstance(s, str) else s[:1] + s[3:4]  # noqa: E731
    else:
        summarize = lambda s: s  # noqa: E731

    async def main():
        await warm_up(impl)
        fd0 = fd_count()
        for start in range(0, n, BATCH):
            got = await asyncio.gather(*(outcome(impl, i) for i in range(start, start + BATCH)))
            for i, summary in zip(range(start, start + BATCH), got):
                assert summarize(summary) == expected[i % 9], (i, summary, expected[i % 9])
            assert await settle(lambda: not children() and fd_count() == fd0), (
                f"after {start + BATCH} failed spawns: children {children()}, zombies "
                f"{zombies()}, fds {fd_count()} (baseline {fd0})"
            )
        return fd0

    t0 = time.monotonic()
    fd0 = run(main, timeout=140)
    print(f"{impl.name}: {n} failed spawns in {time.monotonic() - t0:.1f} s, fds {fd0} throughout")


def test_concurrent_cat_echo_volume(impl, run, tag):
    """500 ``cat`` at once, each echoing its own 64 KiB byte-exact; then a smaller round on the
    same loop: fd count back at its baseline after each."""
    n = scaled(impl.name, 500, 100)
    payloads = [os.urandom(65536) for _ in range(n)]
    env = tag.env()

    async def one(i: int) -> bool:
        proc = await impl.create_subprocess_exec(
            CAT, stdin=impl.PIPE, stdout=impl.PIPE, stderr=impl.PIPE, env=env
        )
        out, err = await proc.communicate(payloads[i])
        return out == payloads[i] and err == b"" and proc.returncode == 0

    async def main():
        await warm_up(impl)
        fd0 = fd_count()
        fds0 = open_fds()
        for count in (n, n // 10):
            ok = await asyncio.gather(*(one(i) for i in range(count)))
            assert all(ok), f"{ok.count(False)} of {count} echoes were not byte-exact"
            assert await settle(lambda: not children() and fd_count() == fd0, 5), (
                f"children {children()}, new fds "
                f"{ {k: v for k, v in open_fds().items() if fds0.get(k) != v} }"
            )
        return fd0

    t0 = time.monotonic()
    fd0 = run(main, timeout=140)
    print(
        f"{impl.name}: {n} + {n // 10} concurrent cat echoes in {time.monotonic() - t0:.1f} s, "
        f"fds {fd0} after each"
    )
