"""rsubprocess's benchmark suite: asyncio, uvloop and rsubprocess side by side (issue 6).

Run by ``make bench`` (``make bench-smoke`` for a tiny CI-sized run). Every workload runs for
every implementation **interleaved in one run**: per repetition, each workload is run once per
implementation (and once by the raw limit program), in an order rotated every repetition so
host drift hits all alike. Each run is a fresh Python process (clean heap, clean RSS, fresh
event loop), killed with its process group when it exceeds the timeout. Every result is checked
(byte counts and contents, line counts, return codes); a wrong result, a crash or a hang is
reported as FAILED with the command that reproduces it, never as a number.

The raw limit (``benches/limit``, Rust, built here with cargo) does the same work with direct
syscalls and no event loop, so each number can be read as a fraction of what the machine can do.

Output: a Markdown table (``benches/results/latest.md`` plus a dated copy), the raw numbers
(``latest.json``), a plot (``latest.png``), and the table on stdout. Ratios are "how many times
better rsubprocess is" (higher is better whatever the metric: for times and memory the ratio is
other/rsubprocess). Absolute numbers on these shared machines drift; ratios from one run count.

Usage::

    python benches/bench.py [--reps 5] [--scale 1] [--smoke] [--only a,c] [--impls ...]
    python benches/bench.py --worker WORKLOAD IMPL [--scale S]   # one run, JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import hashlib
import importlib.util
import json
import os
import platform
import random
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LIMIT_DIR = HERE / "limit"
LIMIT_TARGET = ROOT / "target" / "bench-limit"
LIMIT_BIN = LIMIT_TARGET / "release" / "rsubprocess-bench-limit"

KiB = 1 << 10
MiB = 1 << 20
IMPLS = ("asyncio", "uvloop", "rsubprocess", "rsubprocess+uvloop")
# Not run by default: rsubprocess with its low-fd spawn slots turned off (src/spawn/relay.rs; on
# by default), to compare, with `--impls ...,rsubprocess-copy`.
EXTRA_IMPLS = ("rsubprocess-copy",)
LIMIT = "limit"
CHUNK_F = 64 * KiB  # (f): the child alternates chunks of this size
SMOKE_SCALE = 1 / 64
X = "\u00d7"  # multiplication sign (spelled out for ruff RUF001)
DASH = "\u2013"  # en dash
PIPE = subprocess.PIPE

# The (f) child: `chunks` x 64 KiB to stdout then stderr, alternating, with blocking writes.
F_CHILD = (
    "import os, sys\n"
    "n = int(sys.argv[1]); o = b'o' * 65536; e = b'e' * 65536\n"
    "def w(fd, b):\n"
    "    v = memoryview(b)\n"
    "    while v:\n"
    "        v = v[os.write(fd, v):]\n"
    "for _ in range(n):\n"
    "    w(1, o); w(2, e)\n"
)


# ------------------------------------------------------------------------------------------------
# Workload definitions


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool = False
    plot: bool = False
    compare: bool = True  # False: context only, no ratios


M = {
    m.key: m
    for m in (
        Metric("p50_us", "p50 latency (µs)", plot=True),
        Metric("p99_us", "p99 latency (µs)"),
        Metric("alt_p50_us", "p50, alternating with a bare spawn+wait (µs)", compare=False),
        Metric("floor_p50_us", "p50, bare spawn+wait on this loop (µs)", compare=False),
        Metric("stall_ms", "max loop stall (ms)", plot=True),
        Metric("stall_p99_ms", "p99 loop stall (ms)"),
        Metric("stall_idle_ms", "max stall, idle loop before (ms)", compare=False),
        Metric("stall_idle_same_ms", "max stall, idle loop, same duration (ms)", compare=False),
        Metric("stall_idle_p99_ms", "p99 stall, idle loop, same duration (ms)", compare=False),
        Metric(
            "stall_wake_ms",
            "max stall, idle loop + no-op wake-ups at the spawning's rate (ms)",
            compare=False,
        ),
        Metric(
            "stall_wake_p99_ms",
            "p99 stall, idle loop + no-op wake-ups at the spawning's rate (ms)",
            compare=False,
        ),
        Metric("busy_ms", "longest loop busy stretch, between two polls (ms)"),
        Metric("busy_p99_ms", "p99 loop busy stretch (ms)"),
        Metric("busy_cpu_ms", "longest loop work in one stretch, thread CPU (ms)"),
        Metric("blocked_n", "stretches in which the loop thread slept (a blocking call)"),
        Metric("blocked_ms", "longest sleep inside a stretch (ms)"),
        Metric(
            "preempted_ms",
            "longest time another task held the loop's CPU within a stretch (ms)",
            compare=False,
        ),
        Metric("total_ms", "total time (ms)", plot=True),
        Metric("mib_s", "throughput (MiB/s)", higher_is_better=True, plot=True),
        Metric("mlines_s", "lines (M/s)", higher_is_better=True, plot=True),
        Metric("rt_us", "round trip (µs)", plot=True),
        Metric("rss_mib", "(h) peak RSS growth (MiB)"),
        Metric("rss_x_out", "(h) peak RSS growth / output size", plot=True),
        Metric("cpu_self_s", "CPU s, benchmark process"),
        Metric("cpu_s", "CPU s, process + children"),
    )
}


@dataclass(frozen=True)
class Workload:
    key: str
    metrics: tuple[str, ...]
    title: Callable[[dict[str, Any]], str]


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def _count(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


CPU = ("cpu_self_s", "cpu_s")
WORKLOADS = {
    w.key: w
    for w in (
        Workload(
            "a",
            ("p50_us", "p99_us", "alt_p50_us", "floor_p50_us", *CPU),
            lambda p: f"a: spawn+wait /bin/true {X}{p['n']} sequential",
        ),
        Workload(
            "a2",
            (
                "p50_us",
                "p99_us",
                "stall_ms",
                "stall_p99_ms",
                "stall_idle_ms",
                "stall_idle_same_ms",
                "stall_idle_p99_ms",
                "stall_wake_ms",
                "stall_wake_p99_ms",
                "busy_ms",
                "busy_p99_ms",
                "busy_cpu_ms",
                "blocked_n",
                "blocked_ms",
                "preempted_ms",
                *CPU,
            ),
            lambda p: f"a2: as a, {_size(p['heap'])} heap + 1 ms heartbeat",
        ),
        Workload("b", ("total_ms", *CPU), lambda p: f"b: {p['n']} concurrent spawn+wait"),
        Workload(
            "c",
            ("mib_s", "rss_mib", "rss_x_out", *CPU),
            lambda p: f"c: communicate() {_size(p['size'])} through cat",
        ),
        Workload(
            "d1",
            ("mib_s", "rss_mib", "rss_x_out", *CPU),
            lambda p: f"d1: {_size(p['size'])} stdout by communicate()",
        ),
        Workload("d2", ("mib_s", *CPU), lambda p: f"d2: {_size(p['size'])} stdout by read(65536)"),
        Workload("e_for", ("mlines_s", *CPU), lambda p: f"e: {_count(p['n'])} lines by async for"),
        Workload(
            "e_readline",
            ("mlines_s", *CPU),
            lambda p: f"e: {_count(p['n'])} lines by readline()",
        ),
        Workload(
            "f",
            ("mib_s", "rss_mib", "rss_x_out", *CPU),
            lambda p: (
                f"f: {_size(p['chunks'] * CHUNK_F)} stdout + stderr, 64 KiB alternating, "
                "communicate()"
            ),
        ),
        Workload(
            "g", ("rt_us", *CPU), lambda p: f"g: 100 B ping-pong with cat {X}{_count(p['n'])}"
        ),
        Workload(
            "g_pin",
            ("rt_us", *CPU),
            lambda p: f"g: ping-pong {X}{_count(p['n'])}, pinned to CPU {p['cpu']}",
        ),
    )
}


def params(key: str, scale: float) -> dict[str, Any]:
    """Sizes and counts of one workload at `scale` (1 = the sizes of issue 6)."""

    def n(base: float, lo: int) -> int:
        return max(lo, round(base * scale))

    if key in ("a", "a2"):
        return {"n": n(500, 2), "heap": n(512 * MiB, MiB) if key == "a2" else 0}
    if key == "b":
        return {"n": n(200, 2)}
    if key in ("c", "d1", "d2"):
        return {"size": n(256 * MiB, 64 * KiB)}
    if key in ("e_for", "e_readline"):
        return {"n": n(2_000_000, 100)}
    if key == "f":
        return {"chunks": n(64 * MiB / CHUNK_F, 1)}
    if key in ("g", "g_pin"):
        return {"n": n(20_000, 10), "cpu": min(os.sched_getaffinity(0)) if key == "g_pin" else -1}
    raise KeyError(key)


def seq_bytes(n: int) -> int:
    """Length of `seq n`'s output."""
    total, digits, lo = 0, 1, 1
    while lo <= n:
        hi = min(n, lo * 10 - 1)
        total += (hi - lo + 1) * (digits + 1)
        digits, lo = digits + 1, lo * 10
    return total


