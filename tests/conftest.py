"""Fixtures: implementation x event loop matrix, a loop runner, and leak checks.

Every behavioural test takes ``impl`` (asyncio or rsubprocess) and ``run`` (a fresh loop of
``loop_kind``: asyncio's default loop in debug mode, or uvloop); ids read ``[rsubprocess-uvloop]``.
Restrict the matrix with ``--impl asyncio`` / ``--loop uvloop`` (comma-separated lists).

Every test, whatever it is, fails when it leaves behind:
  * a call of the loop's exception handler (``run`` records every call; includes "Task was
    destroyed but it is pending" and tasks still pending when the test coroutine returned),
  * a file descriptor that was not open before it (``/proc/self/fd``),
  * a child process of this process, running or zombie (the children are then killed and
    reaped so that one failure does not cascade),
  * asyncio's entry points still replaced by ``rsubprocess.install()``,
  * an "Exception ignored in ..." unraisable exception, or a warning: pytest's own
    unraisableexception plugin turns those into ``PytestUnraisableExceptionWarning`` and
    ``filterwarnings = error`` into a failure (tests/test_harness.py checks that it does);
    ``gc.collect()`` runs in teardown so that garbage cycles are blamed on the right test.
"""

from __future__ import annotations

import gc
import types
import warnings
from typing import Any

import pytest

from tests.helpers import (
    ASYNCIO,
    ASYNCIO_ENTRY_POINTS,
    children,
    format_contexts,
    kill_and_reap,
    load_rsubprocess,
    open_fds,
    run_on_new_loop,
    swallow_unraisable,
    thread_count,
    thread_names,
    wait_until,
    warm_up,
)

pytest_plugins = ["pytester"]  # tests/test_harness.py

IMPLS = ("asyncio", "rsubprocess")
LOOPS = ("asyncio", "uvloop")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rsubprocess")
    group.addoption(
        "--impl",
        default=",".join(IMPLS),
        help="comma-separated implementations to test (default: %(default)s)",
    )
    group.addoption(
        "--loop",
        default=",".join(LOOPS),
        help="comma-separated event loops to test (default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "difference: documents a deliberate difference from asyncio (DESIGN.md 1b); the test "
        "spells out asyncio's result per version and rsubprocess's own",
    )
    config.addinivalue_line(
        "markers",
        "asyncio_machinery: a CPython test that drives asyncio's own transports "
        "(loop.subprocess_exec, BaseSubprocessTransport) and so does not exercise rsubprocess",
    )


def _option_list(config: pytest.Config, name: str, allowed: tuple[str, ...]) -> list[str]:
    values = [v.strip() for v in config.getoption(name).split(",") if v.strip()]
    for v in values:
        if v not in allowed:
            raise pytest.UsageError(f"--{name}: {v!r} is not one of {allowed}")
    return values


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Two separate parametrizations, impl first, so ids read "[rsubprocess-uvloop]".
    if "impl_name" in metafunc.fixturenames:
        metafunc.parametrize(
            "impl_name", _option_list(metafunc.config, "impl", IMPLS), indirect=True
        )
    if "loop_kind" in metafunc.fixturenames:
        metafunc.parametrize(
            "loop_kind", _option_list(metafunc.config, "loop", LOOPS), indirect=True
        )


@pytest.fixture
def impl_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def loop_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError as exc:  # it is in requirements-dev.txt: never skip silently
            pytest.fail(f"uvloop is not importable: {exc}")
    return request.param


@pytest.fixture
def impl(impl_name: str) -> types.SimpleNamespace:
    """asyncio's or rsubprocess's entry points: create_subprocess_exec/shell, PIPE, STDOUT,
    DEVNULL, Process, StreamReader, StreamWriter, name, module."""
    if impl_name == "asyncio":
        return ASYNCIO
    try:
        return load_rsubprocess()
    except ImportError as exc:
        pytest.fail(f"rsubprocess is not importable (run `make build`): {exc}")


