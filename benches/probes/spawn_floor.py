"""Where spawn + wait's time goes: workload (a) taken apart, one layer at a time.

Not part of ``make bench``: a diagnostic for the issue-6 note. Each mode runs 500 sequential
spawn + wait of ``/bin/true`` in a fresh process, the modes interleaved and rotated over the
repetitions, and prints the p50 latency of each (median over repetitions):

- ``limit``: the bench's raw limit program (Rust, posix_spawn + waitpid), a small process.
- ``limit+rss``: the same program holding as much resident heap as the Python process of the
  ``py-*`` modes, to see what the parent's size alone costs.
- ``py-posix_spawn``: Python, blocking ``os.posix_spawn`` + ``os.waitpid``; no event loop.
- ``py-rs-spawn``: Python, ``rsubprocess._core.spawn`` + a blocking wait for exec and exit
  (private API); no event loop: rsubprocess's spawn itself.
- ``loop-minimal``: ``_core.spawn``, its exec wait, then the pidfd awaited as ``wait()`` does
  (in place of an idle loop's sleep, else with a bare ``add_reader``) on asyncio's loop: the
  least any implementation on that loop could do with rsubprocess's spawn (no argument
  handling, no ``Process``, no streams).
- ``rsubprocess``, ``asyncio``: ``create_subprocess_exec`` + ``wait()`` on asyncio's loop.

Each mode also reports CPU per spawn (getrusage): the parent's, and the children's (``/bin/true``
from clone to exit). On a machine where the child runs on the parent's CPU (this 2-vCPU VM:
the limit's ``cpu_s`` equals its wall time), the latency is about their sum, so every
microsecond of parent CPU -- before the clone, between exec and exit, or after -- is on the
critical path; the ``sum`` column shows parent + child next to the p50.

Usage: ``python benches/probes/spawn_floor.py [--reps 5] [--n 500]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))
import bench  # noqa: E402  (the bench's bare spawn + wait, shared)

LIMIT_BIN = ROOT / "target" / "bench-limit" / "release" / "rsubprocess-bench-limit"
MODES = (
    "limit",
    "limit+rss",
    "py-posix_spawn",
    "py-rs-spawn",
    "loop-minimal",
    "rsubprocess",
    "asyncio",
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def p50(xs: list[float]) -> float:
    return statistics.median(xs) * 1e6


def cpu_now() -> tuple[float, float]:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def one(mode: str, n: int) -> dict[str, float]:
    lat: list[float] = []
    cpu0 = cpu_now()
    if mode == "py-posix_spawn":
        argv = ["/bin/true"]
        for _ in range(n + 1):
            t = time.perf_counter()
            pid = os.posix_spawn("/bin/true", argv, os.environ)
            _, status = os.waitpid(pid, 0)
            lat.append(time.perf_counter() - t)
            assert status == 0
    elif mode == "py-rs-spawn":
        from rsubprocess import _core

        args = bench.bare_spawn_args()
        for _ in range(n + 1):
            t = time.perf_counter()
            job = _core.spawn(*args)
            fd = job.take_pidfd()
            del job  # its drop waits (blocking) for the exec
            info = os.waitid(os.P_PIDFD, fd, os.WEXITED)
            os.close(fd)
            lat.append(time.perf_counter() - t)
            assert info is not None and info.si_status == 0
    elif mode == "loop-minimal":
        spawn_args = bench.bare_spawn_args()

        async def minimal() -> None:
            loop = asyncio.get_running_loop()
            for _ in range(n + 1):
                t = time.perf_counter()
                await bench.bare_spawn_wait(loop, spawn_args)
                lat.append(time.perf_counter() - t)

        asyncio.run(minimal())
    else:
        if mode == "rsubprocess":
            import rsubprocess as api
        else:
            api = asyncio  # type: ignore[assignment]

        async def main() -> None:
            for _ in range(n + 1):
                t = time.perf_counter()
                proc = await api.create_subprocess_exec("/bin/true")
                rc = await proc.wait()
                lat.append(time.perf_counter() - t)
                assert rc == 0

        asyncio.run(main())
    cpu1 = cpu_now()
    return {
        "p50_us": p50(lat[1:]),
        "rss": float(rss_bytes()),
        "parent_us": (cpu1[0] - cpu0[0]) / (n + 1) * 1e6,
        "child_us": (cpu1[1] - cpu0[1]) / (n + 1) * 1e6,
    }


def run(mode: str, n: int, rss: int) -> dict[str, float]:
    if mode.startswith("limit"):
        heap = rss if mode == "limit+rss" else 0
        out = subprocess.run(
            [str(LIMIT_BIN), "spawn", str(n), str(heap)], check=True, capture_output=True
        ).stdout
        m = json.loads(out)["metrics"]
        return {
            "p50_us": m["p50_us"],
            "parent_us": m["cpu_self_s"] / n * 1e6,
            "child_us": (m["cpu_s"] - m["cpu_self_s"]) / n * 1e6,
        }
    out = subprocess.run(
        [sys.executable, __file__, "--one", mode, "--n", str(n)], check=True, capture_output=True
    ).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--one")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.n)))
        return
    if not LIMIT_BIN.exists():
        sys.exit(f"build the limit first (make bench builds it): {LIMIT_BIN}")
    rss = int(run("py-posix_spawn", 50, 0)["rss"])
    res: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    for rep in range(a.reps):
        order = MODES[rep % len(MODES) :] + MODES[: rep % len(MODES)]
        for mode in order:
            r = run(mode, a.n, rss)
            res[mode].append(r["p50_us"])
            cpu[mode].append((r["parent_us"], r["child_us"]))
    py = sys.version.split()[0]
    print(f"CPython {py}, {a.reps} reps x {a.n} spawns; Python RSS {rss >> 20} MiB")
    print("  CPU per spawn in us (medians): parent, children, their sum")
    base = statistics.median(res["limit"])
    for mode in MODES:
        med = statistics.median(res[mode])
        spread = f"{min(res[mode]):.0f}-{max(res[mode]):.0f}"
        par = statistics.median(c[0] for c in cpu[mode])
        kid = statistics.median(c[1] for c in cpu[mode])
        print(
            f"  {mode:15s} p50 {med:6.0f} us ({spread})  limit/this {base / med:.2f}"
            f"  cpu {par:4.0f} + {kid:4.0f} = {par + kid:4.0f}"
        )


if __name__ == "__main__":
    main()
