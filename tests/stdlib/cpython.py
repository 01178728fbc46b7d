"""Run unittest tests of the running interpreter's ``test.test_asyncio`` one by one under pytest.

Each CPython test id becomes one pytest test that builds a fresh ``TestCase`` instance and runs
it in its own ``unittest.TestSuite`` (so setUpModule/tearDownModule and the class fixtures run
around every test: a fresh loop and policy each time, as regrtest would give it), with the
implementation's patch applied around the run. Failures and errors fail the pytest test with
unittest's formatted traceback; unittest skips stay skips (with unittest's reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import re
import types
import unittest
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.stdlib.exclusions import exclusion_reason

PACKAGE = "test.test_asyncio"


def import_cpython_module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ImportError:
        return None


def test_names(module: types.ModuleType) -> list[tuple[str, str]]:
    """(class name, method name) of every unittest test in ``module``, in definition order."""
    loader = unittest.TestLoader()
    found = []
    for cls_name, cls in vars(module).items():
        if (
            isinstance(cls, type)
            and issubclass(cls, unittest.TestCase)
            and cls.__module__ == module.__name__
        ):
            for method in loader.getTestCaseNames(cls):
                found.append((cls_name, method))
    return found


def source_with_helpers(cls: type, method: str) -> str:
    """Source of ``cls.method`` plus that of the ``self.<helper>`` methods it calls (transitively)
    that are defined in the test module."""
    texts: list[str] = []
    seen: set[str] = set()
    todo = [method]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        func = getattr(cls, name, None)
        if not callable(func) or getattr(func, "__module__", None) != cls.__module__:
            continue
        try:
            text = inspect.getsource(func)
        except (OSError, TypeError):
            continue
        texts.append(text)
        todo.extend(re.findall(r"self\.(\w+)", text))
    return "\n".join(texts)


def params(
    module_short: str,
    module: types.ModuleType,
    select: Callable[[type, str, str], bool] = lambda cls, method, src: True,
    machinery: Callable[[type, str, str], bool] = lambda cls, method, src: False,
) -> list[Any]:
    """pytest params ``Class.method`` for the selected tests: excluded ones carry a skip with
    the exclusion's reason, those that never reach rsubprocess the ``asyncio_machinery`` mark."""
    out = []
    for cls_name, method in test_names(module):
        cls = getattr(module, cls_name)
        src = source_with_helpers(cls, method)
        if not select(cls, method, src):
            continue
        test_id = f"{cls_name}.{method}"
        marks = []
        reason = exclusion_reason(module_short, test_id)
        if reason is not None:
            marks.append(
                pytest.mark.skip(reason=f"excluded (tests/stdlib/exclusions.py): {reason}")
            )
        if machinery(cls, method, src):
            marks.append(pytest.mark.asyncio_machinery)
        out.append(pytest.param(test_id, marks=marks, id=test_id))
    return out


def run_one(
    module: types.ModuleType, test_id: str, patch: contextlib.AbstractContextManager
) -> None:
    from test import support

    cls_name, method = test_id.split(".")
    case = getattr(module, cls_name)(method)
    suite = unittest.TestSuite([case])
    result = unittest.TestResult()
    support.environment_altered = False
    # As if an earlier test of the module had run: set_event_loop() was called at least once.
    # (3.12's test_create_subprocess_with_pidfd expects that and fails when run alone, under
    # regrtest too.)
    asyncio.set_event_loop(None)
    with patch:
        suite.run(result)
    problems = [
        f"{kind} in {test}:\n{tb}"
        for kind, pairs in (("ERROR", result.errors), ("FAILURE", result.failures))
        for test, tb in pairs
    ]
    problems += [f"UNEXPECTED SUCCESS: {test}" for test in result.unexpectedSuccesses]
    if support.environment_altered:
        problems.append(
            "test.support reports the environment altered (a dangling thread or a child "
            "process reaped by support.reap_children(); see the captured stderr)"
        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    if result.testsRun != 1:
        pytest.fail(f"unittest ran {result.testsRun} tests for {test_id}", pytrace=False)
    if result.skipped:
        pytest.skip(f"skipped by unittest: {result.skipped[0][1]}")


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    yield
