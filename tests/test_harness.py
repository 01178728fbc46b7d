"""The checks in conftest.py must be able to fail: run a pytest session whose tests each commit
one of the sins (with --impl asyncio, so no rsubprocess build is needed) and check that each
one is reported, and that a clean test passes."""

from __future__ import annotations

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

INNER_TESTS = """
import asyncio
import gc
import os
import subprocess
import time

KEEP = []


def test_clean(impl, run):
    async def main():
        proc = await impl.create_subprocess_exec("true")
        return await proc.wait()

    assert run(main) == 0


def test_fd_leak():
    KEEP.append(os.pipe())


def test_child_left_running():
    KEEP.append(subprocess.Popen(["sleep", "30"]))


def test_zombie_left():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    time.sleep(0.3)


def test_exception_handler_called(run):
    async def main():
        asyncio.get_running_loop().call_exception_handler({"message": "boom"})

    run(main)


def test_task_destroyed_pending(run):
    async def main():
        asyncio.ensure_future(asyncio.sleep(3600))

    run(main)


def test_unraisable_in_del():
    class Bad:
        def __del__(self):
            raise RuntimeError("boom in __del__")

    Bad()


def test_resource_warning_in_del():
    class Unclosed:
        def __del__(self):
            import warnings

            warnings.warn("unclosed thing", ResourceWarning)

    Unclosed()


def test_install_left_behind():
    async def fake(*args, **kwargs):
        raise AssertionError

    asyncio.create_subprocess_exec = fake


def test_hard_timeout(run):
    run(asyncio.sleep(5), timeout=0.2)
"""


def test_harness_reports_every_leak(pytester, monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    pytester.makeconftest('pytest_plugins = ["tests.conftest"]\n')
    pytester.makepyfile(test_inner=INNER_TESTS)
    pytester.makefile(".ini", pytest="[pytest]\nfilterwarnings = error\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--impl",
        "asyncio",
        "--loop",
        "asyncio",
        "-rA",
        "-W",
        "error",
    )
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    # Teardown checks give "1 passed + 1 error" for the same test.
    assert (outcomes.get("failed"), outcomes.get("errors")) == (3, 6), out
    assert "PASSED test_inner.py::test_clean[asyncio-asyncio]" in out
    expected = {
        "test_fd_leak": "file descriptors leaked",
        "test_child_left_running": "children still running",
        "test_zombie_left": "zombie children",
        "test_exception_handler_called[asyncio]": "exception handler was called",
        "test_task_destroyed_pending[asyncio]": "tasks still pending",
        "test_unraisable_in_del": "boom in __del__",
        "test_resource_warning_in_del": "unclosed thing",
        "test_install_left_behind": "asyncio.create_subprocess_exec is still replaced",
        "test_hard_timeout[asyncio]": "timed out after 0.2 s",
    }
    for test, message in expected.items():
        lines = [line for line in out.splitlines() if f"test_inner.py::{test} " in line]
        assert any(line.startswith(("FAILED", "ERROR")) for line in lines), (test, out)
        assert message in out, (message, out)
