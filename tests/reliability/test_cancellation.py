"""Cancellation at every await point, and a seeded storm of cancelled spawn+communicate tasks.

Cancellation is delivered with ``task.cancel()`` at a chosen moment and observed with
``asyncio.wait`` (not ``wait_for``, whose own result-loss races differ between versions), so a
result that was ready before the cancel is never lost by the harness.

What each await point promises (asyncio's docs and rsubprocess's "Cancel safety" notes):

* ``create_subprocess_*``: cancelled, it spawns nothing or kills and reaps what it spawned
  before ``CancelledError`` propagates (asyncio's ``_make_subprocess_transport``).
* ``wait()``: cancelling stops waiting only; the child is not touched.
* ``read(n)``, ``readline()``, ``readexactly()``, ``readuntil()``: nothing is consumed unless
  it is returned (asyncio: "no data is lost" in the StreamReader source; rsubprocess: the same).
* ``drain()``: written data stays queued and is still delivered.
* ``communicate()`` and ``read(-1)``: asyncio loses what it read so far; rsubprocess keeps it in
  the buffer (README "Differences"), so a second call returns all of it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import shutil
import sys
from typing import Any

import pytest

from tests.helpers import (
    behaviour,
    children,
    finish,
    proc_stat,
    settle,
    uvloop_leftovers,
    warm_up,
)
from tests.reliability.conftest import fd_count, noise, run_scenario, verdict

pytestmark = pytest.mark.timeout(120)

SH = shutil.which("sh")
CAT = shutil.which("cat")
SLEEP = shutil.which("sleep")
TRUE = shutil.which("true")


async def cancel_at(coro: Any, when: Any) -> asyncio.Task:
    """Run ``coro`` as a task and cancel it after ``when``: ("yields", n) loop turns or
    ("delay", seconds). Returns the finished task (cancelled, or done before the cancel)."""
    task = asyncio.ensure_future(coro)
    how, amount = when
    if how == "yields":
        for _ in range(amount):
            await asyncio.sleep(0)
        task.cancel()
    else:
        asyncio.get_running_loop().call_later(amount, task.cancel)
    await asyncio.wait({task})
    return task


# --- create_subprocess_* ----------------------------------------------------------------------

DELAYS = [0, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02]


@pytest.mark.parametrize("how", ["exec", "shell", "exec-missing"])
def test_cancel_create_at_every_point(impl, run, loop_kind, tag, how):
    """Cancel after 0, 1, 2, ... loop turns (until creation finishes first) and after a sweep
    of delays: either CancelledError with no child left, or a Process."""
    kind = behaviour(impl, loop_kind)
    env = tag.env()
    problems: list[str] = []
    stats = {"cancelled": 0, "finished": 0}

    def create():
        pipes = {"stdin": impl.PIPE, "stdout": impl.PIPE, "stderr": impl.PIPE, "env": env}
        if how == "exec":
            return impl.create_subprocess_exec(SLEEP, "30", **pipes)
        if how == "shell":
            return impl.create_subprocess_shell("exec sleep 30", **pipes)
        return impl.create_subprocess_exec("/nonexistent/program", **pipes)

    async def attempt(when) -> str:
        before = set(children())
        fds = fd_count()
        task = await cancel_at(create(), when)
        if task.cancelled():
            stats["cancelled"] += 1
            # Killed *and reaped* before CancelledError propagated: check at once.
            left = set(children()) - before
            if left:
                problems.append(f"{when}: children left after the cancel: {sorted(left)}")
            if not await settle(lambda: fd_count() <= fds, 1.0):
                problems.append(f"{when}: {fd_count() - fds} fds left after the cancel")
            return "cancelled"
        stats["finished"] += 1
        exc = task.exception()
        if exc is not None:
            if how != "exec-missing" or not isinstance(exc, FileNotFoundError):
                problems.append(f"{when}: unexpected {exc!r}")
            return "failed"
        await finish(task.result())
        return "finished"

    async def main():
        await warm_up(impl)
        in_a_row = 0
        for n in range(200):
            in_a_row = in_a_row + 1 if await attempt(("yields", n)) != "cancelled" else 0
            if in_a_row >= 3:
                break
        for delay in DELAYS:
            await attempt(("delay", delay))

    with uvloop_leftovers(kind == "uvloop") as killed:
        run(main)
    if killed:
        problems.append(f"children still running after the loop closed: {killed}")
    assert stats["cancelled"] > 0, stats
    verdict(impl.name, problems, "create_subprocess_* cancelled")


# --- wait() -----------------------------------------------------------------------------------


def test_cancel_wait(impl, run, tag):
    """Cancelled wait() leaves the child alone; concurrent waiters that were not cancelled
    still get the returncode; a cancel racing the exit loses nothing."""
    rng = random.Random(7)
    env = tag.env()

    async def main():
        proc = await impl.create_subprocess_exec(SLEEP, "30", env=env)
        for _ in range(30):
            when = rng.choice([("yields", rng.randint(0, 3)), ("delay", rng.random() * 0.005)])
            task = await cancel_at(proc.wait(), when)
            assert task.cancelled()
            st = proc_stat(proc.pid)
            assert proc.returncode is None and st is not None and st[0] != "Z", st
        keep = [asyncio.ensure_future(proc.wait()) for _ in range(5)]
        drop = [asyncio.ensure_future(proc.wait()) for _ in range(5)]
        await asyncio.sleep(0.01)
        for t in drop:
            t.cancel()
        proc.kill()
        assert await asyncio.gather(*keep) == [-9] * 5
        await asyncio.wait(drop)
        assert all(t.cancelled() for t in drop)

        for i in range(40):
            proc = await impl.create_subprocess_exec(TRUE, env=env)
            task = await cancel_at(proc.wait(), ("delay", (i % 10) * 0.0005))
            if not task.cancelled():
                assert task.result() == 0
            assert await asyncio.wait_for(proc.wait(), 5) == 0
        assert await settle(lambda: not children(), 2), children()

    run(main)


# --- communicate() ----------------------------------------------------------------------------


def test_cancel_communicate(impl, run, loop_kind, tag, tmp_path):
    """Cancel communicate() at random moments, then communicate() again.

    rsubprocess (documented): input was queued and stdin closed at the start, and output read
    so far stays buffered, so the second call returns the whole output. asyncio: the output
    read before the cancel is lost, and on 3.9-3.11 a cancel during the feed leaves stdin open,
    so the second communicate() waits for ever (the child waits for EOF).
    """
    data = os.urandom(1 << 20)
    path = tmp_path / "out.bin"
    path.write_bytes(data)
    payload = os.urandom(256 << 10)
    rng = random.Random(11)
    env = tag.env()
    problems: list[str] = []
    outcomes: dict[str, int] = {}

    async def main():
        await warm_up(impl)
        fd0 = fd_count()
        for _ in range(8):
            proc = await impl.create_subprocess_exec(
                SH,
                "-c",
                f"cat >/dev/null; cat {path}",
                stdin=impl.PIPE,
                stdout=impl.PIPE,
                env=env,
            )
            task = await cancel_at(proc.communicate(payload), ("delay", rng.random() * 0.03))
            if not task.cancelled():
                out, _ = task.result()
                key = "done before the cancel"
            else:
                try:
                    out, _ = await asyncio.wait_for(proc.communicate(), 3)
                except asyncio.TimeoutError:
                    key = "second communicate() hung (stdin left open)"
                    out = None
                    await finish(proc)
                else:
                    key = "second communicate(): " + (
                        "whole output" if out == data else "output lost"
                    )
                    if out != data:
                        problems.append(f"lost {len(data) - len(out)} of {len(data)} bytes")
            if out is None:
                problems.append(key)
            outcomes[key] = outcomes.get(key, 0) + 1
            assert await asyncio.wait_for(proc.wait(), 5) in (0, -9)
        assert await settle(lambda: not children() and fd_count() == fd0), (children(), fd0)

    run(main)
    print(f"{impl.name}-{loop_kind}: {outcomes}")
    verdict(impl.name, problems, "cancelled communicate()")


# --- StreamReader reads -----------------------------------------------------------------------

WRITER = r"""
import random, sys, time
r = random.Random(int(sys.argv[1]))
out = sys.stdout.buffer
data = bytearray()
for i in range(int(sys.argv[2])):
    data += b"%06d:" % i + bytes([97 + i % 26]) * r.randint(0, 3000) + (b"|" if i % 3 else b"\n")
