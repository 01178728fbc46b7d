"""Resource exhaustion, in a helper interpreter each time.

* ``RLIMIT_NOFILE`` lowered so that exactly 0, 1, 2, ... fd numbers are free: whichever fd the
  spawn needs first fails (stdin/stdout/stderr pipes, the exec error pipe, the pidfd).
* ``RLIMIT_NPROC`` at the number of tasks uid 65534 already has, in a helper that drops from
  root to 65534 first (root is exempt): clone/fork fails.

Every attempt: success, or a clean ``OSError`` with errno EMFILE (resp. EAGAIN, i.e.
``BlockingIOError``) -- never another exception, a crash or a hang --, no leaked fd, no child
left, and a spawn right after (limit restored) works.
"""

from __future__ import annotations

import errno
import os

import pytest

from tests.reliability.conftest import (
    RSUBPROCESS_PATHS,
    first_lines,
    noise,
    run_scenario,
    verdict,
)

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def check(out, err: int) -> list[str]:
    if out.failure():
        return out.failure()
    problems = []
    failures = 0
    for a in out.result["attempts"]:
        where = f"headroom {a['headroom']}" if "headroom" in a else "attempt"
        outcome = a["outcome"]
        if outcome[0] == "OSError":
            failures += 1
            if outcome[2] != err:
                problems.append(f"{where}: OSError with errno {outcome[2]} ({outcome[3]})")
        elif outcome != ["ok", True]:
            problems.append(f"{where}: {outcome}")
        if a["leaked_fds"]:
            problems.append(f"{where}: leaked fds {a['leaked_fds']}")
        if a["children"]:
            problems.append(f"{where}: children left {a['children']}")
        if a["spawn_after"] != ["ok", True]:
            problems.append(f"{where}: the next spawn failed: {a['spawn_after']}")
    if not failures:
        problems.append("no attempt failed: the limit was not effective")
    attempts = out.result["attempts"]
    print(
        f"{len(attempts)} attempts: {failures} clean OSError(errno {err}), "
        f"{sum(a['outcome'] == ['ok', True] for a in attempts)} spawned, "
        f"{sum(bool(a['leaked_fds']) for a in attempts)} leaked fds, "
        f"{sum(bool(a['children']) for a in attempts)} left children"
    )
    extra = noise(out.stderr)
    if extra:
        problems.append(f"stderr: {first_lines(chr(10).join(extra), 4)}")
    return problems


def test_rlimit_nofile(impl_name, loop_kind, tag):
    out = run_scenario("nofile", impl_name, loop_kind, tag=tag)
    verdict(impl_name, check(out, errno.EMFILE), "RLIMIT_NOFILE")


@pytest.fixture
def root():
    if os.geteuid() != 0:
        pytest.skip("dropping to uid 65534 needs root")


def test_rlimit_nproc(impl_name, loop_kind, tag, root):
    out = run_scenario("nproc", impl_name, loop_kind, tag=tag)
    verdict(impl_name, check(out, errno.EAGAIN), "RLIMIT_NPROC")


@pytest.mark.parametrize("path", ["no-pidfd", "popen"])
@pytest.mark.parametrize("limit", ["nofile", "nproc"])
def test_exhaustion_fallback_paths(rsubprocess_only, loop_kind, tag, limit, path):
    if limit == "nproc" and os.geteuid() != 0:
        pytest.skip("dropping to uid 65534 needs root")
    out = run_scenario(limit, "rsubprocess", loop_kind, tag=tag, env=RSUBPROCESS_PATHS[path])
    err = errno.EMFILE if limit == "nofile" else errno.EAGAIN
    verdict("rsubprocess", check(out, err), f"{limit} on {path}")
