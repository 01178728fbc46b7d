"""Reliability scenarios that need a fresh interpreter of their own.

    python -X dev _scenarios.py <scenario> <asyncio|rsubprocess> <asyncio|uvloop> '<json args>'

Each prints one ``RESULT {json}`` line on stdout; tests/reliability/conftest.py's
``run_scenario`` runs it (in a session of its own, killed on timeout) and the tests assert on
the result, the exit status and the interpreter's stderr. Besides the standard library, uvloop
and rsubprocess, it imports tests/helpers.py, and the test modules whose body a scenario
reuses: this file runs on every supported Python (3.9+).
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import ASYNCIO, children, close_loop, load_rsubprocess, new_loop, warm_up
from tests.helpers import open_fds as fds
from tests.helpers import settle as settle_async
from tests.helpers import wait_until as settle

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {}


def scenario(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    SCENARIOS[fn.__name__] = fn
    return fn


def load(impl: str) -> Any:
    return load_rsubprocess() if impl == "rsubprocess" else ASYNCIO


def run(kind: str, coro: Any) -> Any:
    loop = new_loop(kind, debug=False)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coro)
    finally:
        close_loop(loop)


def new_fds(before: dict[int, str]) -> dict[int, str]:
    return {k: v for k, v in fds().items() if before.get(k) != v}


def exc_info(exc: BaseException) -> list[Any]:
    return [type(exc).__name__, getattr(exc, "errno", None), str(exc)]


class Captured(logging.Handler):
    """Records asyncio's log (so it does not reach stderr as noise)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def capture_asyncio_log() -> Captured:
    handler = Captured()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    logger.propagate = False
    return handler


# --- shutdown ------------------------------------------------------------------------------------

KEEP: list[Any] = []


async def spawn_lingering(ns: Any) -> list[Any]:
    """Children that would run for 30 s, some with pipes nobody reads."""
    return [
        await ns.create_subprocess_exec("sleep", "30"),
        await ns.create_subprocess_exec(
            "head", "-c", str(1 << 20), "/dev/zero", stdout=ns.PIPE, stderr=ns.PIPE
        ),
        await ns.create_subprocess_exec("cat", stdin=ns.PIPE, stdout=ns.PIPE),
        await ns.create_subprocess_exec("yes", stdout=ns.PIPE),
    ]


