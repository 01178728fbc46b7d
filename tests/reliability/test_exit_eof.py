"""Exit vs EOF: the child's exit and its pipes' EOF are separate events.

* A grandchild keeps stdout open after the child exits: ``wait()`` returns at the exit
  (rsubprocess on every version, DESIGN 1b; CPython 3.11-3.13 wait for the pipe too).
* ``kill()`` while 1 MiB of stdout is unread: ``wait()`` returns promptly.
* The child exits without reading while 10 MiB are written to its stdin: ``communicate()``
  raises nothing (it ignores BrokenPipe/ConnectionReset).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time

import pytest

from tests.helpers import PY, behaviour, children, settle
from tests.reliability.conftest import verdict

pytestmark = pytest.mark.timeout(60)

HEAD = shutil.which("head")


@pytest.mark.parametrize("pipes", ["stdout", "all"])
def test_wait_returns_at_exit_while_grandchild_holds_stdout(impl, run, loop_kind, tag, pipes):
    kind = behaviour(impl, loop_kind)
    env = tag.env()
    problems: list[str] = []

    async def main():
        extra = {"stdin": impl.PIPE, "stderr": impl.PIPE} if pipes == "all" else {}
        proc = await impl.create_subprocess_shell(
            "sleep 30 & sleep 0.2; exit 3", stdout=impl.PIPE, env=env, **extra
        )
        t0 = time.monotonic()
        try:
            rc = await asyncio.wait_for(proc.wait(), 3)
        except asyncio.TimeoutError:
            problems.append(
                f"wait() still blocked after 3 s (returncode seen: {proc.returncode}): it waits "
                "for the grandchild's pipe"
            )
        else:
            assert rc == 3
            assert time.monotonic() - t0 < 2.2
        # The grandchild is ours to clean up (it is not the library's child).
        assert tag.cleanup(), "the grandchild should still be running"
        if proc.stdin is not None:
            proc.stdin.close()
        assert await asyncio.wait_for(proc.stdout.read(), 5) == b""
        assert await asyncio.wait_for(proc.wait(), 5) == 3

    run(main)
    if kind == "cpython":
        # CPython 3.9/3.10 return at exit; 3.11-3.13 wait for the pipes (gh-119710).
        assert bool(problems) == (PY >= (3, 11)), problems
    verdict(impl.name, problems, "wait() with a grandchild holding stdout")


@pytest.mark.parametrize("streams", ["stdout", "stdout+stderr"])
def test_kill_with_unread_output_returns_promptly(impl, run, tag, streams):
    env = tag.env()
    problems: list[str] = []
    script = {
        "stdout": f"exec {HEAD} -c 1048576 /dev/zero",
        "stdout+stderr": f"{HEAD} -c 1048576 /dev/zero >&2 & exec {HEAD} -c 1048576 /dev/zero",
    }[streams]

    async def main():
        proc = await impl.create_subprocess_exec(
            "sh", "-c", script, stdout=impl.PIPE, stderr=impl.PIPE, env=env
        )
        await asyncio.sleep(0.3)  # the pipe is full, the writer blocked, nothing read
        try:
            proc.kill()
        except ProcessLookupError:
            problems.append(f"kill() raised ProcessLookupError (returncode {proc.returncode})")
        t0 = time.monotonic()
        try:
            rc = await asyncio.wait_for(proc.wait(), 3)
        except asyncio.TimeoutError:
            problems.append("wait() after kill() blocked for 3 s")
        else:
            if rc != -9:
                problems.append(f"returncode {rc} after kill()")
            elapsed = time.monotonic() - t0
            if elapsed > 1:
                problems.append(f"wait() after kill() took {elapsed:.2f} s")
        tag.cleanup()  # the background writer of the stderr case
        out = await asyncio.wait_for(proc.stdout.read(), 10)
        err = await asyncio.wait_for(proc.stderr.read(), 10)
        assert set(out) <= {0} and len(out) <= 1 << 20
        assert set(err) <= {0} and len(err) <= 1 << 20
        assert await asyncio.wait_for(proc.wait(), 5) in (-9, 0)

    run(main)
    verdict(impl.name, problems, "kill() with unread output")


EXITS = {
    "exits-at-once": ("exit 0", 0),
    "reads-1000-bytes": (f"{HEAD} -c 1000 >/dev/null", 0),
    "closes-stdin-then-exits": ("exec 0<&-; sleep 0.1; exit 5", 5),
    "killed": ("kill -9 $$", -9),
}


@pytest.mark.parametrize("stdout", ["PIPE", "DEVNULL"])
@pytest.mark.parametrize("how", list(EXITS))
def test_communicate_when_child_does_not_read(impl, run, loop_kind, tag, how, stdout):
    """10 MiB for a child that exits without reading: communicate() raises nothing."""
    script, rc = EXITS[how]
    env = tag.env()
    problems: list[str] = []

    async def main():
        for _ in range(3):
            proc = await impl.create_subprocess_shell(
                script,
                stdin=impl.PIPE,
                stdout=getattr(impl, stdout),
                stderr=impl.PIPE,
                env=env,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(b"x" * (10 << 20)), 20)
            except Exception as exc:
                problems.append(f"communicate() raised {exc!r}")
                with contextlib.suppress(Exception):
                    await proc.wait()
            else:
                assert out == (b"" if stdout == "PIPE" else None)
                assert err == b""
                assert proc.returncode == rc
            # asyncio 3.9/3.10 would otherwise log "Future exception was never retrieved" for
            # the stdin pipe's close error (tests/test_process.py).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await proc.stdin.wait_closed()
        assert await settle(lambda: not children(), 2)

    run(main)
    if problems and behaviour(impl, loop_kind) == "uvloop":
        problems.append("uvloop: write() after the peer closed raises RuntimeError")
    verdict(impl.name, problems, "communicate() to a child that does not read")