@pytest.fixture
def run(loop_kind: str):
    """``run(coro_or_fn, timeout=30)``: run on a fresh loop of ``loop_kind``, close it properly.

    The test fails if the loop's exception handler was called at all.
    """
    contexts: list[dict[str, Any]] = []

    def runner(coro_or_fn: Any, timeout: float = 30) -> Any:
        return run_on_new_loop(loop_kind, coro_or_fn, timeout, contexts)

    runner.contexts = contexts  # type: ignore[attr-defined]
    yield runner
    gc.collect()  # "Task was destroyed but it is pending" happens at collection
    if contexts:
        text = format_contexts(contexts)
        contexts.clear()
        pytest.fail(f"the loop's exception handler was called:\n{text}", pytrace=False)


# --- leak checks ---------------------------------------------------------------------------------


def _warm_up_all(config: pytest.Config) -> None:
    """Create the process-lifetime resources that are made lazily (rsubprocess's runtime,
    uvloop's global signal pipe on 3.9, ...) before any test takes its fd baseline, so that
    only per-test leaks show up."""
    impls = [ASYNCIO]
    if "rsubprocess" in _option_list(config, "impl", IMPLS):
        try:
            impls.append(load_rsubprocess())
            from rsubprocess import _core

            # The spawn slots are reserved on first use: reserve them now (then back to the
            # default), so tests that turn them on do not count them as leaked.
            _core._set_fd_relay(_core._set_fd_relay(True))
        except ImportError:
            pass

    # A broken build is reported by the tests themselves, not here: no noise, short timeout.
    with warnings.catch_warnings(), swallow_unraisable():
        warnings.simplefilter("ignore")
        for ns in impls:
            for kind in _option_list(config, "loop", LOOPS):
                try:
                    run_on_new_loop(kind, lambda ns=ns: warm_up(ns), 10, [])
                except Exception:
                    pass
        gc.collect()
    kill_and_reap(children())


@pytest.fixture(scope="session", autouse=True)
def _warm_up(pytestconfig: pytest.Config) -> None:
    _warm_up_all(pytestconfig)
    gc.collect()


@pytest.fixture(autouse=True)
def _leak_check():
    kids_before = children()
    fds_before = open_fds()
    yield
    problems = []

    # Install state.
    for (module, attr), original in ASYNCIO_ENTRY_POINTS.items():
        if getattr(module, attr) is not original:
            problems.append(
                f"{module.__name__}.{attr} is still replaced: {getattr(module, attr)!r}"
            )
            setattr(module, attr, original)

    # Children: running or zombie. Asyncio's watcher threads reap asynchronously: settle first.
    def new_kids() -> dict[int, str]:
        return {p: s for p, s in children().items() if p not in kids_before}

    if not wait_until(lambda: not new_kids(), 2.0):
        left = new_kids()
        zombies = sorted(p for p, s in left.items() if s == "Z")
        running = sorted(p for p, s in left.items() if s != "Z")
        if zombies:
            problems.append(f"zombie children (exited, never reaped): {zombies}")
        if running:
            cmdlines = {}
            for p in running:
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmdlines[p] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    cmdlines[p] = "?"
            problems.append(f"children still running: {cmdlines}")
        kill_and_reap(left)

    # File descriptors.
    def new_fds() -> dict[int, str]:
        now = open_fds()
        return {fd: t for fd, t in now.items() if fds_before.get(fd) != t}

    def settled() -> bool:
        gc.collect()
        return not new_fds()

    if not wait_until(settled, 1.0, interval=0.05):
        # Not closed here: their owner may still use them (closing uvloop's crashes it), and
        # the next test takes a new baseline anyway.
        problems.append(f"file descriptors leaked: {new_fds()}")

    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def no_threads():
    """Wait until this process has a single OS thread (for os.fork() on 3.12+ without
    DeprecationWarning); fail if helper threads outlive their work."""
    if not wait_until(lambda: thread_count() == 1, 10.0, interval=0.05):
        pytest.fail(f"threads still alive 10 s after the last operation: {thread_names()}")