@scenario
def shutdown(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Children still running (unread pipes, a pending wait()) when the program lets go.

    how = "asyncio_run": asyncio.run() (uvloop.run()) returns; the script then reports.
          "exit_loop_open": the interpreter exits with live Process objects, loop not closed.
          "exit_loop_closed": the loop is closed, the Process objects live until exit.
          "thread_close": the loop runs in a thread, another thread closes it.
    """
    how = args["how"]
    pids: list[int] = []

    async def main() -> None:
        procs = await spawn_lingering(ns)
        pids.extend(p.pid for p in procs)
        KEEP.append(asyncio.ensure_future(procs[0].wait()))  # pending when the loop goes away
        await asyncio.sleep(0.3)
        if how == "asyncio_run":
            KEEP.clear()
        else:
            KEEP.extend(procs)

    result: dict[str, Any] = {"how": how}
    if how == "asyncio_run":
        if kind == "uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
    elif how in ("exit_loop_open", "exit_loop_closed"):
        loop = new_loop(kind, debug=False)
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        if how == "exit_loop_closed":
            close_loop(loop)
        else:
            KEEP.append(loop)
        result["pids"] = pids
        return result  # the interpreter exits now, with KEEP alive
    elif how == "thread_close":
        loop = new_loop(kind, debug=False)

        def runner() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main())
            loop.run_forever()

        t = threading.Thread(target=runner)
        t.start()
        time.sleep(1.0)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        result["thread_alive"] = t.is_alive()
        close_loop(loop)  # from the main thread
        KEEP.clear()
        del t
    else:
        raise ValueError(how)
    gc.collect()
    settle(lambda: not (set(children()) & set(pids)), 2.0)
    result["pids"] = pids
    result["children_after"] = {str(p): s for p, s in children().items() if p in pids}
    return result


# --- foreign reapers -------------------------------------------------------------------------


@scenario
def foreign_reaper(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Someone else reaps our children: a thread in os.waitpid(-1, 0), SIGCHLD set to SIG_IGN,
    or a third-party SIGCHLD handler (reaping, or only counting)."""
    mode = args["mode"]
    log = capture_asyncio_log()
    stop = threading.Event()
    foreign: list[int] = []
    sigchld_seen = [0]

    def reap_all() -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            foreign.append(pid)

    if mode == "thread_waitpid":

        def reaper() -> None:
            while not stop.is_set():
                try:
                    pid, _ = os.waitpid(-1, 0)
                    foreign.append(pid)
                except ChildProcessError:
                    time.sleep(0.001)

        threading.Thread(target=reaper, daemon=True).start()
    elif mode == "sigchld_ign":
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    elif mode == "sigchld_reaping_handler":

        def handler(signum: int, frame: Any) -> None:
            sigchld_seen[0] += 1
            reap_all()

        signal.signal(signal.SIGCHLD, handler)
    elif mode == "sigchld_counting_handler":

        def handler(signum: int, frame: Any) -> None:
            sigchld_seen[0] += 1

        signal.signal(signal.SIGCHLD, handler)
    else:
        raise ValueError(mode)
    installed = signal.getsignal(signal.SIGCHLD)

    cases = [
        (("true",), 0, None),
        (("sh", "-c", "exit 3"), 3, None),
        (("sleep", "0.05"), 0, None),
        (("sh", "-c", "kill -9 $$"), -9, None),
        (("cat",), 0, b"hello"),
    ]

    timeout = args.get("timeout", 5)

    async def one(i: int) -> dict[str, Any]:
        argv, rc, data = cases[i % len(cases)]
        entry: dict[str, Any] = {"expected": rc}
        try:
            if data is None:
                proc = await ns.create_subprocess_exec(*argv)
                entry["pid"] = proc.pid
                entry["returncode"] = await asyncio.wait_for(proc.wait(), timeout)
            else:
                proc = await ns.create_subprocess_exec(*argv, stdin=ns.PIPE, stdout=ns.PIPE)
                entry["pid"] = proc.pid
                out, _ = await asyncio.wait_for(proc.communicate(data), timeout)
                entry["returncode"] = proc.returncode
                entry["output_ok"] = out == data
        except asyncio.TimeoutError:
            entry["hang"] = True
            if "pid" in entry:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
        except Exception as exc:
            entry["raised"] = exc_info(exc)
        return entry

    async def main() -> list[dict[str, Any]]:
        sequential, concurrent = args.get("counts", (10, 20))
        results = [await one(i) for i in range(sequential)]
        results += await asyncio.gather(
            *(one(i) for i in range(sequential, sequential + concurrent))
        )
        return results

    t0 = time.monotonic()
    try:
        results = run(kind, main())
    finally:
        stop.set()
    elapsed = time.monotonic() - t0
    gc.collect()
    settle(lambda: not children(), 2.0)
    return {
        "mode": mode,
        "results": results,
        "log": log.messages,
        "elapsed": elapsed,
        "handler_kept": signal.getsignal(signal.SIGCHLD) is installed,
        "sigchld_seen": sigchld_seen[0],
        "foreign_reaped": len(foreign),
        "children_after": {str(p): s for p, s in children().items()},
    }


# --- pid reuse -----------------------------------------------------------------------------------


def set_last_pid(pid: int) -> None:
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid))


def proc_state(pid: int) -> tuple[str, bytes]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return ("gone", b"")
    return (data[data.rindex(b")") + 2 :].split()[0].decode(), cmd)


