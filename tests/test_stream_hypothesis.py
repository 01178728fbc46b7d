"""A byte stream cut at random points, read with a random sequence of operations: rsubprocess's
StreamReader must return the same values, raise the same exceptions and leave the same unread
bytes as asyncio's, after every operation (issue 4)."""

from __future__ import annotations

import asyncio

import rsubprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LIMIT = 16

ops = st.one_of(
    st.tuples(st.just("readline")),
    st.tuples(st.just("read"), st.integers(-1, 40)),
    st.tuples(st.just("readexactly"), st.integers(0, 40)),
    st.tuples(st.just("readuntil"), st.sampled_from([b"\n", b"\r\n", b"ab", b"\x00"])),
    st.tuples(st.just("at_eof")),
)


def outcome(result):
    if isinstance(result, BaseException):
        extra = ()
        if isinstance(result, asyncio.IncompleteReadError):
            extra = (result.partial, result.expected)
        elif isinstance(result, asyncio.LimitOverrunError):
            extra = (result.consumed,)
        return ("raise", type(result), str(result), extra)
    return ("ok", result)


async def apply(reader, op):
    name, *args = op
    if name == "at_eof":
        return reader.at_eof()
    try:
        return await getattr(reader, name)(*args)
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"z", b"\n")),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    seq=st.lists(ops, min_size=1, max_size=12),
)
def test_random_cuts_and_reads_match_asyncio(data, cuts, seq):
    bounds = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]

    async def main():
        ours = rsubprocess.StreamReader(limit=LIMIT)
        theirs = asyncio.StreamReader(limit=LIMIT)
        for chunk in chunks:
            ours.feed_data(chunk)
            theirs.feed_data(chunk)
        ours.feed_eof()
        theirs.feed_eof()
        for op in seq:
            a = outcome(await apply(theirs, op))
            b = outcome(await apply(ours, op))
            assert b == a, (op, a, b)
            assert bytes(ours._buffer) == bytes(theirs._buffer), op

    asyncio.run(main())


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=10),
)
def test_lines_fed_in_pieces_while_reading_match_asyncio(lines, cuts):
    """Data arrives while a reader waits (the pending-read path), not all up front."""
    data = b"".join(line + b"\n" for line in lines)

    async def collect(reader):
        out = []
        while True:
            try:
                line = await reader.readline()
            except ValueError as exc:
                out.append(("ValueError", str(exc)))
                continue
            if not line:
                return out
            out.append(line)

    async def feed(reader):
        pos, i = 0, 0
        while pos < len(data):
            step = cuts[i % len(cuts)]
            reader.feed_data(data[pos : pos + step])
            pos += step
            i += 1
            await asyncio.sleep(0)
        reader.feed_eof()

    async def main():
        results = []
        for reader in (asyncio.StreamReader(limit=LIMIT), rsubprocess.StreamReader(limit=LIMIT)):
            got, _ = await asyncio.gather(collect(reader), feed(reader))
            results.append(got)
        assert results[1] == results[0]

    asyncio.run(main())
