"""CPython's own ``test.test_asyncio.test_subprocess`` (of the running interpreter), run against
rsubprocess (``rsubprocess.install()`` around each test) and, as the harness's control, against
asyncio itself (no patch).

Exclusions: tests/stdlib/exclusions.py (the only place). Tests marked ``asyncio_machinery`` drive
``loop.subprocess_exec``/``BaseSubprocessTransport`` directly and never reach rsubprocess; they
still run, and the terminal summary counts the tests that do exercise rsubprocess.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.helpers import ASYNCIO_ENTRY_POINTS, load_rsubprocess
from tests.stdlib.cpython import import_cpython_module, nothing, params, run_one

MODULE = import_cpython_module("test_subprocess")


def _machinery(cls: type, method: str, src: str) -> bool:
    return "create_subprocess_" not in src


PARAMS = params("test_subprocess", MODULE, machinery=_machinery) if MODULE is not None else []


@contextlib.contextmanager
def installed() -> Iterator[None]:
    rs = load_rsubprocess().module
    rs.install()
    try:
        # Otherwise these would silently test asyncio itself.
        for module, attr in ASYNCIO_ENTRY_POINTS:
            assert getattr(module, attr) is getattr(rs, attr), f"install() left {attr} alone"
        yield
    finally:
        rs.uninstall()


def test_cpython_test_subprocess_is_importable():
    assert MODULE is not None, "test.test_asyncio.test_subprocess is missing from this Python"
    assert len(PARAMS) > 30


@pytest.mark.parametrize("test_id", PARAMS)
def test_cpython(impl_name, test_id):
    if impl_name == "rsubprocess":
        try:
            patch = installed()
            load_rsubprocess()
        except ImportError as exc:
            pytest.fail(f"rsubprocess is not importable (run `make build`): {exc}")
    else:
        patch = nothing()
    run_one(MODULE, test_id, patch)
