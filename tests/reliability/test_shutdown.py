"""Shutdown with children still running, in a fresh interpreter each time.

Four children that would run for 30 s (one without pipes, one blocked writing 1 MiB nobody
reads, a ``cat`` blocked reading stdin, ``yes`` writing without end), and a pending ``wait()``:

* ``asyncio_run``: ``asyncio.run()`` (``uvloop.run()``) returns while they run;
* ``exit_loop_open``: the interpreter exits with the ``Process`` objects alive, loop not closed;
* ``exit_loop_closed``: the loop is closed, the ``Process`` objects live until the exit;
* ``thread_close``: the loop runs in a thread and is closed from the main thread.

rsubprocess (DESIGN 1b): no hang, no traceback, every child killed and reaped (no zombie, no
survivor carrying the test's token), stderr holds nothing but the ResourceWarnings that say so
(and asyncio's own "loop is closed" ResourceWarning for the unclosed stdin writer).
"""

from __future__ import annotations

import re

import pytest

from tests.reliability.conftest import (
    RSUBPROCESS_KILLED,
    first_lines,
    noise,
    run_scenario,
    verdict,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

#: asyncio 3.11+'s StreamWriter.__del__ when its loop is closed (rsubprocess mirrors it).
LOOP_IS_CLOSED = re.compile(r"ResourceWarning: loop is closed$")
#: asyncio's own warning for the loop the script never closed (exit_loop_open): the script's.
UNCLOSED_LOOP = re.compile(r"ResourceWarning: unclosed event loop <")
CHILDREN = 4


@pytest.mark.parametrize(
    "how", ["asyncio_run", "exit_loop_open", "exit_loop_closed", "thread_close"]
)
def test_shutdown_with_running_children(impl_name, loop_kind, tag, how):
    out = run_scenario("shutdown", impl_name, loop_kind, args={"how": how}, tag=tag, timeout=30)
    problems = out.failure()
    if not problems:
        left = out.result.get("children_after")
        if left:
            problems.append(f"children of the interpreter after the loop went away: {left}")
        if out.result.get("thread_alive"):
            problems.append("the loop thread did not finish")
    survivors = tag.settle(1.0)
    if survivors:
        problems.append(f"{len(survivors)} children survived the interpreter: {survivors}")
        tag.cleanup()
    extra = noise(out.stderr, [RSUBPROCESS_KILLED, LOOP_IS_CLOSED, UNCLOSED_LOOP])
    if extra:
        problems.append(f"stderr noise: {first_lines(chr(10).join(extra), 6)}")
    if impl_name == "rsubprocess":
        warned = len(RSUBPROCESS_KILLED.findall(out.stderr))
        if warned != CHILDREN:
            problems.append(f"{warned} 'was still running' ResourceWarnings, {CHILDREN} expected")
    print(f"{impl_name}-{loop_kind}-{how}: {problems or 'clean'}")
    verdict(impl_name, problems, f"shutdown {how}")
