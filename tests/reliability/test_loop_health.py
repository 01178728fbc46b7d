"""Loop health: a 1 ms heartbeat keeps beating while 100 children are spawned (and waited for)
from a process holding a 512 MiB heap, in a fresh interpreter.

The longest stall is reported for every implementation; only a hang-detector bound (50 ms) is
asserted, and only for rsubprocess (uvloop's own spawn stalls ~35 ms; asyncio forks with
vfork). Speed itself belongs to the benchmark (make bench).
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import first_lines, noise, run_scenario, verdict

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

HANG_MS = 50


def test_heartbeat_while_spawning_from_a_big_heap(impl_name, loop_kind, tag):
    out = run_scenario(
        "heartbeat",
        impl_name,
        loop_kind,
        args={"heap_mib": 512, "children": 100},
        tag=tag,
        timeout=60,
    )
    if out.failure():
        verdict(impl_name, out.failure(), "heartbeat")
    r = out.result
    print(
        f"{impl_name}-{loop_kind}: longest stall {r['max_stall_ms']:.1f} ms, p99 "
        f"{r['p99_stall_ms']:.1f} ms over {r['beats']} beats, 100 spawns in "
        f"{r['spawn_seconds']:.2f} s"
    )
    problems = []
    if noise(out.stderr):
        problems.append(f"stderr: {first_lines(out.stderr, 4)}")
    if impl_name == "rsubprocess" and r["max_stall_ms"] >= HANG_MS:
        problems.append(f"the loop stalled {r['max_stall_ms']:.0f} ms (hang bound {HANG_MS} ms)")
    verdict(impl_name, problems, "heartbeat")
