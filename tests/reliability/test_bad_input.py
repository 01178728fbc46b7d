"""Bad input: a seeded random corpus of argument mixes, each call made against asyncio on
CPython's own loop (the reference) and against the implementation under test.

The spawn corpus mixes program/argument types, NUL bytes, an argv beyond ARG_MAX (E2BIG),
environments with non-str keys or values, str where bytes belong and the reverse, bad stdio
specs, negative and non-int limits, every keyword asyncio checks itself (``text``,
``encoding``, ``errors``, ``universal_newlines``, ``bufsize``, ``shell``) and Popen keywords
with wrong types. The method corpus makes bad calls on a live process (``communicate("str")``,
``send_signal("x")``, ``readuntil(b"")``, ``write(None)``, ...).

For the same call rsubprocess must raise the same exception type, with the same message
(memory addresses aside), errno and filename -- or succeed with the same returncode and the
same streams --, never call the loop's exception handler, never hang, crash or leak (the
autouse leak check of tests/conftest.py runs after each test). The one documented difference
(README, "Differences from asyncio"): ``limit <= 0`` with a piped stdout/stderr raises
``ValueError('Limit cannot be <= 0')`` before spawning instead of asyncio's logged callback
error and a Process without streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import inspect
import os
import pathlib
import random
import re
import signal
import subprocess
import warnings
from typing import Any

import pytest

from tests.helpers import ASYNCIO, PY, behaviour, run_on_new_loop, swallow_unraisable
from tests.reliability.conftest import REPO, run_scenario, verdict

pytestmark = pytest.mark.timeout(120)

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
SEED = 20250701
SPAWN_CALLS = 1000


class Opaque:
    """An object with a stable repr (``object()``'s holds an address)."""

    def __repr__(self) -> str:
        return "<Opaque>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque)

    def __hash__(self) -> int:
        return 0


def spawn_corpus(seed: int, n: int) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    rng = random.Random(seed)
    # (valid, invalid) values: a call mixes a few of each, so that checks deep in the spawn
    # (Popen's, the child's) are reached too, not only the first argument check.
    programs = (
        ["true", b"true", "/bin/true", pathlib.Path("/bin/true"), "false", bytearray(b"true")],
        [
            None,
            1,
            1.5,
            [],
            ["true"],
            "tr\0ue",
            b"tr\0ue",
            "",
            "/nonexistent/program",
            Opaque(),
            "/",
            "/etc/passwd",
        ],
    )
    arg_lists = (
        [[], ["a"], [b"a"], [pathlib.Path("x")], [b"\xff\xfe"], ["\udcff"], ["\ud800"]],
        [
            [None],
            [1],
            ["a\0b"],
            [b"a\0b"],
            [1.5],
            ["x" * 200_000],
            ["y" * 100_000] * 30,
            [True],
            [Opaque()],
        ],
    )
    shell_cmds = (
        ["exit 3", b"exit 3", "exit 0", bytearray(b"exit 4")],
        [
            None,
            1,
            ["exit 3"],
            "ex\0it 3",
            b"ex\0it 3",
            "",
            "z" * 3_000_000,
            pathlib.Path("true"),
            Opaque(),
        ],
    )
    values: dict[str, tuple[list[Any], list[Any]]] = {
        # Never None for stdin: a child must not read the test runner's stdin (uvloop
        # truncates "tr\0ue" at the NUL and runs ``tr``, "ex\0it" runs ``ex``).
        "stdin": ([PIPE, DEVNULL], [-5, 99999, "x", 1.5, STDOUT, True]),
        "stdout": ([PIPE, DEVNULL, None], [STDOUT, 99999, "x", -5]),
        "stderr": ([PIPE, DEVNULL, None, STDOUT], [99999, "x", -7]),
        "limit": ([1, 2**16, 2**70], [-1, 0, -(2**70)]),
        "env": (
            [None, {"A": "b"}, {b"A": b"b"}, {"A": b"\xff"}, {"PATH": "/usr/bin:/bin"}],
            [
                {1: "x"},
                {"A": 1},
                {"A\0": "x"},
                {"A=B": "x"},
                {"A": "b\0c"},
                "notadict",
                [],
                {"": "x"},
                {"A": None},
            ],
        ),
        "cwd": (
            [None, "/", b"/", pathlib.Path("/tmp")],
            ["/nonexistent", 1, "a\0b", "/etc/passwd"],
        ),
        "close_fds": ([True, False], ["x", None]),
        "pass_fds": ([(), [0, 1]], [(-1,), ("x",), (99999,), None, 5]),
        "start_new_session": ([True, False], [1, "x"]),
        "text": ([False], [True, 1]),
        "encoding": ([None], ["utf-8"]),
        "errors": ([None], ["strict"]),
        "universal_newlines": ([False, None], [True]),
        "bufsize": ([0], [1, -1, "x"]),
        "executable": ([None, "/bin/true", b"/bin/true"], [1, "x\0", "/nonexistent"]),
        "umask": ([-1, 0o22], ["x", 2**40]),
        "restore_signals": ([True, False], []),
        "preexec_fn": ([None], ["not callable", 5]),
        "user": ([65534], ["no-such-user-xyz", -5]),
        "pipesize": ([-1, 4096], [0, "x"]),
        "bogus_keyword": ([], [1]),
    }
    if PY >= (3, 11):
        values["process_group"] = ([0, None], [-1, "x"])

    def pick(pools: tuple[list[Any], list[Any]], p_bad: float) -> Any:
        good, bad = pools
        return rng.choice(bad if bad and (not good or rng.random() < p_bad) else good)

    calls = []
    for _ in range(n):
        kwargs: dict[str, Any] = {"stdin": DEVNULL}
        for key, pools in values.items():
            p = 0.5 if key in ("stdin", "stdout", "stderr") else 0.08
            if rng.random() < p:
                kwargs[key] = pick(pools, 0.3)
        if rng.random() < 0.75:
            program = pick(programs, 0.3)
            args = pick(arg_lists, 0.2)
            if rng.random() < 0.05:
                kwargs["shell"] = rng.choice([True, 1])
            calls.append(("exec", (program, *args), kwargs))
        else:
            if rng.random() < 0.05:
                kwargs["shell"] = rng.choice([False, 0])
            calls.append(("shell", (pick(shell_cmds, 0.3),), kwargs))
    return calls


HEX = re.compile(r"0x[0-9a-fA-F]+")
#: CPython's and PyO3's wording of a wrong argument count differs (and CPython's changes
#: between versions); only the exception type of those is compared.
ARITY = re.compile(r"takes (no|\d+|from \d+ to \d+) (positional )?arguments?|missing \d+ required")


def describe(exc: BaseException) -> list[Any]:
    filename = getattr(exc, "filename", None)
    message = HEX.sub("0x?", str(exc))
    if isinstance(exc, TypeError) and ARITY.search(message):
        message = "<wrong number of arguments>"
    return [
        "raise",
        type(exc).__name__,
        message,
        getattr(exc, "errno", None),
        None if filename is None else repr(filename),
    ]


async def spawn_outcome(ns: Any, call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Any:
    kind, args, kwargs = call
    fn = ns.create_subprocess_exec if kind == "exec" else ns.create_subprocess_shell
    try:
        proc = await asyncio.wait_for(fn(*args, **dict(kwargs)), 10)
    except asyncio.TimeoutError:
        return ["hang"]
    except Exception as exc:
        return describe(exc)
    streams = [s is not None for s in (proc.stdin, proc.stdout, proc.stderr)]
    try:
        await asyncio.wait_for(proc.communicate(), 10)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return ["ok, then communicate() hung", streams]
    return ["ok", proc.returncode, streams]


def devnull_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == os.devnull:
                fds.add(int(name))
    return fds


def run_corpus(ns: Any, loop_kind: str, calls: list[Any], outcome_fn: Any) -> tuple[list[Any], int]:
    """Outcomes, each with the number of calls of the loop's exception handler it caused and
    the pids of children it left behind (every call waits for what it spawned); and the number
    of /dev/null fds leaked on 3.9 and 3.10, where ``subprocess.Popen`` itself leaks one when it
    raises after opening it (closed here: nothing else holds them)."""
    results = []
    devnull_before = devnull_fds()
    seen: set[int] = set()

    def new_zombie() -> Any:
        # Every call waits for what it spawned: any child still there was left behind by this
        # call (running or zombie). /proc/self/task/*/children is cheap enough for each call.
        pids = set()
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/children") as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                pass
        left = sorted(pids - seen)
        seen.update(left)
        return left or None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        calls_of_handler: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _l, ctx: calls_of_handler.append(ctx))
        for call in calls:
            before = len(calls_of_handler)
            with warnings.catch_warnings():
                # 3.9's loop= DeprecationWarning, Popen's "pass_fds overriding close_fds".
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                out = await outcome_fn(ns, call)
            await asyncio.sleep(0)
            results.append([out, len(calls_of_handler) - before, new_zombie()])

    contexts: list[dict[str, Any]] = []
    if ns is ASYNCIO:
        # asyncio's own noise is its result, not ours: "Exception ignored" for loop= on 3.10+
        # (DESIGN 1b), uvloop's unclosed transports (as errors, they make uvloop's
        # loop.close() hang).
        with swallow_unraisable(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            run_on_new_loop(loop_kind, main, 300, contexts)
            gc.collect()
    else:
        run_on_new_loop(loop_kind, main, 300, contexts)
    assert not contexts, contexts
    leaked = 0
    if PY < (3, 11):  # 3.10.13 too: 63 of the 1,000 spawn calls, asyncio's as rsubprocess's
        gc.collect()
        for fd in devnull_fds() - devnull_before:
            os.close(fd)
            leaked += 1
    return results, leaked


def run_isolated(impl: Any, loop_kind: str, corpus: str, tag: Any) -> tuple[list[Any], int]:
    out = run_scenario(
        "corpus",
        impl.name,
        loop_kind,
        args={"corpus": corpus, "repo": str(REPO), "impl": impl.name},
        tag=tag,
        timeout=250,
    )
    assert out.result is not None, out.describe()
    return out.result["results"], out.result["devnull_leaked"]


@functools.cache
def reference(corpus: str) -> tuple[list[Any], int]:
    """asyncio on CPython's own loop, in a fresh interpreter (its own leaks stay there)."""
    return run_isolated(ASYNCIO, "asyncio", corpus, None)


def documented_limit_difference(call: Any) -> bool:
    _, _, kwargs = call
    limit = kwargs.get("limit", 2**16)
    piped = PIPE in (kwargs.get("stdout"), kwargs.get("stderr"))
    return piped and limit <= 0


def compare(impl: Any, loop_kind: str, corpus: str, tag: Any) -> list[str]:
    calls, fn = CORPORA[corpus]
    calls = calls()
    ref, ref_devnull = reference(corpus)
    if impl.name == "asyncio":
        # asyncio leaks fds (3.9's Popen, uvloop) and zombies (uvloop) on bad input: keep that
        # out of this process. rsubprocess runs here, under the leak checks of tests/conftest.
        got, devnull = run_isolated(impl, loop_kind, corpus, tag)
    else:
        got, devnull = run_corpus(impl, loop_kind, calls, fn)
    serious: list[str] = []  # hangs, leaks, exception handler calls: listed first
    problems: list[str] = []
    for call, (want, _, _), (have, have_handler, zombie) in zip(calls, ref, got):
        shown = f"{call[0]}{tuple(a if len(repr(a)) < 60 else '<long>' for a in call[1])}"
        shown += f" {call[2]}" if len(call) > 2 and call[2] else ""
        if zombie:
            serious.append(f"{shown} -> {have}: left child {zombie} behind (never reaped)")
        if have_handler and impl.name == "rsubprocess":
            serious.append(f"{shown}: called the loop's exception handler {have_handler}x")
        if (have[0] == "hang" or have[0].startswith("ok, then")) and have != want:
            serious.append(f"{shown}: {have[0]} (asyncio: {want})")
            continue
        if corpus == "spawn" and documented_limit_difference(call):
            if have == ["raise", "ValueError", "Limit cannot be <= 0", None, None] or (
                have == want
            ):
                continue
        if have != want:
            problems.append(f"{shown}: asyncio {want}, got {have}")
    if devnull > ref_devnull:
        serious.append(f"leaked {devnull} /dev/null fds (asyncio, i.e. Popen: {ref_devnull})")
    problems = serious + problems
    return problems


# --- methods of a live process ---------------------------------------------------------------

METHOD_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("communicate", ("str",)),
    ("communicate", (123,)),
    ("communicate", ([b"x"],)),
    ("communicate", (b"x", 1, 2, 3)),
    ("send_signal", ("x",)),
    ("send_signal", (1.5,)),
    ("send_signal", (None,)),
    ("send_signal", (-1,)),
    ("send_signal", (99999,)),
    ("send_signal", (2**70,)),
    ("send_signal", (2**32 + signal.SIGCONT,)),
    ("send_signal", (signal.SIGCONT,)),
    ("kill", (9,)),
    ("stdout.read", ("x",)),
    ("stdout.read", (1.5,)),
    ("stdout.read", (None,)),
    ("stdout.read", (2**70,)),
    ("stdout.read", (-(2**70),)),
    ("stdout.readexactly", (-1,)),
    ("stdout.readexactly", ("x",)),
    ("stdout.readexactly", (2**70,)),
    ("stdout.readexactly", (-(2**70),)),
    ("stdout.read", (True,)),
    ("stdout.readline", (1,)),
    ("stdout.readuntil", ("x",)),
    ("stdout.readuntil", (b"",)),
    ("stdout.readuntil", (None,)),
    ("stdout.readuntil", (bytearray(b"\n"),)),
    ("stdout.readuntil", (memoryview(b"\n"),)),
    ("stdout.readuntil", (1,)),
    ("stdout.readuntil", ([b"\n"],)),
    ("stdin.write", ("str",)),
    ("stdin.write", (None,)),
    ("stdin.write", (123,)),
    ("stdin.write", ([b"x"],)),
    ("stdin.write", (bytearray(b"ok\n"),)),
    ("stdin.write", (memoryview(b"ok\n"),)),
    ("stdin.writelines", ([b"a", "b"],)),
    ("stdin.writelines", (None,)),
    ("stdin.writelines", (b"abc",)),
    ("stdin.write_eof", (1,)),
    ("stdin.drain", (1,)),
    ("stdin.close", (1,)),
    ("stdin.get_extra_info", ()),
]


def method_corpus() -> list[Any]:
    return [(name, args) for name, args in METHOD_CALLS]


async def method_outcome(ns: Any, call: tuple[str, tuple[Any, ...]]) -> Any:
    name, args = call
    if name.startswith("stdout."):
        # Output then EOF, so that a read to EOF returns.
        argv = ("sh", "-c", 'exec 0<&-; printf "hello\\nworld\\n"')
    else:
        argv = ("cat",)
    proc = await ns.create_subprocess_exec(*argv, stdin=ns.PIPE, stdout=ns.PIPE)
    target: Any = proc
    for part in name.split("."):
        target = getattr(target, part)
    try:
        result = target(*args)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, 2)
        out = ["ok", HEX.sub("0x?", repr(result)) if not isinstance(result, tuple) else "tuple"]
    except asyncio.TimeoutError:
        out = ["hang"]
    except Exception as exc:
        out = describe(exc)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        proc.stdin.close()
    with contextlib.suppress(Exception):
        await proc.stdout.read()
    await proc.wait()
    return out


CORPORA = {
    "spawn": (lambda: spawn_corpus(SEED, SPAWN_CALLS), spawn_outcome),
    "methods": (method_corpus, method_outcome),
}


@pytest.mark.slow
@pytest.mark.parametrize("corpus", list(CORPORA))
def test_bad_input_corpus(impl, loop_kind, tag, corpus):
    problems = compare(impl, loop_kind, corpus, tag)
    if problems and behaviour(impl, loop_kind) == "uvloop":
        problems.insert(0, f"{len(problems)} calls differ from CPython's asyncio under uvloop")
    verdict(impl.name, problems, f"{corpus} corpus vs CPython's asyncio")


def test_corpus_is_deterministic():
    assert spawn_corpus(SEED, 50) == spawn_corpus(SEED, 50)
