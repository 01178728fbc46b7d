"""CPython's own StreamReader tests from ``test.test_asyncio.test_streams`` (of the running
interpreter), run with ``asyncio.StreamReader`` and ``asyncio.streams.StreamReader`` replaced by
``rsubprocess.StreamReader`` (and, as the harness's control, unpatched).

Only the tests that build a bare ``asyncio.StreamReader`` and drive it themselves (feed_data,
feed_eof, set_exception, its constructor and repr) are collected; network ones (sockets,
servers, TLS, ``StreamReaderProtocol``, ``connect_read_pipe``, subprocess plumbing) are out of
scope (DESIGN 1c). Exclusions: tests/stdlib/exclusions.py.
"""

from __future__ import annotations

import asyncio
import asyncio.streams
import contextlib
import re
from collections.abc import Iterator

import pytest

from tests.helpers import load_rsubprocess
from tests.stdlib.cpython import import_cpython_module, nothing, params, run_one

MODULE = import_cpython_module("test_streams")

OUT_OF_SCOPE = re.compile(
    r"socket|server|open_connection|open_unix|ssl|tls|connect_read_pipe|connect_write_pipe|"
    r"StreamReaderProtocol|StreamWriter\(|subprocess|run_test_server"
)


def _select(cls: type, method: str, src: str) -> bool:
    return "asyncio.StreamReader(" in src and not OUT_OF_SCOPE.search(src)


PARAMS = params("test_streams", MODULE, select=_select) if MODULE is not None else []


@contextlib.contextmanager
def patched() -> Iterator[None]:
    reader = load_rsubprocess().StreamReader
    saved = (asyncio.StreamReader, asyncio.streams.StreamReader)
    asyncio.StreamReader = asyncio.streams.StreamReader = reader
    try:
        yield
    finally:
        asyncio.StreamReader, asyncio.streams.StreamReader = saved


def test_cpython_test_streams_is_importable():
    assert MODULE is not None, "test.test_asyncio.test_streams is missing from this Python"
    assert len(PARAMS) > 30


@pytest.mark.parametrize("test_id", PARAMS)
def test_cpython(impl_name, test_id):
    if impl_name == "rsubprocess":
        try:
            load_rsubprocess()
        except ImportError as exc:
            pytest.fail(f"rsubprocess is not importable (run `make build`): {exc}")
        patch = patched()
    else:
        patch = nothing()
    run_one(MODULE, test_id, patch)