def pattern(size: int) -> bytes:
    """`size` bytes of a pattern that does not repeat at any power of two (as the limit's)."""
    block = bytes(((i * 2654435761) & 0xFFFFFFFF) >> 13 & 0xFF for i in range(65537))
    return (block * (size // len(block) + 1))[:size]


def limit_args(key: str, p: dict[str, Any]) -> list[str]:
    if key in ("a", "a2"):
        args: list[Any] = ["spawn", p["n"], p["heap"]]
    elif key == "b":
        args = ["concurrent", p["n"]]
    elif key == "c":
        args = ["cat", p["size"]]
    elif key in ("d1", "d2"):
        args = ["read", p["size"], int(key == "d1")]
    elif key in ("e_for", "e_readline"):
        args = ["lines", p["n"], seq_bytes(p["n"])]
    elif key == "f":
        args = ["interleave", p["chunks"], CHUNK_F, *f_child_argv(p["chunks"])]
    else:
        args = ["pingpong", p["n"], p["cpu"]]
    return [str(a) for a in args]


def f_child_argv(chunks: int) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", F_CHILD, str(chunks)]


# ------------------------------------------------------------------------------------------------
# The worker side: one workload, one implementation, in this (fresh) process


class WrongResult(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise WrongResult(what)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _cpu() -> tuple[float, float]:
    """User+sys CPU seconds of this process, and of it plus its reaped children.

    getrusage rather than os.times(): the same counters, in microseconds instead of ticks.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    s = own.ru_utime + own.ru_stime
    return s, s + kids.ru_utime + kids.ru_stime


class Meter:
    """Wall clock, CPU time (getrusage: self and reaped children) and peak RSS growth.

    Peak RSS: VmHWM is reset to the current RSS through /proc/self/clear_refs ("5") at start
    and read at stop; where that is refused, a thread samples VmRSS every millisecond.
    """

    def __init__(self, rss: bool = False) -> None:
        self.rss = rss
        self._sampler: Optional[threading.Thread] = None
        self._sampling = False
        self._peak_kib = 0

    def start(self) -> None:
        if self.rss:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self._hwm = True
            except OSError:
                self._hwm = False
            self._base_kib = _status_kib("VmRSS")
            if not self._hwm:
                self._peak_kib = self._base_kib
                self._sampling = True
                self._sampler = threading.Thread(target=self._sample, daemon=True)
                self._sampler.start()
        self._t0 = _cpu()
        self._w0 = time.perf_counter()

    def _sample(self) -> None:
        while self._sampling:
            self._peak_kib = max(self._peak_kib, _status_kib("VmRSS"))
            time.sleep(0.001)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._w0
        t1 = _cpu()
        m = {"wall_s": wall}
        if self.rss:
            if self._hwm:
                peak = _status_kib("VmHWM")
            else:
                self._sampling = False
                assert self._sampler is not None
                self._sampler.join()
                peak = self._peak_kib
            m["rss_mib"] = (peak - self._base_kib) / KiB
        m["cpu_self_s"] = t1[0] - self._t0[0]
        m["cpu_s"] = t1[1] - self._t0[1]
        return m


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (as the limit program's)."""
    s = sorted(values)
    k = min(len(s), max(1, -(-len(s) * q // 100)))
    return s[int(k) - 1]


async def run_true(api: Any, what: str) -> None:
    """One ``/bin/true`` spawned and waited for through `api`, its exit status checked. The
    timed loops of a and a2 spell this out instead, so their timing holds nothing else."""
    proc = await api.create_subprocess_exec("/bin/true")
    rc = await proc.wait()
    check(rc == 0, f"{what} /bin/true exited {rc}")


async def warm_up(api: Any) -> None:
    """One spawn before timing (lazy set-up of loops and watchers), then a full collection."""
    await run_true(api, "warm-up")
    gc.collect()  # here, not in the timed section (and not in a2's heartbeat window)


class Heartbeat:
    """A task sleeping 1 ms at a time, recording how late it wakes up (the loop's stalls)."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.late.append(time.perf_counter() - t - 0.001)

    async def stop(self) -> list[float]:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        return self.late


class BusyMeter:
    """The loop's stretches of work between two polls: from its selector's return to its next
    call, i.e. how long the loop thread was kept from serving anything else.

    The direct measure of what a2 is after (does spawning block the loop?), free of the
    heartbeat's timer rounding (see :func:`wake_control`). Each stretch also records the loop
    thread's own CPU time (thread_time) and context switches (getrusage(RUSAGE_THREAD)),
    which tell apart the three reasons a stretch is long: the loop's own work (CPU, which on a
    VM includes time the host took the vCPU away), a blocking call in it (a voluntary switch:
    the thread slept, e.g. Popen waiting for the exec), or another task run on the loop's CPU
    by the scheduler (an involuntary switch: on this 2-vCPU VM, usually the child itself).
    Only where the loop polls through a Python selector (asyncio's default loop, whoever
    spawns on it); uvloop polls inside libuv, so it has no such figure. It runs in a pass of
    its own (the same spawning, with the heartbeat), not in the timed one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # (wall s, thread CPU s, voluntary switches, involuntary switches) per stretch
        self.stretches: list[tuple[float, float, int, int]] = []
        self._selector = getattr(loop, "_selector", None)
        self._last: Optional[tuple[float, float, int, int]] = None

    @property
    def available(self) -> bool:
        return self._selector is not None and hasattr(self._selector, "select")

    def start(self) -> None:
        if not self.available:
            return
        real = type(self._selector).select.__get__(self._selector)
        clock = time.perf_counter
        usage = resource.getrusage
        who = resource.RUSAGE_THREAD  # type: ignore[attr-defined]
        # getrusage's times are tick-sampled and scaled: useless below a millisecond, so CPU
        # is CLOCK_THREAD_CPUTIME_ID (exact); the switch counts are exact in getrusage.
        cpu = time.thread_time

        def now() -> tuple[float, float, int, int]:
            ru = usage(who)
            return clock(), cpu(), ru.ru_nvcsw, ru.ru_nivcsw

        def select(timeout: Optional[float] = None) -> Any:
            if self._last is not None:
                t = now()
                w0, c0, v0, i0 = self._last
                self.stretches.append((t[0] - w0, t[1] - c0, t[2] - v0, t[3] - i0))
            try:
                return real(timeout)
            finally:
                self._last = now()

        self._selector.select = select  # type: ignore[union-attr]

    def stop(self) -> dict[str, float]:
        if self.available and "select" in vars(self._selector):
            del self._selector.select  # type: ignore[union-attr]
        st = self.stretches
        check(len(st) > 0, "the loop never polled")
        blocked = [w - c for w, c, v, _ in st if v > 0]
        preempted = [w - c for w, c, v, i in st if i > 0 and v == 0]
        return {
            "busy_ms": max(w for w, *_ in st) * 1e3,
            "busy_p99_ms": percentile([w for w, *_ in st], 99) * 1e3,
            "busy_cpu_ms": max(c for _, c, *_ in st) * 1e3,
            "blocked_n": float(len(blocked)),
            "blocked_ms": max(blocked, default=0.0) * 1e3,
            "preempted_ms": max(preempted, default=0.0) * 1e3,
        }


async def wake_control(seconds: float, rate_hz: float) -> list[float]:
    """The heartbeat on a loop that nothing but a pipe wakes, `rate_hz` times a second at
    random intervals, with a callback that only reads the byte: no subprocess at all.

    The control for a2's stall. The default loop rounds epoll's timeout up to whole
    milliseconds, so any wake-up that lands inside the heartbeat's 1 ms sleep re-arms it with
    a rounded-up timeout and it fires late by up to 1 ms -- however little the wake-up costs.
    Spawning wakes the loop (exec done, exit), so this is the floor the spawning's stall is
    read against.
    """
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    os.set_blocking(r, False)
    loop.add_reader(r, os.read, r, 4096)
    stop = threading.Event()

    def pinger() -> None:
        rnd = random.Random(6)
        mean = 1.0 / rate_hz
        while not stop.wait(rnd.uniform(0.0, 2.0 * mean)):
            os.write(w, b"x")

    th = threading.Thread(target=pinger, daemon=True)
    th.start()
    try:
        heartbeat = Heartbeat()
        await asyncio.sleep(seconds)
        return await heartbeat.stop()
    finally:
        stop.set()
        th.join()
        loop.remove_reader(r)
        os.close(r)
        os.close(w)


def bare_spawn_args() -> tuple[Any, ...]:
    """What ``create_subprocess_exec("/bin/true")`` passes to rsubprocess's ``_core.spawn``."""
    from rsubprocess import _core, _native

    captured: list[tuple[Any, ...]] = []
    real = _core.spawn
    _core.spawn = lambda *a: captured.append(a)  # what create_subprocess_exec would pass
    try:
        _native.start_native(("/bin/true",), False, (-1, -1, -1), {}, 0, None)
    finally:
        _core.spawn = real
    check(len(captured) == 1, "the native spawn path is not available")
    return captured[0]


async def bare_spawn_wait(loop: asyncio.AbstractEventLoop, spawn_args: tuple[Any, ...]) -> None:
    """One spawn + wait with nothing but rsubprocess's native spawn and exec wait, then the
    pidfd awaited as ``wait()`` does (in place of an idle loop's sleep, else through a bare
    ``add_reader``) -- no argument handling, no ``Process``, no streams, no reaping
    bookkeeping (private API)."""
    from rsubprocess import _core
    from rsubprocess.subprocess import _idle_window

    job = _core.spawn(*spawn_args)
    await job.wait_exec(loop)  # waits in place of an idle loop's sleep, as the real path
    fd = job.take_pidfd()
    # The exit, as Process.wait() waits for it: in place of an idle loop's sleep, else
    # through the loop.
    loop_fd, window_us = _idle_window(loop)
    exited = False
    if window_us:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(loop_fd, select.POLLIN)
        exited = any(f == fd for f, _ in poller.poll(window_us // 1000))
    if not exited:
        fut = loop.create_future()
        loop.add_reader(fd, fut.set_result, None)
        await fut
        loop.remove_reader(fd)
    status = os.waitid(os.P_PIDFD, fd, os.WEXITED)  # type: ignore[attr-defined]
    os.close(fd)
    check(status is not None and status.si_status == 0, "/bin/true failed")


async def loop_floor(api: Any, n: int) -> tuple[float, float]:
    """p50 of :func:`bare_spawn_wait`, the least spawn + wait any implementation on this loop
    could do with this spawn, and of ``create_subprocess_exec`` + ``wait()``.

    Measured in rsubprocess's workers after workload (a), alternating one for one, so both
    see the same conditions. Their ratio is how much faster rsubprocess could be on this
    loop at all: the rest of the distance to the limit is the loop's own (and the
    interpreter's).
    """
    spawn_args = bare_spawn_args()
    loop = asyncio.get_running_loop()
    lat, full = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await run_true(api, "alternating")
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await bare_spawn_wait(loop, spawn_args)
        lat.append(time.perf_counter() - t0)
    return percentile(full, 50) * 1e6, percentile(lat, 50) * 1e6


async def w_spawn(api: Any, p: dict[str, Any]) -> dict[str, float]:
    heap = b"\x01" * p["heap"]  # touched by the fill: resident
    await warm_up(api)
    heartbeat = None
    m_idle = {}
    if p["heap"]:
        # The heartbeat's noise floor on this loop and machine: 0.2 s with nothing to do.
        heartbeat = Heartbeat()
        await asyncio.sleep(0.2)
        m_idle["stall_idle_ms"] = max(heartbeat.late, default=0.0) * 1e3
        heartbeat.late.clear()
    lat = []
    meter = Meter()
    meter.start()
    for _ in range(p["n"]):
        t0 = time.perf_counter()
        proc = await api.create_subprocess_exec("/bin/true")
        rc = await proc.wait()
        lat.append(time.perf_counter() - t0)
        check(rc == 0, f"/bin/true exited {rc}")
    m = meter.stop()
    if heartbeat is not None:
        late = list(heartbeat.late)
        # The noise floor over a window as long as the spawning took (at most 5 s): on a shared
        # VM the longest stall of an idle loop grows with the time watched.
        heartbeat.late.clear()
        await asyncio.sleep(min(m["wall_s"], 5.0))
        idle = await heartbeat.stop()
        check(len(late) > 0 and len(idle) > 0, "the heartbeat never ran")
        m["stall_ms"] = max(late) * 1e3
        m["stall_p99_ms"] = percentile(late, 99) * 1e3
        m["stall_idle_same_ms"] = max(idle) * 1e3
        m["stall_idle_p99_ms"] = percentile(idle, 99) * 1e3
        # rsubprocess's spawn wakes the loop twice (exec done, exit); the same rate for every
        # implementation, so the controls compare.
        woken = await wake_control(min(m["wall_s"], 5.0), 2 * p["n"] / m["wall_s"])
        check(len(woken) > 0, "the heartbeat never ran")
        m["stall_wake_ms"] = max(woken) * 1e3
        m["stall_wake_p99_ms"] = percentile(woken, 99) * 1e3
        m.update(m_idle)
        busy = BusyMeter(asyncio.get_running_loop())
        if busy.available:
            # A pass of its own, after the timed one: measured alternately in fresh processes,
            # the meter's calls around every poll moved rsubprocess's p99 heartbeat stall from
            # 0.81 to 1.07 ms (medians of 8), so it must not share the heartbeat's pass.
            heartbeat = Heartbeat()
            busy.start()
            for _ in range(p["n"]):
                await run_true(api, "metered")
            m.update(busy.stop())
            await heartbeat.stop()
    check(len(heap) == p["heap"], "heap")
    m["p50_us"] = percentile(lat, 50) * 1e6
    m["p99_us"] = percentile(lat, 99) * 1e6
    if not p["heap"] and api.__name__ == "rsubprocess":
        m["alt_p50_us"], m["floor_p50_us"] = await loop_floor(api, p["n"])
    return m


async def w_concurrent(api: Any, p: dict[str, Any]) -> dict[str, float]:
    async def one() -> int:
        proc = await api.create_subprocess_exec("/bin/true")
        return int(await proc.wait())

    await warm_up(api)
    meter = Meter()
    meter.start()
    rcs = await asyncio.gather(*(one() for _ in range(p["n"])))
    m = meter.stop()
    check(rcs == [0] * p["n"], f"return codes {sorted(set(rcs))}")
    m["total_ms"] = m["wall_s"] * 1e3
    return m


async def w_cat(api: Any, p: dict[str, Any]) -> dict[str, float]:
    size = p["size"]
    data = pattern(size)
    await warm_up(api)
    meter = Meter(rss=True)
    meter.start()
    proc = await api.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
    out, err = await proc.communicate(data)
    m = meter.stop()
    check(proc.returncode == 0, f"cat exited {proc.returncode}")
    check(err is None, f"stderr {err!r:.50}")
    check(len(out) == size, f"{len(out)} bytes back, expected {size}")
    check(out == data, "the bytes back differ from the bytes sent")
    m["mib_s"] = size / MiB / m["wall_s"]
    m["rss_x_out"] = m["rss_mib"] * MiB / size
    return m


async def w_read(api: Any, p: dict[str, Any], by_read: bool) -> dict[str, float]:
    size = p["size"]
    await warm_up(api)
    meter = Meter(rss=not by_read)
    meter.start()
    proc = await api.create_subprocess_exec("head", "-c", str(size), "/dev/zero", stdout=PIPE)
    if by_read:
        total = biggest = 0
        read = proc.stdout.read
        while True:
            chunk = await read(65536)
            if not chunk:
                break
            n = len(chunk)
            total += n
            if n > biggest:
                biggest = n
        rc = await proc.wait()
        m = meter.stop()
        check(biggest <= 65536, f"read(65536) returned {biggest} bytes")
    else:
        out, err = await proc.communicate()
        rc = proc.returncode
        m = meter.stop()
        check(err is None, f"stderr {err!r:.50}")
        total = len(out)
        check(total != size or out == bytes(size), "the bytes read are not all zero")
        m["rss_x_out"] = m["rss_mib"] * MiB / size
    check(rc == 0, f"head exited {rc}")
    check(total == size, f"{total} bytes read, expected {size}")
    m["mib_s"] = size / MiB / m["wall_s"]
    return m


async def w_lines(api: Any, p: dict[str, Any], by_readline: bool) -> dict[str, float]:
    n = p["n"]
    await warm_up(api)
    meter = Meter()
    meter.start()
    proc = await api.create_subprocess_exec("seq", str(n), stdout=PIPE)
    count = nbytes = 0
    last = b""
    if by_readline:
        readline = proc.stdout.readline
        while True:
            line = await readline()
            if not line:
                break
            count += 1
            nbytes += len(line)
            last = line
    else:
        async for line in proc.stdout:
            count += 1
            nbytes += len(line)
            last = line
    rc = await proc.wait()
    m = meter.stop()
    check(rc == 0, f"seq exited {rc}")
    check(count == n, f"{count} lines, expected {n}")
    check(nbytes == seq_bytes(n), f"{nbytes} bytes in lines, expected {seq_bytes(n)}")
    check(last == b"%d\n" % n, f"last line {last!r:.40}, expected {n}")
    m["mlines_s"] = n / 1e6 / m["wall_s"]
    return m


async def w_interleave(api: Any, p: dict[str, Any]) -> dict[str, float]:
    size = p["chunks"] * CHUNK_F
    await warm_up(api)
    meter = Meter(rss=True)
    meter.start()
    proc = await api.create_subprocess_exec(*f_child_argv(p["chunks"]), stdout=PIPE, stderr=PIPE)
    out, err = await proc.communicate()
    m = meter.stop()
    check(proc.returncode == 0, f"child exited {proc.returncode}: {err[-300:]!r}")
    check(len(out) == size, f"stdout: {len(out)} bytes, expected {size}")
    check(len(err) == size, f"stderr: {len(err)} bytes, expected {size}")
    check(out == b"o" * size and err == b"e" * size, "stdout and stderr bytes mixed up")
    m["mib_s"] = 2 * size / MiB / m["wall_s"]
    m["rss_x_out"] = m["rss_mib"] * MiB / (2 * size)
    return m


async def w_pingpong(api: Any, p: dict[str, Any]) -> dict[str, float]:
    n = p["n"]
    await warm_up(api)
    meter = Meter()
    meter.start()
    proc = await api.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
    write, drain, readline = proc.stdin.write, proc.stdin.drain, proc.stdout.readline
    for i in range(n):
        msg = b"%099d\n" % i
        write(msg)
        await drain()
        line = await readline()
        if line != msg:
            raise WrongResult(f"round trip {i}: sent {msg!r:.30}…, got {line!r:.30}…")
    proc.stdin.close()
    rest = await proc.stdout.read()
    rc = await proc.wait()
    m = meter.stop()
    check(rest == b"", f"{len(rest)} unexpected bytes after the last round trip")
    check(rc == 0, f"cat exited {rc}")
    m["rt_us"] = m["wall_s"] / n * 1e6
    return m


WORKERS: dict[str, Callable[[Any, dict[str, Any]], Awaitable[dict[str, float]]]] = {
    "a": w_spawn,
    "a2": w_spawn,
    "b": w_concurrent,
    "c": w_cat,
    "d1": lambda api, p: w_read(api, p, by_read=False),
    "d2": lambda api, p: w_read(api, p, by_read=True),
    "e_for": lambda api, p: w_lines(api, p, by_readline=False),
    "e_readline": lambda api, p: w_lines(api, p, by_readline=True),
    "f": w_interleave,
    "g": w_pingpong,
    "g_pin": w_pingpong,
}


def pin_process(cpu: int) -> None:
    """Pin every thread of this process (and so every child spawned later) to `cpu`."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except ProcessLookupError:
            pass


def worker(key: str, impl: str, scale: float) -> int:
    if key not in WORKLOADS or impl not in IMPLS + EXTRA_IMPLS:
        sys.exit(
            f"--worker WORKLOAD IMPL: one of {', '.join(WORKLOADS)}; "
            f"one of {', '.join(IMPLS + EXTRA_IMPLS)}"
        )
    p = params(key, scale)
    if p.get("cpu", -1) >= 0:
        pin_process(p["cpu"])  # before any import that could start threads
    if impl.startswith("rsubprocess"):
        import rsubprocess as api

        if impl == "rsubprocess-copy":
            from rsubprocess import _core

            _core._set_fd_relay(False)
    else:
        api = asyncio.subprocess
    if impl.endswith("uvloop"):
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        if p.get("cpu", -1) >= 0:
            pin_process(p["cpu"])
        metrics = loop.run_until_complete(WORKERS[key](api, p))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except WrongResult as e:
        print(f"WRONG RESULT: {e}", file=sys.stderr)
        return 3
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    print(json.dumps({"metrics": metrics}))
    return 0


# ------------------------------------------------------------------------------------------------
# The driver side


@dataclass
class Outcome:
    metrics: Optional[dict[str, float]] = None
    error: Optional[str] = None
    warning: Optional[str] = None
    seconds: float = 0.0


@dataclass
class Cell:
    runs: list[Outcome] = field(default_factory=list)
    hung: bool = False

    @property
    def failures(self) -> list[Outcome]:
        return [r for r in self.runs if r.error]

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if r.metrics and metric in r.metrics]


def stray_processes(pgid: int) -> list[str]:
    """Live (non-zombie) processes left in the process group `pgid`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{d} {cmd[:80]}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def run_one(cmd: list[str], timeout: float) -> Outcome:
    # Output to files, not pipes: a process left behind holding them must not stall us here.
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fout, stderr=ferr, start_new_session=True, cwd=ROOT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Outcome(
                error=f"HANG: no result after {timeout:g} s (killed; if just slow: --timeout)",
                seconds=timeout,
            )
        seconds = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    outcome = Outcome(seconds=seconds)
    stray = stray_processes(proc.pid)
    if stray:
        time.sleep(0.2)
        stray = stray_processes(proc.pid)
    if stray:
        outcome.warning = f"left {len(stray)} live process(es) behind: {'; '.join(stray[:3])}"
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    tail = err.decode(errors="replace").strip().splitlines()[-6:]
    if proc.returncode != 0:
        why = f"exit status {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by {signal.Signals(-proc.returncode).name}"
        outcome.error = f"{why}: " + " | ".join(tail)
        return outcome
    try:
        outcome.metrics = json.loads(out.decode().strip().splitlines()[-1])["metrics"]
    except (ValueError, IndexError, KeyError):
        outcome.error = f"no JSON result; stdout {out[-200:]!r}; stderr {' | '.join(tail)}"
    return outcome


def build_limit() -> Optional[str]:
    """Build the limit program; an error message if that cannot be done."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        return "cargo not found"
    cmd = [cargo, "build", "--release", "-q", "--manifest-path", str(LIMIT_DIR / "Cargo.toml")]
    cmd += ["--target-dir", str(LIMIT_TARGET)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not LIMIT_BIN.exists():
        return f"cargo build failed: {r.stderr.strip()[-500:]}"
    return None


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError as e:
        return f"not importable ({e})"
    return str(getattr(mod, "__version__", "?"))


def rsubprocess_fingerprint() -> str:
    """A hash of rsubprocess's installed files (.py and the extension), to notice a rebuild or
    an edit in the shared work tree during a run (every worker imports it afresh)."""
    spec = importlib.util.find_spec(RS)
    if spec is None or not spec.submodule_search_locations:
        return "?"
    h = hashlib.sha1()
    for d in spec.submodule_search_locations:
        for f in sorted(Path(d).iterdir()):
            if f.is_file() and f.suffix in (".py", ".so"):
                h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:12]


def _cmd_out(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def environment(args: argparse.Namespace, impls: list[str]) -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = _cmd_out(["git", "rev-parse", "--short", "HEAD"])
    if commit and _cmd_out(["git", "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    try:
        pipe_max = Path("/proc/sys/fs/pipe-max-size").read_text().strip()
    except OSError:
        pipe_max = "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "cpu_model": model,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "uvloop": _version("uvloop"),
        "rsubprocess": f"{_version('rsubprocess')} (git {commit or '?'})",
        "limit": f"benches/limit, {_cmd_out(['rustc', '--version']) or 'rustc ?'}",
        "pipe_max_size": pipe_max,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "scale": args.scale,
        "reps": args.reps,
        "impls": impls,
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
    }


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def cell_text(cell: Optional[Cell], metric: str) -> str:
    if cell is None:
        return DASH
    if cell.failures or cell.hung:
        bad = len(cell.failures)
        return f"**FAILED** ({bad}/{len(cell.runs)})"
    vals = cell.values(metric)
    if not vals:
        return DASH
    med = statistics.median(vals)
    if len(vals) == 1:
        return _fmt(med)
    return f"{_fmt(med)} ({_fmt(min(vals))}{DASH}{_fmt(max(vals))})"


def ratio(cells: dict[str, Cell], metric: str, impl: str, other: str) -> Optional[float]:
    """How many times better `impl` is than `other` on `metric` (medians; higher = better)."""
    a, b = cells.get(impl), cells.get(other)
    if not M[metric].compare or a is None or b is None or a.failures or b.failures:
        return None
    ma, mb = median(a.values(metric)), median(b.values(metric))
    if ma is None or mb is None or ma <= 0 or mb <= 0:
        return None
    return ma / mb if M[metric].higher_is_better else mb / ma


def _rtext(r: Optional[float]) -> str:
    return DASH if r is None else f"{r:.2f}{X}"


RS = "rsubprocess"


def render(
    env: dict[str, Any],
    grid: dict[str, dict[str, Cell]],
    plist: dict[str, dict[str, Any]],
    impls: list[str],
    notes: list[str],
) -> str:
    lines = ["# rsubprocess benchmarks", ""]
    lines.append(
        f"{env['date']} · {env['cpus']} CPUs, {env['cpu_model']} · {env['kernel']} · "
        f"{env['python']} · uvloop {env['uvloop']} · rsubprocess {env['rsubprocess']}, "
        f"files {env['rsubprocess_files']} · "
        f"limit: {env['limit']}"
    )
    lines.append("")
    lines.append(
        f"Scale {env['scale']:g} · {env['reps']} repetitions, interleaved, order rotated per "
        f"repetition · pipe-max-size {env['pipe_max_size']} · load average at start "
        f"{env['loadavg_start']}, at end {env.get('loadavg_end', '?')} · "
        f"total run time {env.get('runtime', '?')}"
    )
    lines.append("")
    lines.append(f"Command: `{env['command']}`")
    lines.append("")
    lines.append(
        f"Cells: median (min{DASH}max) over the repetitions, each a fresh process. Ratios are "
        "from the medians and read *how many times better rsubprocess is* (for times, "
        "latencies, stalls and memory: other ÷ rsubprocess; for throughput: rsubprocess ÷ "
        "other), so > 1 is better; rsubprocess/limit is the fraction of the raw limit reached. "
        "CPU is user+sys of the timed section (getrusage; children counted once reaped)."
    )
    lines.append("")
    head = ["workload", "metric", *impls, LIMIT, "rs/asyncio", "rs/uvloop", "rs/limit"]
    head = [h.replace("rsubprocess+uvloop", "rsubprocess on uvloop") for h in head]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for key, cells in grid.items():
        wl = WORKLOADS[key]
        title = wl.title(plist[key])
        for i, metric in enumerate(wl.metrics):
            row = [title if i == 0 else "", M[metric].label]
            row += [cell_text(cells.get(impl), metric) for impl in impls]
            row.append(cell_text(cells.get(LIMIT), metric))
            row += [_rtext(ratio(cells, metric, RS, o)) for o in ("asyncio", "uvloop", LIMIT)]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Targets (issue 6)", ""]
    lines += targets(grid)
    if notes:
        lines += ["", "## Failures and warnings", ""]
        lines += [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def targets(grid: dict[str, dict[str, Cell]]) -> list[str]:
    """The issue's targets, each with what this run shows is reachable at all where a bound
    exists: the limit bounds any ratio against asyncio, and a2's controls bound the stall."""
    out = [
        "| workload | target | measured | reachable in this run | met |",
        "|---|---|---|---|---|",
    ]

    def row(
        what: str,
        target: str,
        value: Optional[float],
        ok: Callable[[float], bool],
        bound: Optional[tuple[str, bool]] = None,
        unit: Optional[str] = None,
    ) -> None:
        if unit is None:
            unit = " ms" if "ms" in target else "" if "limit" in target else X
        shown = "FAILED / not run" if value is None else _fmt(value) + unit
        reach = DASH if bound is None else bound[0]
        if value is None:
            met = DASH
        elif ok(value):
            met = "yes"
        elif bound is not None and not bound[1]:
            met = "**no**: out of reach in this run"
        else:
            met = "**no**"
        out.append(f"| {what} | {target} | {shown} | {reach} | {met} |")

    def r(key: str, metric: str, other: str) -> Optional[float]:
        return ratio(grid[key], metric, RS, other) if key in grid else None

    def med(key: str, metric: str, impl: str = RS) -> Optional[float]:
        cell = grid.get(key, {}).get(impl)
        return None if cell is None or cell.failures else median(cell.values(metric))

    # What rsubprocess could gain on this loop at all: its full path over a bare spawn + wait
    # (no argument handling, no Process), measured alternating in the same processes.
    # Applied to both of a's ratios it bounds what any complete implementation could reach
    # with this spawn on this loop; the limit's own ratio is shown for comparison.
    best = floor_frac = None
    r_async, r_limit = r("a", "p50_us", "asyncio"), r("a", "p50_us", LIMIT)
    cell = grid.get("a", {}).get(RS)
    gain = None
    if cell is not None and not cell.failures:
        pairs = [
            run.metrics["alt_p50_us"] / run.metrics["floor_p50_us"]
            for run in cell.runs
            if run.metrics and run.metrics.get("floor_p50_us")
        ]
        gain = median(pairs)
    if gain is not None and r_async is not None and r_limit is not None:
        b = r_async * gain
        best = (
            f"at most {r_async * gain:.2f}{X} on this loop (rsubprocess's full path takes "
            f"{gain:.2f}{X} a bare spawn+wait on it); the limit is {r_async / r_limit:.2f}{X}",
            b >= 1.3,
        )
        floor_frac = (
            f"at most {min(1.0, r_limit * gain):.2f} of the limit on this loop",
            r_limit * gain >= 0.85,
        )
    row(
        "a spawn+wait (p50)",
        f"≥ 1.3{X} asyncio",
        r("a", "p50_us", "asyncio"),
        lambda v: v >= 1.3,
        best,
    )
    row(
        "a spawn+wait (p50)",
        "≥ 0.85 of limit",
        r("a", "p50_us", LIMIT),
        lambda v: v >= 0.85,
        floor_frac,
    )
    floor = None
    wake, idle = med("a2", "stall_wake_ms"), med("a2", "stall_idle_same_ms")
    if wake is not None and idle is not None:
        lo = min(wake, idle)
        floor = (
            f"floor {_fmt(lo)} ms: the heartbeat's own max with no subprocess (idle "
            f"{_fmt(idle)} ms; with no-op wake-ups at the same rate {_fmt(wake)} ms)",
            lo < 0.5,
        )
    row("a2 loop stall", "< 0.5 ms", med("a2", "stall_ms"), lambda v: v < 0.5, floor)
    # The same question asked of the loop directly (BusyMeter), which the heartbeat's timer
    # rounding cannot blur: did the loop thread ever sleep inside a stretch of work, and how
    # long was its longest stretch of its own work?
    blocked, work = med("a2", "blocked_n"), med("a2", "busy_cpu_ms")
    if blocked is not None and work is not None:
        ab = med("a2", "blocked_n", "asyncio")
        row(
            "a2 spawn blocks the loop",
            "never (intent of a2)",
            blocked,
            lambda v: v == 0,
            (
                f"stretches in which the loop thread slept: {_fmt(blocked)} "
                f"(asyncio {_fmt(ab) if ab is not None else DASH}); longest loop work in one "
                f"stretch {_fmt(work)} ms",
                True,
            ),
            unit=" stretches slept",
        )
    # The raw limit's own speed-up over asyncio in this run bounds any implementation's.
    b_reach = None
    b_async, b_limit = r("b", "total_ms", "asyncio"), r("b", "total_ms", LIMIT)
    if b_async is not None and b_limit:
        b_reach = (f"the limit is {b_async / b_limit:.2f}{X} asyncio", b_async / b_limit >= 1.5)
    row(
        "b concurrent spawn+wait",
        f"≥ 1.5{X} asyncio",
        r("b", "total_ms", "asyncio"),
        lambda v: v >= 1.5,
        b_reach,
    )
    for key in ("c", "d1", "d2", "f"):
        row(f"{key} throughput", "≥ 0.8 of limit", r(key, "mib_s", LIMIT), lambda v: v >= 0.8)
    for key in ("e_for", "e_readline"):
        row(f"{key} lines", f"≥ 3{X} asyncio", r(key, "mlines_s", "asyncio"), lambda v: v >= 3)
    for key in ("g", "g_pin"):
        row(f"{key} ping-pong", f"≥ 1{X} uvloop", r(key, "rt_us", "uvloop"), lambda v: v >= 1)
    for key in ("c", "d1", "f"):
        row(
            f"h peak RSS growth, {key}",
            f"≤ 1.1{X} output size",
            med(key, "rss_x_out"),
            lambda v: v <= 1.1,
        )
    return out


def plot(
    grid: dict[str, dict[str, Cell]],
    plist: dict[str, dict[str, Any]],
    env: dict[str, Any],
    path: Path,
) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e} (pip install -r benches/requirements.txt)"
    labels, series = [], {"vs asyncio": [], "vs uvloop": [], "fraction of limit": []}
    notes: dict[str, list[str]] = {name: [] for name in series}
    for key, cells in grid.items():
        for metric in WORKLOADS[key].metrics:
            if not M[metric].plot:
                continue
            labels.append(f"{key}: {M[metric].label}")
            for name, other in zip(series, ("asyncio", "uvloop", LIMIT)):
                series[name].append(ratio(cells, metric, RS, other))
                failed = any(c.failures for c in (cells.get(RS), cells.get(other)) if c)
                notes[name].append("FAILED" if failed else "n/a")
    if not labels:
        return "no plot: nothing measured"
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(labels) + 1.8))
    height = 0.27
    colors = {"vs asyncio": "#4c72b0", "vs uvloop": "#dd8452", "fraction of limit": "#55a868"}
    for i, (name, vals) in enumerate(series.items()):
        ys = [y + (i - 1) * height for y in range(len(labels))]
        xs = [v if v is not None else 0 for v in vals]
        ax.barh(ys, xs, height=height, label=name, color=colors[name])
        for y, v, why in zip(ys, vals, notes[name]):
            if v is None:
                ax.text(0.012, y, why, va="center", fontsize=6, color="red")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(0.01, None)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("rsubprocess: times better (higher is better; 1 = parity)")
    ax.set_title(
        f"rsubprocess ratios · scale {env['scale']:g} · {env['reps']} reps · {env['date']}",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def repro(key: str, impl: str, scale: float) -> str:
    if impl == LIMIT:
        args = " ".join(shlex.quote(a) for a in limit_args(key, params(key, scale)))
        return f"{_rel(LIMIT_BIN)} {args}"
    return f".venv/bin/python benches/bench.py --worker {key} {impl} --scale {scale:g}"


def drive(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [k for k in keys if k not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workloads {unknown}; known: {', '.join(WORKLOADS)}")
    impls = [i.strip() for i in args.impls.split(",")]
    notes: list[str] = []
    for impl in list(impls):
        if impl not in IMPLS + EXTRA_IMPLS:
            sys.exit(f"unknown implementation {impl!r}; known: {', '.join(IMPLS + EXTRA_IMPLS)}")
        for mod in ("uvloop",) * impl.endswith("uvloop") + (RS,) * impl.startswith(RS):
            if _version(mod).startswith("not importable"):
                notes.append(f"{impl} skipped: {mod} {_version(mod)}")
                impls.remove(impl)
                break
    env = environment(args, impls)
    fingerprint = rsubprocess_fingerprint()
    env["rsubprocess_files"] = fingerprint
    runners = list(impls)
    if args.no_limit:
        pass
    else:
        err = build_limit()
        if err:
            notes.append(f"limit skipped: {err}")
        else:
            runners.append(LIMIT)
    plist = {k: params(k, args.scale) for k in keys}
    timeout = args.timeout or (30 + 60 * args.scale)
    grid: dict[str, dict[str, Cell]] = {k: {r: Cell() for r in runners} for k in keys}
    print(
        f"bench: {len(keys)} workloads x {len(runners)} runners x {args.reps} reps, "
        f"scale {args.scale:g}, timeout {timeout:g} s per run",
        file=sys.stderr,
    )
    for rep in range(args.reps):
        for w, key in enumerate(keys):
            shift = (rep + w) % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                cell = grid[key][runner]
                if cell.hung:
                    continue  # a hang costs the whole timeout: once per workload is enough
                if runner == LIMIT:
                    cmd = [str(LIMIT_BIN), *limit_args(key, plist[key])]
                else:
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", key]
                    cmd += [runner, "--scale", repr(args.scale)]
                outcome = run_one(cmd, timeout)
                cell.runs.append(outcome)
                status = "ok" if outcome.error is None else "FAILED"
                if outcome.error and outcome.error.startswith("HANG"):
                    cell.hung = True
                print(
                    f"  rep {rep + 1}/{args.reps} {key:<10} {runner:<19} "
                    f"{outcome.seconds:6.2f} s {status}"
                    + (f": {outcome.error}" if outcome.error else "")
                    + (f" [warning: {outcome.warning}]" if outcome.warning else ""),
                    file=sys.stderr,
                )
    for key, cells in grid.items():
        for runner, cell in cells.items():
            for i, o in enumerate(cell.runs):
                if o.error or o.warning:
                    what = f"FAILED: {o.error}" if o.error else f"warning: {o.warning}"
                    notes.append(
                        f"{key} / {runner} (run {i + 1}): {what} — reproduce: "
                        f"`{repro(key, runner, args.scale)}`"
                    )
    if rsubprocess_fingerprint() != fingerprint:
        notes.insert(
            0,
            "**rsubprocess's files changed during this run** (a rebuild or an edit in the work "
            "tree): its numbers mix versions; run again.",
        )
    runtime = time.perf_counter() - t_start
    env["runtime"] = f"{runtime / 60:.1f} min" if runtime >= 120 else f"{runtime:.0f} s"
    env["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    table = render(env, grid, plist, impls, notes)
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = "smoke" if args.smoke else "latest"
    raw = {
        "env": env,
        "params": plist,
        "results": {
            k: {
                r: [{"metrics": o.metrics, "error": o.error, "warning": o.warning} for o in c.runs]
                for r, c in cells.items()
            }
            for k, cells in grid.items()
        },
    }
    files = [out_dir / f"{stem}.md", out_dir / f"{stem}.json"]
    files[0].write_text(table)
    files[1].write_text(json.dumps(raw, indent=1) + "\n")
    if not args.smoke:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        dated = f"{stamp}-scale{args.scale:g}"
        for src in list(files):
            # Not with_suffix: it would take ".125" of "scale0.125" for the suffix.
            dst = out_dir / (dated + src.suffix)
            shutil.copyfile(src, dst)
            files.append(dst)
    png = out_dir / f"{stem}.png"
    why_not = plot(grid, plist, env, png)
    if why_not:
        print(f"bench: {why_not}", file=sys.stderr)
    else:
        files.append(png)
    print(table)
    print("bench: wrote " + ", ".join(_rel(f) for f in files), file=sys.stderr)
    failed = any(c.failures for cells in grid.values() for c in cells.values())
    return 1 if failed and args.strict else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; smoke 1)")
    ap.add_argument("--scale", type=float, default=None, help="size/count factor (default 1)")
    ap.add_argument("--smoke", action="store_true", help=f"scale {SMOKE_SCALE:g}, 1 rep")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated implementations")
    ap.add_argument("--no-limit", action="store_true", help="do not build/run the limit")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per run (30 + 60*scale)")
    ap.add_argument("--out", default="", help="output directory (benches/results)")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any run failed")
    ap.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale is None:
        args.scale = SMOKE_SCALE if args.smoke else 1.0
    if args.reps is None:
        args.reps = 1 if args.smoke else 5
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.scale)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
