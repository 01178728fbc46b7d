"""A newcomer's first look: the same jobs through asyncio and rsubprocess, side by side.

Run by ``make demo``. Timings are wall-clock, best of 3, on whatever machine you are on; the
full benchmark with ratios and plots is ``make bench``.
"""

from __future__ import annotations

import asyncio
import platform
import sys
import time
from typing import Any, Awaitable, Callable

import rsubprocess

IMPLS: dict[str, Any] = {"asyncio": asyncio.subprocess, "rsubprocess": rsubprocess}
PIPE = asyncio.subprocess.PIPE


async def spawn_loop(impl: Any, n: int = 200) -> str:
    for _ in range(n):
        proc = await impl.create_subprocess_exec("/bin/true")
        assert await proc.wait() == 0
    return f"{n} spawns"


async def big_communicate(impl: Any, size: int = 64 << 20) -> str:
    data = b"x" * size
    proc = await impl.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
    out, _ = await proc.communicate(data)
    assert out == data and proc.returncode == 0
    return f"{size >> 20} MiB through cat"


async def read_lines(impl: Any, n: int = 500_000) -> str:
    proc = await impl.create_subprocess_exec("seq", str(n), stdout=PIPE)
    count = 0
    async for _line in proc.stdout:
        count += 1
    assert count == n and await proc.wait() == 0
    return f"{n} lines by async for"


def best_of(job: Callable[[Any], Awaitable[str]], impl: Any, runs: int = 3) -> tuple[float, str]:
    best, label = float("inf"), ""
    for _ in range(runs):
        t0 = time.perf_counter()
        label = asyncio.run(job(impl))
        best = min(best, time.perf_counter() - t0)
    return best, label


def main() -> None:
    print(f"rsubprocess {rsubprocess.__version__} demo - Python {platform.python_version()}")
    print(f"{'job':<28}{'asyncio':>12}{'rsubprocess':>14}{'speed-up':>10}")
    for job in (spawn_loop, big_communicate, read_lines):
        times = {}
        label = ""
        for name, impl in IMPLS.items():
            times[name], label = best_of(job, impl)
        ratio = times["asyncio"] / times["rsubprocess"]
        print(
            f"{label:<28}{times['asyncio'] * 1e3:>10.1f}ms"
            f"{times['rsubprocess'] * 1e3:>12.1f}ms{ratio:>9.2f}x"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
