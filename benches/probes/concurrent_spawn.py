"""N concurrent spawn + wait of /bin/true with rsubprocess, its low-fd spawn slots on or off.

Prints the total time, the loop's time inside each ``_core.spawn()`` call (p50, p90, max, sum)
and the children's CPU per child. Not part of ``make bench``::

    for i in 1 2 3 4; do for on in 0 1; do
        .venv/bin/python benches/probes/concurrent_spawn.py 1600 $on; done; done
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from typing import Any

import rsubprocess as rs
from rsubprocess import _core

N = int(sys.argv[1])
ON = sys.argv[2] == "1"
_core._set_fd_relay(ON)
durations: list[int] = []
_spawn = _core.spawn


def timed(*args: Any) -> Any:
    t = time.perf_counter_ns()
    try:
        return _spawn(*args)
    finally:
        durations.append(time.perf_counter_ns() - t)


_core.spawn = timed  # type: ignore[assignment]


async def one() -> None:
    proc = await rs.create_subprocess_exec("/bin/true")
    if await proc.wait() != 0:
        raise SystemExit("wrong return code")


async def main() -> float:
    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(N)))
    return time.perf_counter() - t


elapsed = asyncio.run(main())
durations.sort()
p50, p90 = durations[len(durations) // 2], durations[len(durations) * 9 // 10]
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(
    f"slots={ON} N={N} total {elapsed * 1e3:.0f} ms; spawn() p50 {p50 / 1e3:.0f} us p90 "
    f"{p90 / 1e3:.0f}"
    f" max {durations[-1] / 1e3:.0f}; sum {sum(durations) / 1e6:.0f} ms; child cpu/child "
    f"{(ru.ru_utime + ru.ru_stime) / N * 1e6:.0f} us"
)
