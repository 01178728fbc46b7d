"""Why workload d1 (256 MiB from ``head`` by ``communicate()``) is bimodal: CPU placement.

Not part of ``make bench``: a diagnostic for the issue-6 note. A pipe's writer wakes its reader
with a *sync* wake-up (``pipe_write`` -> ``wake_up_interruptible_sync_poll``), a hint that the
waker is about to sleep, which the scheduler may answer by running the reader on the writer's
CPU. When ``head`` and the reader share one CPU, the transfer takes their *summed* CPU time
instead of the longer of the two, whichever program reads. On this 2-vCPU VM that placement
changes from one run to the next, so one repetition of d1 can be twice as slow as the next,
for rsubprocess and for the raw limit alike, and a ratio taken from one repetition of each can
compare a shared CPU with two.

Each mode runs bench.py's own d1 (``--worker d1 <impl>``, or the limit program's ``read``) in
a fresh process, once with the whole machine (``cpus=all``) and once pinned with
``sched_setaffinity`` to one CPU, which the child inherits (``cpus=1``): the second is the
shared-CPU placement made certain. Modes are interleaved and rotated over the repetitions; it
prints MiB/s and CPU seconds (reader, and reader + head) per mode, median and range.

Usage: ``python benches/probes/read_placement.py [--reps 7] [--scale 1] [--impls ...] [--each]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))

import bench  # noqa: E402


def run(impl: str, scale: float, pin: bool) -> dict[str, float]:
    if impl == "limit":
        p = bench.params("d1", scale)
        cmd = [str(bench.LIMIT_BIN), *bench.limit_args("d1", p)]
    else:
        cmd = [sys.executable, str(ROOT / "benches" / "bench.py"), "--worker", "d1", impl]
        cmd += ["--scale", str(scale)]
    cpu = min(os.sched_getaffinity(0))
    pre = (lambda: os.sched_setaffinity(0, {cpu})) if pin else None
    out = subprocess.run(cmd, capture_output=True, check=True, preexec_fn=pre, timeout=300)
    metrics: dict[str, float] = json.loads(out.stdout.decode().strip().splitlines()[-1])["metrics"]
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--impls", default="rsubprocess,limit,asyncio")
    ap.add_argument("--each", action="store_true", help="also print every run's MiB/s")
    a = ap.parse_args()
    if err := bench.build_limit():
        sys.exit(err)
    modes = [(impl, pin) for impl in a.impls.split(",") for pin in (False, True)]
    res: dict[tuple[str, bool], list[dict[str, float]]] = {m: [] for m in modes}
    for rep in range(a.reps):
        k = rep % len(modes)
        for impl, pin in modes[k:] + modes[:k]:
            res[(impl, pin)].append(run(impl, a.scale, pin))
    print(f"d1 at scale {a.scale}, {a.reps} repetitions; median (min-max)")
    print(f"{'mode':24s} {'MiB/s':>22s} {'reader CPU s':>14s} {'reader+head CPU s':>18s}")
    for (impl, pin), ms in res.items():

        def col(key: str, fmt: str, ms: list[dict[str, float]] = ms) -> str:
            v = [m[key] for m in ms]
            return f"{statistics.median(v):{fmt}} ({min(v):{fmt}}-{max(v):{fmt}})"

        mode = f"{impl} cpus={'1' if pin else 'all'}"
        if a.each:
            print(mode, "each run, MiB/s:", " ".join(f"{m['mib_s']:.0f}" for m in ms))
        print(
            f"{mode:24s} {col('mib_s', '.0f'):>22s} "
            f"{statistics.median(m['cpu_self_s'] for m in ms):14.3f} "
            f"{statistics.median(m['cpu_s'] for m in ms):18.3f}"
        )


if __name__ == "__main__":
    main()
