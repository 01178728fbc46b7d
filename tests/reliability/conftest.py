"""Machinery of the reliability suite (issue 7): tags, /proc scans, fresh interpreters.

Every scenario runs for ``impl`` x ``loop_kind`` (tests/conftest.py), so asyncio's result sits
next to rsubprocess's. Where asyncio itself fails a scenario (hangs, leaks, zombies), the test
records that as asyncio's result in an ``impl.name == "asyncio"`` branch, never by skipping.

* Every child a scenario starts carries a unique token in its environment (``tag.env()``);
  ``tag.alive()`` scans ``/proc/*/environ`` and ``/proc/*/cmdline`` for it, so a surviving
  grandchild is found even after it was re-parented to init. The ``tag`` fixture fails the test
  if a tagged process is still there at teardown (and kills it, so nothing cascades).
* Shutdown-like scenarios run in a fresh interpreter (``run_scenario``): ``_scenarios.py`` prints
  one JSON result line, the test asserts on it, on the exit status, on the time taken and on the
  interpreter's stderr (``noise()``).
* Counts are the issue's for rsubprocess; ``scaled()`` reduces them for asyncio and uvloop only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.helpers import children, kill_and_reap, open_fds, wait_until

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "_scenarios.py"
REPO = HERE.parent.parent
TOKEN_VAR = "RSP_RELIABILITY_TOKEN"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: a reliability scenario that takes seconds (still part of the default run)",
    )


# --- counts -------------------------------------------------------------------------------------


def scaled(impl_name: str, full: int, reduced: int) -> int:
    """The issue's count for rsubprocess (on every loop); ``reduced`` for asyncio, whose
    implementation is not under test here and which is slower at these volumes."""
    return full if impl_name == "rsubprocess" else reduced


# --- /proc --------------------------------------------------------------------------------------


def zombies(ppid: Optional[int] = None) -> list[int]:
    return sorted(p for p, s in children(ppid).items() if s == "Z")


def fd_count() -> int:
    return len(open_fds())


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tagged_processes(token: str) -> dict[int, str]:
    """{pid: "state cmdline"} of every process whose environment or argv holds ``token``."""
    needle = token.encode()
    me = os.getpid()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        cmdline = _read(f"/proc/{name}/cmdline")
        if needle in cmdline or needle in _read(f"/proc/{name}/environ"):
            stat = _read(f"/proc/{name}/stat")
            state = stat[stat.rfind(b")") + 2 :][:1].decode() if stat else "?"
            args = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found[int(name)] = f"{state} {args}"
    return found


@dataclass
class Tag:
    token: str

    def env(self, **extra: str) -> dict[str, str]:
        """Our environment plus the token: inherited by every descendant."""
        env = dict(os.environ)
        env[TOKEN_VAR] = self.token
        env.update(extra)
        return env

    def alive(self) -> dict[int, str]:
        return tagged_processes(self.token)

    def settle(self, timeout: float = 2.0) -> dict[int, str]:
        """Tagged processes still there after ``timeout`` (killed ones take a moment)."""
        wait_until(lambda: not self.alive(), timeout, interval=0.05)
        return self.alive()

    def cleanup(self) -> dict[int, str]:
        """Kill every tagged process; return what was there."""
        found = self.alive()
        kill_and_reap(found, grace=0)
        wait_until(lambda: not self.alive(), 2.0, interval=0.05)
        return found


@pytest.fixture
def tag() -> Iterator[Tag]:
    """A unique token for this test's processes; fails the test if any outlives it."""
    t = Tag(f"rsp-rel-{uuid.uuid4().hex}")
    yield t
    left = t.settle(2.0)
    if left:
        t.cleanup()
        pytest.fail(f"tagged processes survived the test: {left}", pytrace=False)


# --- fresh interpreters -------------------------------------------------------------------------