pos = 0
while pos < len(data):
    n = r.randint(1, 20000)
    out.write(data[pos:pos + n]); out.flush()
    pos += n
    if r.random() < 0.3:
        time.sleep(0.001)
"""


def expected_output(seed: int, lines: int) -> bytes:
    r = random.Random(seed)
    data = bytearray()
    for i in range(lines):
        data += b"%06d:" % i + bytes([97 + i % 26]) * r.randint(0, 3000)
        data += b"|" if i % 3 else b"\n"
    return bytes(data)


@pytest.mark.parametrize("seed", [1, 2])
def test_cancel_reads_lose_nothing(impl, run, tag, seed):
    """read(n)/readline()/readexactly()/readuntil() cancelled at random moments: the bytes
    returned, in order, are exactly the child's output (nothing lost, nothing twice)."""
    lines = 400
    expected = expected_output(seed, lines)
    rng = random.Random(seed)
    env = tag.env()

    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(seed), str(lines), stdout=impl.PIPE, env=env
        )
        reader = proc.stdout
        got = bytearray()
        cancelled = 0
        while True:
            op = rng.choice(["read", "readline", "readexactly", "readuntil"])
            if op == "read":
                coro = reader.read(rng.randint(1, 70000))
            elif op == "readline":
                coro = reader.readline()
            elif op == "readexactly":
                coro = reader.readexactly(rng.randint(1, 5000))
            else:
                coro = reader.readuntil(b"|")
            when = rng.choice(
                [("yields", 0), ("yields", 1), ("delay", 0.0002), ("delay", 0.002), ("delay", 1)]
            )
            task = await cancel_at(coro, when)
            if task.cancelled():
                cancelled += 1
                continue
            exc = task.exception()
            if isinstance(exc, asyncio.IncompleteReadError):
                got += exc.partial
                continue
            if exc is not None:
                raise exc
            chunk = task.result()
            if not chunk and reader.at_eof():
                break
            got += chunk
        assert await proc.wait() == 0
        assert cancelled > 5
        assert bytes(got) == expected, (len(got), len(expected))

    run(main)