@scenario
def pid_reuse(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run in a private pid namespace, where ns_last_pid makes the next process take a chosen
    pid. Each round: a child of ``ns`` exits; it is reaped (by someone else before the loop
    notices: "foreign", or by ``ns`` itself: "own"); a victim process is started with the very
    same pid; then ``kill()``/``terminate()``/``send_signal()`` is called on the old Process.
    The victim must survive, and wait() must not hang or report the victim's status."""
    rounds = args["rounds"]
    rng = random.Random(args.get("seed", 0))
    log = capture_asyncio_log()
    tally: dict[str, int] = {}
    events: list[str] = []

    def count(key: str) -> None:
        tally[key] = tally.get(key, 0) + 1

    async def round_(i: int) -> None:
        how = rng.choice(["foreign", "own"])
        method = rng.choice(["kill", "terminate", "send_signal"])
        pipes = rng.choice([{}, {"stdout": ns.PIPE}])
        proc = await ns.create_subprocess_exec("sh", "-c", "exit 7", **pipes)
        pid = proc.pid
        if how == "foreign":
            # Reap it behind the loop's back (the loop does not run meanwhile).
            try:
                os.waitid(os.P_PID, pid, os.WEXITED)
            except ChildProcessError:
                count("foreign reap lost to the library's own waiter thread")
        else:
            rc = await asyncio.wait_for(proc.wait(), 5)
            if rc != 7:
                events.append(f"round {i}: own reap returncode {rc}")
            if proc.stdout is not None:
                await proc.stdout.read()
        set_last_pid(pid - 1)
        victim = subprocess.Popen(["sleep", "30"])
        if victim.pid != pid:
            count("pid not reused")
            victim.kill()
            victim.wait()
            await asyncio.wait_for(proc.wait(), 5)
            return
        try:
            getattr(proc, method)(*((signal.SIGTERM,) if method == "send_signal" else ()))
            outcome = "no error"
        except ProcessLookupError:
            outcome = "ProcessLookupError"
        except Exception as exc:
            outcome = f"raised {exc!r}"
        count(f"{how} reap, {method}(): {outcome}")
        time.sleep(0.01)
        state = proc_state(pid)
        if state[0] in ("gone", "Z") or not state[1].startswith(b"sleep"):
            count("VICTIM KILLED")
            events.append(f"round {i} ({how}, {method}): victim {pid} killed ({state[0]})")
        hung = False
        try:
            rc = await asyncio.wait_for(proc.wait(), 2)
        except asyncio.TimeoutError:
            hung = True
            count("wait() hung")
            events.append(f"round {i} ({how}): wait() hung until the victim was killed")
            victim.kill()  # unblocks a wait() that waits for the pid's new owner
            rc = await asyncio.wait_for(proc.wait(), 5)
        if how == "foreign" and rc not in (7, 255):
            events.append(f"round {i}: wait() returned {rc} (the victim's status?)")
        if proc.stdout is not None:
            await proc.stdout.read()
        state = proc_state(pid)
        if not hung and (state[0] in ("gone", "Z") or not state[1].startswith(b"sleep")):
            count("VICTIM KILLED OR REAPED after wait()")
            events.append(f"round {i} ({how}): victim gone after wait(): {state[0]}")
        victim.kill()
        victim.wait()

    async def main() -> None:
        for i in range(rounds):
            await round_(i)
            if tally.get("wait() hung", 0) >= 3:
                events.append(f"stopped after round {i}: wait() hung 3 times")
                break

    t0 = time.monotonic()
    run(kind, main())
    return {
        "tally": tally,
        "events": events[:30],
        "elapsed": time.monotonic() - t0,
        "log_lines": len(log.messages),
        "log_sample": log.messages[:3],
    }


# --- big data ------------------------------------------------------------------------------------


def vm_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise LookupError(field)


def reset_peak_rss() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS (``clear_refs`` 5); return the RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return vm_mib("VmRSS")


@scenario
def bigcat(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """``size`` bytes through ``cat``: write()+drain() in 1 MiB blocks while reading
    read(64 KiB); checks a CRC of both sides and the peak RSS growth."""
    size = args["size"]
    block = os.urandom(1 << 20)

    async def main() -> dict[str, Any]:
        await warm_up(ns)
        gc.collect()
        rss0 = reset_peak_rss()
        t0 = time.monotonic()
        proc = await ns.create_subprocess_exec("cat", stdin=ns.PIPE, stdout=ns.PIPE)

        async def writer() -> int:
            crc = 0
            for _ in range(size // len(block)):
                proc.stdin.write(block)
                crc = zlib.crc32(block, crc)
                await proc.stdin.drain()
            proc.stdin.close()
            return crc

        async def reader() -> tuple[int, int]:
            crc = n = 0
            while True:
                chunk = await proc.stdout.read(1 << 16)
                if not chunk:
                    return crc, n
                crc = zlib.crc32(chunk, crc)
                n += len(chunk)

        wcrc, (rcrc, n) = await asyncio.gather(writer(), reader())
        rc = await proc.wait()
        return {
            "ok": wcrc == rcrc and n == size and rc == 0,
            "bytes": n,
            "seconds": time.monotonic() - t0,
            "rss_growth_mib": vm_mib("VmHWM") - rss0,
        }

    return run(kind, main())


# --- loop health ---------------------------------------------------------------------------------


@scenario
def heartbeat(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """A 1 ms heartbeat task while ``children`` children are spawned (and waited for) from a
    process holding a ``heap_mib`` heap (touched, so fork has page tables to copy)."""
    heap = b"\x01" * (args["heap_mib"] << 20)

    async def main() -> dict[str, Any]:
        await warm_up(ns)
        gaps: list[float] = []
        stop = False

        async def beat() -> None:
            last = time.perf_counter()
            while not stop:
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        hb = asyncio.ensure_future(beat())
        await asyncio.sleep(0.05)
        base = len(gaps)
        t0 = time.perf_counter()
        for _ in range(args["children"]):
            proc = await ns.create_subprocess_exec("true")
            await proc.wait()
        spawn_time = time.perf_counter() - t0
        stop = True
        await hb
        during = sorted(gaps[base:])
        return {
            "max_stall_ms": (during[-1] - 0.001) * 1000,
            "p99_stall_ms": (during[int(len(during) * 0.99)] - 0.001) * 1000,
            "beats": len(during),
            "spawn_seconds": spawn_time,
            "heap_mib": len(heap) >> 20,
        }

    return run(kind, main())


# --- resource exhaustion ---------------------------------------------------------------------


async def try_spawn(ns: Any) -> list[Any]:
    """One spawn with every pipe and a round trip; what happened, as JSON-able data."""
    try:
        proc = await ns.create_subprocess_exec("cat", stdin=ns.PIPE, stdout=ns.PIPE, stderr=ns.PIPE)
    except OSError as exc:
        return ["OSError", type(exc).__name__, exc.errno, str(exc)]
    except BaseException as exc:
        return ["unexpected", type(exc).__name__, getattr(exc, "errno", None), str(exc)]
    try:
        out, _ = await asyncio.wait_for(proc.communicate(b"ping"), 10)
    except BaseException as exc:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await asyncio.wait_for(proc.wait(), 10)
        return ["spawned, then failed", type(exc).__name__, getattr(exc, "errno", None), str(exc)]
    return ["ok", out == b"ping" and proc.returncode == 0]


def limit_with_headroom(headroom: int) -> int:
    """The RLIMIT_NOFILE under which exactly ``headroom`` fd numbers are still free."""
    used = set(fds())
    free = 0
    limit = 0
    while True:
        if limit not in used:
            if free == headroom:
                return limit
            free += 1
        limit += 1


async def spawn_under_limit(
    ns: Any, which: int, limit: int, before: dict[int, str]
) -> dict[str, Any]:
    """One spawn with the soft limit ``which`` at ``limit``; what it left behind once the loop
    had a moment to clean up; and whether a spawn works again once the limit is restored."""
    soft, hard = resource.getrlimit(which)
    resource.setrlimit(which, (limit, hard))
    try:
        outcome = await try_spawn(ns)
    finally:
        resource.setrlimit(which, (soft, hard))

    def clean() -> bool:
        gc.collect()
        return not new_fds(before) and not children()

    await settle_async(clean, 0.3)
    return {
        "outcome": outcome,
        "leaked_fds": new_fds(before),
        "children": children(),
        "spawn_after": await try_spawn(ns),
    }


@scenario
def nofile(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """RLIMIT_NOFILE lowered so that one of the fds a spawn needs (pipes, error pipe, pidfd)
    cannot be created: sweep the headroom from 0 upwards. Each attempt must succeed or raise
    OSError(EMFILE), leak no fd and leave no child; a spawn after the limit is restored works."""
    attempts = []

    async def main() -> None:
        await warm_up(ns)
        await asyncio.sleep(0.05)
        gc.collect()
        before = fds()
        for headroom in range(args.get("max_headroom", 11)):
            limit = limit_with_headroom(headroom)
            attempt = await spawn_under_limit(ns, resource.RLIMIT_NOFILE, limit, before)
            attempts.append({"headroom": headroom, **attempt})

    run(kind, main())
    return {"attempts": attempts}


@scenario
def nproc(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """As uid 65534 (root is exempt from RLIMIT_NPROC), with RLIMIT_NPROC at the number of
    processes that uid already has: clone/fork fails. Each attempt must raise OSError(EAGAIN)
    cleanly; after the limit is raised again, a spawn works."""
    import uvloop  # noqa: F401  (imported before the privileges go)

    os.chdir("/tmp")
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    attempts = []

    def tasks_of_uid() -> int:
        n = 0
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    n += os.stat(f"/proc/{name}").st_uid == 65534 and len(
                        os.listdir(f"/proc/{name}/task")
                    )
                except OSError:
                    pass
        return n

    async def main() -> None:
        await warm_up(ns)
        await asyncio.sleep(0.05)
        gc.collect()
        before = fds()
        for _ in range(args.get("attempts", 5)):
            limit = tasks_of_uid()
            attempts.append(await spawn_under_limit(ns, resource.RLIMIT_NPROC, limit, before))

    run(kind, main())
    return {"attempts": attempts, "uid": os.getuid(), "eagain": errno.EAGAIN}


# --- cancellation storm ------------------------------------------------------------------------


@scenario
def storm(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """tests/reliability/test_cancellation.py's storm, for asyncio, whose tasks can ignore
    cancellation (uvloop) and so hang the loop's close: the result is reported first, then the
    loop is closed under a watchdog that reports a hang and ends the interpreter."""
    from tests.reliability import test_cancellation as tc

    token = os.environ["RSP_RELIABILITY_TOKEN"]
    env = dict(os.environ)
    log = capture_asyncio_log()
    handler: list[str] = []

    def cleanup() -> dict[int, str]:
        from tests.reliability.conftest import Tag

        return Tag(token).cleanup()

    loop = new_loop(kind, debug=False)
    loop.set_exception_handler(
        lambda _loop, ctx: handler.append(f"{ctx.get('message')} {ctx.get('exception')!r}")
    )
    asyncio.set_event_loop(loop)
    result = loop.run_until_complete(tc.storm(ns, args["seed"], env, cleanup))
    gc.collect()
    result.update(handler=handler, log=[m for m in log.messages if m.startswith("ERROR")])

    def close_hung() -> None:
        print("RESULT " + json.dumps({**result, "close_hung": True}), flush=True)
        os._exit(0)

    watchdog = threading.Timer(5, close_hung)
    watchdog.start()
    close_loop(loop)
    watchdog.cancel()
    return {**result, "close_hung": False}


# --- bad input ---------------------------------------------------------------------------------


@scenario
def corpus(ns: Any, kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """tests/reliability/test_bad_input.py's corpus, for a combination whose own leaks must not
    reach the test process (asyncio on uvloop leaks fds and zombies on bad input)."""
    from tests.reliability import test_bad_input as corpora

    impl = ASYNCIO if args["impl"] == "asyncio" else load_rsubprocess()
    calls, fn = corpora.CORPORA[args["corpus"]]
    results, devnull_leaked = corpora.run_corpus(impl, kind, calls(), fn)
    return {"results": results, "devnull_leaked": devnull_leaked}


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    name, impl, kind, args = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    ns = load(impl)
    result = SCENARIOS[name](ns, kind, args)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