@dataclass
class Outcome:
    returncode: Optional[int]
    result: Optional[dict[str, Any]]
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool
    argv: list[str] = field(default_factory=list)

    def failure(self) -> list[str]:
        """The interpreter hung or did not report: the only problem worth stating."""
        if self.timed_out:
            return [f"the scenario hung (killed after {self.elapsed:.0f} s)"]
        if self.returncode != 0 or self.result is None:
            return [f"exit status {self.returncode}: {first_lines(self.stderr)}"]
        return []

    def describe(self) -> str:
        return (
            f"argv={self.argv}\nreturncode={self.returncode} timed_out={self.timed_out} "
            f"elapsed={self.elapsed:.2f}s\nresult={self.result}\n--- stdout ---\n"
            f"{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def scenario_argv(name: str, impl_name: str, loop_kind: str, args: Any = None) -> list[str]:
    return [
        sys.executable,
        "-X",
        "dev",
        str(SCENARIOS),
        name,
        impl_name,
        loop_kind,
        json.dumps(args if args is not None else {}),
    ]


def run_scenario(
    name: str,
    impl_name: str,
    loop_kind: str,
    *,
    args: Any = None,
    tag: Optional[Tag] = None,
    env: Optional[dict[str, str]] = None,
    timeout: float = 60,
    wrapper: Optional[list[str]] = None,
) -> Outcome:
    """Run ``_scenarios.py <name>`` in a fresh interpreter (its own session, so a hang is
    killed with everything it started). ``result`` is its last ``RESULT {json}`` line."""
    argv = list(wrapper or []) + scenario_argv(name, impl_name, loop_kind, args)
    full_env = tag.env() if tag is not None else dict(os.environ)
    full_env.pop("PYTHONWARNINGS", None)
    full_env.pop("RSUBPROCESS_SPAWN", None)
    full_env.pop("RSUBPROCESS_NO_PIDFD", None)
    full_env.update(env or {})
    # Files, not pipes: a child the scenario leaves behind would hold a pipe open and make
    # this wait for it instead of for the interpreter.
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            env=full_env,
            cwd="/tmp",
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    elapsed = time.monotonic() - t0
    result = None
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
    return Outcome(
        proc.returncode,
        result,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        elapsed,
        timed_out,
        argv,
    )


#: rsubprocess's one line when it kills a child whose loop went away or that is still running
#: at interpreter exit (DESIGN 1b).
RSUBPROCESS_KILLED = re.compile(
    r"ResourceWarning: subprocess \d+ was still running "
    r"(when its event loop went away|at interpreter exit)"
)


def noise(stderr: str, allowed: Iterable[re.Pattern[str]] = ()) -> list[str]:
    """Lines of ``stderr`` that are not part of an allowed warning.

    A line matching one of ``allowed`` is dropped together with the indented source lines that
    ``warnings`` prints after it.
    """
    allowed = list(allowed)
    left = []
    skipping = False
    for line in stderr.splitlines():
        if any(p.search(line) for p in allowed):
            skipping = True
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        if line.strip():
            left.append(line)
    return left


def first_lines(text: str, n: int = 12) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    more = f"\n... ({len(lines) - n} more lines)" if len(lines) > n else ""
    return "\n".join(lines[:n]) + more


# --- verdicts -----------------------------------------------------------------------------------


def verdict(impl_name: str, problems: list[str], what: str = "") -> None:
    """rsubprocess must have no problem; asyncio's problems are its recorded result (xfail)."""
    if not problems:
        return
    text = "; ".join(p if len(p) < 400 else p[:400] + "..." for p in problems[:5])
    if len(problems) > 5:
        text += f"; ... ({len(problems) - 5} more)"
    if impl_name == "asyncio":
        pytest.xfail(f"asyncio's own result{(' (' + what + ')') if what else ''}: {text}")
    pytest.fail(f"rsubprocess: {text}", pytrace=False)


@pytest.fixture
def rsubprocess_only(request: pytest.FixtureRequest) -> str:
    """For variants that only exist in rsubprocess (its spawn and exit-watch fallbacks)."""
    if "rsubprocess" not in request.config.getoption("impl"):
        pytest.skip("--impl excludes rsubprocess")
    return "rsubprocess"


#: Environment of rsubprocess's fallback paths (see rsubprocess/subprocess.py, process/mod.rs).
RSUBPROCESS_PATHS = {
    "native+pidfd": {},
    "no-pidfd": {"RSUBPROCESS_NO_PIDFD": "1"},
    "popen": {"RSUBPROCESS_SPAWN": "popen"},
}