def test_cancel_read_all(impl, run, loop_kind, tag):
    """read() to EOF cancelled mid-way, then read() again: rsubprocess keeps what it had read
    (README "Differences"); asyncio loses it (recorded)."""
    seed, lines = 3, 400
    expected = expected_output(seed, lines)
    env = tag.env()
    lost: list[int] = []

    async def main():
        for delay in (0.005, 0.02, 0.05, 0.1):
            proc = await impl.create_subprocess_exec(
                sys.executable, "-c", WRITER, str(seed), str(lines), stdout=impl.PIPE, env=env
            )
            task = await cancel_at(proc.stdout.read(), ("delay", delay))
            first = b"" if task.cancelled() else task.result()
            rest = await asyncio.wait_for(proc.stdout.read(), 10)
            assert await proc.wait() == 0
            got = first + rest
            assert expected.endswith(got)
            if got != expected:
                lost.append(len(expected) - len(got))

    run(main)
    verdict(impl.name, [f"cancelled read() lost {n} bytes" for n in lost], "read(-1)")


# --- drain() ----------------------------------------------------------------------------------


def test_cancel_drain_delivers_everything(impl, run, tag):
    """write() + drain() with drains cancelled at random: every byte written reaches the child,
    in order, and the writer stays usable."""
    rng = random.Random(5)
    env = tag.env()

    async def main():
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE, env=env)

        async def read_all():
            chunks = []
            while True:
                chunk = await proc.stdout.read(1 << 16)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)

        reader = asyncio.ensure_future(read_all())
        sent = []
        cancelled = 0
        for _ in range(150):
            chunk = rng.randbytes(rng.randint(1, 200_000))
            proc.stdin.write(chunk)
            sent.append(chunk)
            when = rng.choice([("yields", 0), ("yields", 1), ("delay", 0.0001), ("delay", 0.001)])
            task = await cancel_at(proc.stdin.drain(), when)
            if task.cancelled():
                cancelled += 1
            else:
                task.result()
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()
        out = await asyncio.wait_for(reader, 30)
        assert await proc.wait() == 0
        assert cancelled > 10
        assert out == b"".join(sent), (len(out), sum(map(len, sent)))

    run(main)


