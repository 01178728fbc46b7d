"""User code like the README's examples; `tests/test_typing.py` type-checks it with mypy."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess

import rsubprocess
from rsubprocess import PIPE


async def basic() -> bytes:
    proc = await rsubprocess.create_subprocess_exec("cat", stdin=PIPE, stdout=PIPE)
    out, err = await proc.communicate(b"hello")
    assert out is not None and err is None
    assert proc.returncode == 0
    reader: asyncio.StreamReader | None = proc.stdout  # the asyncio types still fit
    assert reader is None or isinstance(reader, asyncio.StreamReader)
    return out


async def streams() -> list[bytes]:
    proc = await rsubprocess.create_subprocess_shell("printf 'a\\nb\\n'", stdout=PIPE)
    assert proc.stdout is not None
    first: bytes = await proc.stdout.readline()
    rest = [line async for line in proc.stdout]
    code: int = await proc.wait()
    return [first, *rest, bytes([code])]


async def extras() -> int:
    r = await rsubprocess.run(["true"], capture_output=True, text=True, timeout=10)
    text_out: str = r.stdout
    proc = await rsubprocess.create_subprocess_exec(
        "sleep",
        "1",
        stdout=PIPE,
        pdeathsig=signal.SIGKILL,
        rlimits={resource.RLIMIT_NOFILE: (1024, 1024)},
    )
    async with proc:
        assert proc.stdout is not None
        async for _line in proc.stdout.lines(max_line=1 << 20):
            pass
        try:
            await proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            n: int = proc.kill_tree(signal.SIGTERM)
            assert n >= 0
    assert proc.rusage is None or proc.rusage.ru_maxrss >= 0
    return len(text_out)


def patched() -> None:
    with rsubprocess.installed():
        pass
    rsubprocess.install()
    rsubprocess.uninstall()
