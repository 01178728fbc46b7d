"""Big data: a 10 MB single line, 1 GiB through ``cat`` with bounded memory, binary with NUL."""

from __future__ import annotations

import asyncio
import os
import random
import shutil

import pytest

from tests.reliability.conftest import first_lines, noise, run_scenario, verdict

pytestmark = pytest.mark.timeout(120)

CAT = shutil.which("cat")
LINE = 10_000_000
#: Printed by a child: one line of LINE bytes (and a short second line), no newline before.
ONE_LINE = f"import sys; sys.stdout.buffer.write(b'a' * {LINE} + b'\\n' + b'tail')"


@pytest.mark.parametrize("how", ["readline", "readuntil", "read", "readexactly", "communicate"])
def test_10mb_single_line(impl, run, tag, how):
    import sys

    async def main():
        limit = 16 << 20 if how in ("readline", "readuntil") else 2**16
        proc = await impl.create_subprocess_exec(
            sys.executable, "-c", ONE_LINE, stdout=impl.PIPE, limit=limit, env=tag.env()
        )
        if how == "readline":
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            rest = await proc.stdout.read()
        elif how == "readuntil":
            line = await asyncio.wait_for(proc.stdout.readuntil(b"\n"), 30)
            rest = await proc.stdout.read()
        elif how == "read":
            data = await asyncio.wait_for(proc.stdout.read(), 30)
            line, rest = data[: LINE + 1], data[LINE + 1 :]
        elif how == "readexactly":
            line = await asyncio.wait_for(proc.stdout.readexactly(LINE + 1), 30)
            rest = await proc.stdout.read()
        else:
            data, _ = await asyncio.wait_for(proc.communicate(), 30)
            line, rest = data[: LINE + 1], data[LINE + 1 :]
        assert len(line) == LINE + 1
        assert line == b"a" * LINE + b"\n"
        assert rest == b"tail"
        assert await proc.wait() == 0

    run(main, timeout=60)


def test_10mb_line_over_the_default_limit(impl, run, tag):
    """With the default 64 KiB limit, readline() raises ValueError and the reader stays usable
    (asyncio: the oversized line is dropped up to the next newline)."""
    import sys

    async def main():
        proc = await impl.create_subprocess_exec(
            sys.executable, "-c", ONE_LINE, stdout=impl.PIPE, env=tag.env()
        )
        with pytest.raises(ValueError):
            await asyncio.wait_for(proc.stdout.readline(), 30)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert rest.endswith(b"tail")
        assert await proc.wait() == 0

    run(main, timeout=60)


def test_binary_with_nul(impl, run, tag):
    """NUL bytes and every byte value: byte-exact through communicate(), readuntil(b"\\0")
    and readline()."""
    rng = random.Random(3)
    records = [rng.randbytes(rng.randint(0, 3000)).replace(b"\0", b"\1") for _ in range(300)]
    payload = b"\0".join(records) + b"\0"
    everything = bytes(range(256)) * 4096 + b"\0" * 100_000

    async def main():
        env = tag.env()
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE, env=env)
        out, _ = await proc.communicate(everything)
        assert out == everything

        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE, env=env)
        proc.stdin.write(payload)
        proc.stdin.close()
        got = [await proc.stdout.readuntil(b"\0") for _ in records]
        assert got == [r + b"\0" for r in records]
        assert await proc.stdout.read() == b""
        assert await proc.wait() == 0

        lines = b"".join(b"\0" * i + b"x\0y\n" for i in range(200))
        proc = await impl.create_subprocess_exec(CAT, stdin=impl.PIPE, stdout=impl.PIPE, env=env)
        proc.stdin.write(lines)
        proc.stdin.close()
        got = [await proc.stdout.readline() for _ in range(200)]
        assert b"".join(got) == lines
        assert all(line.endswith(b"x\0y\n") for line in got)
        assert await proc.wait() == 0

    run(main)


@pytest.mark.slow
def test_1gib_through_cat_bounded_memory(impl_name, loop_kind, tag):
    """1 GiB (asyncio: 256 MiB) written with write()+drain() and read with read(64 KiB): the
    CRCs match and the peak RSS grows by less than 64 MiB (asserted for rsubprocess)."""
    size = (1 << 30) if impl_name == "rsubprocess" else (256 << 20)
    out = run_scenario("bigcat", impl_name, loop_kind, args={"size": size}, tag=tag, timeout=60)
    problems = out.failure()
    if not problems:
        r = out.result
        print(
            f"{impl_name}-{loop_kind}: {r['bytes'] >> 20} MiB in {r['seconds']:.1f} s, "
            f"peak RSS +{r['rss_growth_mib']:.1f} MiB"
        )
        if not r["ok"]:
            problems.append(f"data mismatch: {r}")
        if r["rss_growth_mib"] > 64:
            problems.append(f"peak RSS grew by {r['rss_growth_mib']:.0f} MiB")
    extra = noise(out.stderr)
    if extra:
        problems.append(f"stderr: {first_lines(chr(10).join(extra), 4)}")
    verdict(impl_name, problems, "1 GiB through cat")


def test_binary_env_and_args_with_high_bytes(impl, run, tag):
    """Non-UTF-8 bytes in argv and env values (NUL itself is rejected with ValueError, see the
    bad-input corpus) reach the child unchanged."""
    arg = bytes(range(1, 256))

    async def main():
        env = {k.encode(): v.encode() for k, v in tag.env().items()}
        env[b"RSP_BYTES"] = arg
        proc = await impl.create_subprocess_exec(
            "sh",
            "-c",
            'printf %s "$1"; printf %s "$RSP_BYTES"',
            "sh",
            arg,
            stdout=impl.PIPE,
            env=env,
        )
        out, _ = await proc.communicate()
        assert out == arg + arg

    run(main)
    assert os.environ.get("RSP_BYTES") is None