# --- the storm --------------------------------------------------------------------------------

STORM_TASKS = 200


def storm_plans(seed: int) -> list[tuple[int, bytes, Any]]:
    """(shape, stdin payload, cancel after seconds or None) per task, seeded."""
    rng = random.Random(seed)
    plans = []
    for i in range(STORM_TASKS):
        payload = rng.randbytes(rng.choice([0, 100, 5000, 70000, 300000]))
        cancel = None if rng.random() < 1 / 3 else rng.uniform(0, 0.6)
        plans.append((i % 4, payload, cancel))
    return plans


async def storm(impl: Any, seed: int, env: dict[str, str], cleanup: Any) -> dict[str, Any]:
    """The storm on the running loop: each task kills and reaps its child in ``finally``, as
    user code would. Returns the tally of task outcomes and the problems found; ``cleanup()``
    kills what carries the test's token (asyncio's hung tasks hold grandchildren)."""
    plans = storm_plans(seed)
    problems: list[str] = []
    live: dict[int, Any] = {}  # the Process of each task, until its task cleaned it up

    async def job(i: int) -> str:
        shape, payload, _ = plans[i]
        pipes = {"stdin": impl.PIPE, "stdout": impl.PIPE, "stderr": impl.PIPE, "env": env}
        if shape == 0:
            proc = await impl.create_subprocess_exec(CAT, **pipes)
            want = (payload, 0)
        elif shape == 1:
            proc = await impl.create_subprocess_shell("cat; exit 3", **pipes)
            want = (payload, 3)
        elif shape == 2:
            proc = await impl.create_subprocess_exec(
                SH, "-c", "head -c 1000 >/dev/null; echo done", **pipes
            )
            want = (b"done\n", 0)
        else:
            # A sleeper due to be cancelled outlives its cancel moment whatever the speed of the
            # implementation, so part of the storm's cancellations land in wait() by construction.
            cancel_due = plans[i][2] is not None
            proc = await impl.create_subprocess_exec(SLEEP, "30" if cancel_due else "0.2", env=env)
            want = (None, 0)
        live[i] = proc
        try:
            if shape == 3:
                got = (None, await proc.wait())
            else:
                out, _ = await proc.communicate(payload)
                got = (out, proc.returncode)
            return "ok" if got == want else f"wrong result: {got[1]} vs {want[1]}"
        finally:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                await proc.wait()
            del live[i]

    def tally(tasks: list[asyncio.Task[str]]) -> dict[str, int]:
        states: dict[str, int] = {}
        for task in tasks:
            if not task.done():
                key = "still pending"
            elif task.cancelled():
                key = "cancelled"
            elif task.exception() is not None:
                key = f"raised {task.exception()!r}"
            else:
                key = task.result()
            states[key] = states.get(key, 0) + 1
        return states

    async def unstick_asyncio(tasks: list[asyncio.Task[str]]) -> None:
        """asyncio's storm leaves tasks hung in wait() (3.11+ waits for the pipes of a killed
        child, which nobody reads) and in a cancelled create (its grandchild holds a pipe).
        Close every asyncio subprocess transport so the loop can be closed."""
        from asyncio import base_subprocess

        cleanup()
        for obj in gc.get_objects():
            if isinstance(obj, base_subprocess.BaseSubprocessTransport):
                obj.close()
        await asyncio.wait(tasks, timeout=3)

    await warm_up(impl)
    fd0 = fd_count()
    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(job(i)) for i in range(STORM_TASKS)]
    delivered: list[int] = []  # tasks still running when their cancel came (cancel() is True)

    def cancel(task: asyncio.Task[str], i: int) -> None:
        if task.cancel():
            delivered.append(i)

    timers = [
        loop.call_later(when, cancel, tasks[i], i)
        for i, (_, _, when) in enumerate(plans)
        if when is not None
    ]
    await asyncio.wait(tasks, timeout=60 if impl.name == "rsubprocess" else 5)
    for timer in timers:  # those due after the last task ended
        timer.cancel()
    states = tally(tasks)
    if "still pending" in states:
        problems.append(f"{states['still pending']} tasks hung: {sorted(live)[:10]}...")
        if impl.name == "asyncio":
            await unstick_asyncio(tasks)
    else:
        unexpected = {k: v for k, v in states.items() if k not in ("ok", "cancelled")}
        if unexpected:
            problems.append(f"unexpected task outcomes: {unexpected}")
        # How many cancels arrive before their task is done depends on the implementation's
        # speed; the sleepers make a floor that does not. Every delivered cancel must end its
        # task cancelled: a task that returned or raised instead swallowed its cancellation.
        floor = sum(1 for shape, _, when in plans if shape == 3 and when is not None)
        if len(delivered) < floor:
            problems.append(f"only {len(delivered)} cancels reached a running task (< {floor})")
        if states.get("cancelled", 0) != len(delivered):
            not_cancelled = sorted(i for i in delivered if not tasks[i].cancelled())
            problems.append(
                f"{len(delivered)} cancels delivered, {states.get('cancelled', 0)} tasks cancelled"
                f" (delivered but not cancelled: {not_cancelled[:10]})"
            )
    # A cancelled task keeps its frames (and so its Process) alive through the
    # CancelledError's traceback; let them go before counting.
    del tasks
    gc.collect()
    if not await settle(lambda: not children() and fd_count() <= fd0, 5):
        problems.append(f"children {children()}, fds {fd_count()} (baseline {fd0})")
    left = cleanup()
    if left:
        problems.append(f"tagged processes left: {left}")
    states["cancels delivered"] = len(delivered)
    return {"states": states, "problems": problems}


