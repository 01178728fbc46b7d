"""Someone else reaps our children, in a fresh interpreter each time.

* ``thread_waitpid``: another thread loops on ``os.waitpid(-1, 0)``;
* ``sigchld_ign``: ``signal(SIGCHLD, SIG_IGN)`` (the kernel reaps every child at once);
* ``sigchld_reaping_handler``: a third-party SIGCHLD handler that reaps with waitpid(-1);
* ``sigchld_counting_handler``: a third-party SIGCHLD handler that only counts.

30 children (10 one after the other, 20 at once; exits 0, 3, -9, a ``sleep``, a ``cat`` echo).
As asyncio (its ThreadedChildWatcher / PidfdChildWatcher): no hang; a child reaped by someone
else reports returncode 255 with one warning on asyncio's logger ("Unknown child process pid
%d, will report returncode 255", 3.12+: "child process pid %d exit status already read:  will
report returncode 255"), any other child its real returncode; the SIGCHLD disposition is left
as the program set it, and a third-party handler keeps being called. The rsubprocess-only test
repeats this on its fallback paths (thread exit watcher, Popen spawn).
"""

from __future__ import annotations

import pytest

from tests.helpers import PY
from tests.reliability.conftest import (
    RSUBPROCESS_PATHS,
    first_lines,
    noise,
    run_scenario,
    verdict,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

MODES = ["thread_waitpid", "sigchld_ign", "sigchld_reaping_handler", "sigchld_counting_handler"]


def lost_child_warning(pid: int) -> str:
    if PY >= (3, 12):
        return (
            f"WARNING: child process pid {pid} exit status already read:  "
            "will report returncode 255"
        )
    return f"WARNING: Unknown child process pid {pid}, will report returncode 255"


def check(out, mode: str) -> list[str]:
    if out.failure():
        return out.failure()
    r = out.result
    problems = []
    reaps_foreign = mode != "sigchld_counting_handler"
    expected_log = []
    for e in r["results"]:
        what = f"pid {e.get('pid')} (expected {e['expected']})"
        if e.get("hang"):
            problems.append(f"{what}: wait()/communicate() hung")
        elif "raised" in e:
            problems.append(f"{what}: raised {e['raised']}")
        else:
            rc = e["returncode"]
            allowed = {e["expected"], 255} if reaps_foreign else {e["expected"]}
            if rc not in allowed:
                problems.append(f"{what}: returncode {rc}")
            if rc == 255 and e["expected"] != 255:
                expected_log.append(lost_child_warning(e["pid"]))
            if e.get("output_ok") is False:
                problems.append(f"{what}: communicate() output wrong")
    if sorted(r["log"]) != sorted(expected_log):
        extra = sorted(set(r["log"]) - set(expected_log))
        missing = sorted(set(expected_log) - set(r["log"]))
        problems.append(f"asyncio log: unexpected {extra[:2]}, missing {missing[:2]}")
    if not r["handler_kept"]:
        problems.append("the SIGCHLD disposition set by the program was replaced")
    if mode == "sigchld_counting_handler" and r["sigchld_seen"] == 0:
        problems.append("the third-party SIGCHLD handler was never called")
    if r["children_after"]:
        problems.append(f"children left: {r['children_after']}")
    extra_noise = noise(out.stderr)
    if extra_noise:
        problems.append(f"stderr: {first_lines(chr(10).join(extra_noise), 4)}")
    rcs = [e.get("returncode", "hang" if e.get("hang") else "raised") for e in r["results"]]
    print(
        f"{mode}: {len(rcs)} children, {rcs.count(255)} reported 255 (reaped by someone else), "
        f"{sum(rc in ('hang', 'raised') for rc in rcs)} hung or raised, "
        f"{len(r['log'])} log warnings, {r['elapsed']:.1f} s"
    )
    return problems


@pytest.mark.parametrize("mode", MODES)
def test_foreign_reaper(impl_name, loop_kind, tag, mode):
    args = {"mode": mode}
    if impl_name == "asyncio":  # fewer children, shorter waits: asyncio on uvloop hangs here
        args.update(counts=[4, 6], timeout=2)
    out = run_scenario("foreign_reaper", impl_name, loop_kind, args=args, tag=tag)
    verdict(impl_name, check(out, mode), mode)


@pytest.mark.parametrize("path", ["no-pidfd", "popen"])
@pytest.mark.parametrize("mode", MODES)
def test_foreign_reaper_fallback_paths(rsubprocess_only, loop_kind, tag, mode, path):
    out = run_scenario(
        "foreign_reaper",
        "rsubprocess",
        loop_kind,
        args={"mode": mode},
        tag=tag,
        env=RSUBPROCESS_PATHS[path],
    )
    verdict("rsubprocess", check(out, mode), f"{mode} on {path}")
