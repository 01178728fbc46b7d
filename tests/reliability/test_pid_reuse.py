"""Pid reuse: once a child is gone, signalling its Process never hits another process.

Runs in a private pid namespace (``unshare --pid --fork --mount-proc``, root only), where
writing ``/proc/sys/kernel/ns_last_pid`` makes the next process take a chosen pid, so reuse
is forced instead of waited for. Each round (200 for rsubprocess, seeded): a child exits and is
reaped -- by the library (``own``) or behind the loop's back before it noticed (``foreign``) --,
a victim process is started with the very same pid, and ``kill()``/``terminate()``/
``send_signal()`` is called on the old Process. The victim must survive; ``wait()`` must not
hang nor report the victim's status; nothing may reap the victim.

rsubprocess signals through the pidfd (a reaped pid is never signalled, DESIGN 1b). asyncio
signals by pid (``os.kill``), so it hits the victim in the "foreign" window.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.reliability.conftest import RSUBPROCESS_PATHS, first_lines, noise, run_scenario, verdict

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

WRAPPER = ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", '"$@"; exit $?', "sh"]


@pytest.fixture(scope="module")
def pid_namespace() -> list[str]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private pid namespace")
    probe = subprocess.run(
        [*WRAPPER, "sh", "-c", "echo 100 > /proc/sys/kernel/ns_last_pid"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a pid namespace here: {probe.stderr.decode()[:200]}")
    return WRAPPER


def check(out, rounds: int) -> list[str]:
    if out.failure():
        return out.failure()
    r = out.result
    tally = r["tally"]
    problems = [f"{k}: {v} of {rounds} rounds" for k, v in tally.items() if "VICTIM" in k]
    if tally.get("wait() hung"):
        problems.append(f"wait() hung in {tally['wait() hung']} rounds")
    problems += r["events"][:5]
    if tally.get("pid not reused", 0) > rounds // 4:
        problems.append(f"pid reuse could not be forced: {tally}")
    extra = noise(out.stderr)
    if extra:
        problems.append(f"stderr: {first_lines(chr(10).join(extra), 4)}")
    print(f"tally: {tally}")
    return problems


def test_signal_after_reap_never_hits_a_reused_pid(impl_name, loop_kind, tag, pid_namespace):
    rounds = 200 if impl_name == "rsubprocess" else 50
    out = run_scenario(
        "pid_reuse",
        impl_name,
        loop_kind,
        args={"rounds": rounds, "seed": 1},
        tag=tag,
        wrapper=pid_namespace,
        timeout=90,
    )
    verdict(impl_name, check(out, rounds), "pid reuse")


@pytest.mark.parametrize("path", ["no-pidfd", "popen"])
def test_signal_after_reap_fallback_paths(rsubprocess_only, loop_kind, tag, pid_namespace, path):
    rounds = 60
    out = run_scenario(
        "pid_reuse",
        "rsubprocess",
        loop_kind,
        args={"rounds": rounds, "seed": 2},
        tag=tag,
        wrapper=pid_namespace,
        env=RSUBPROCESS_PATHS[path],
        timeout=90,
    )
    verdict("rsubprocess", check(out, rounds), f"pid reuse on {path}")