@pytest.mark.parametrize("seed", [1, 2])
def test_cancel_storm(impl, run, loop_kind, tag, caplog, seed):
    """200 concurrent spawn + communicate tasks, two thirds cancelled at a random (seeded)
    moment. Afterwards: no child, no zombie, no fd, no tagged process left, nothing on the
    loop's exception handler ("Task exception was never retrieved"), no "Exception ignored",
    no asyncio error log.

    asyncio runs it in a fresh interpreter: its storm can leave tasks that ignore cancellation
    (uvloop), which would hang this process's loop close; there a hang is its recorded result.
    """
    if impl.name == "asyncio":
        out = run_scenario("storm", "asyncio", loop_kind, args={"seed": seed}, tag=tag, timeout=40)
        problems = out.failure()
        if not problems:
            r = out.result
            print(f"asyncio-{loop_kind} seed {seed}: {r['states']}")
            problems = r["problems"] + r["handler"] + r["log"]
            if r["close_hung"]:
                problems.append("closing the loop hung (tasks that ignore cancellation)")
            problems += noise(out.stderr)
        verdict("asyncio", problems, "storm")
        return
    result = run(lambda: storm(impl, seed, tag.env(), tag.cleanup), timeout=90)
    print(f"rsubprocess-{loop_kind} seed {seed}: {result['states']}")
    problems = result["problems"]
    # "Task/Future exception was never retrieved" reach the loop's exception handler (at
    # collection): part of this scenario's result, not only of the fixture's teardown check.
    gc.collect()
    problems += [
        f"loop exception handler: {ctx.get('message')} {ctx.get('exception')!r}"
        for ctx in run.contexts
    ]
    run.contexts.clear()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelname == "ERROR"]
    problems += [f"asyncio logged: {r.getMessage()[:200]}" for r in errors]
    verdict("rsubprocess", problems, "storm")
