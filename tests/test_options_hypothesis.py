"""Random combinations of the keyword arguments asyncio checks itself (DESIGN 1b: ``cmd`` type,
``universal_newlines``, ``shell``, ``bufsize``, ``text``, ``encoding``, ``errors``; plus
``loop=``): rsubprocess must raise exactly asyncio's exception (type and message), or succeed
where asyncio succeeds. asyncio's answer comes from CPython's own loop (under uvloop,
``asyncio.create_subprocess_*`` would be uvloop's, which has checks of its own).
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    ASYNCIO,
    PY,
    asyncio_reference,
    load_rsubprocess,
    spawn_outcome,
    swallow_unraisable,
)

TRUE = shutil.which("true")

UNSET = object()

values = {
    "text": st.sampled_from([UNSET, None, False, True, 0, 1, ""]),
    "universal_newlines": st.sampled_from([UNSET, None, False, True, 0, 1]),
    "shell": st.sampled_from([UNSET, None, False, True, 0, 1]),
    "bufsize": st.sampled_from([UNSET, 0, 1, -1, 8192]),
    "encoding": st.sampled_from([UNSET, None, "utf-8", ""]),
    "errors": st.sampled_from([UNSET, None, "strict", ""]),
    "loop": st.sampled_from([UNSET, "running"]),
}

exec_programs = st.sampled_from(
    [TRUE, TRUE.encode(), pathlib.Path(TRUE), 1, None, [TRUE], (TRUE,), 1.5]
)
shell_cmds = st.sampled_from(
    ["true", b"true", bytearray(b"true"), pathlib.Path("true"), ["true"], 1, None, 1.5]
)


@st.composite
def calls(draw: Any) -> tuple[str, Any, dict[str, Any]]:
    which = draw(st.sampled_from(["exec", "shell"]))
    cmd = draw(exec_programs if which == "exec" else shell_cmds)
    kwargs = {}
    for name, strategy in values.items():
        value = draw(strategy)
        if value is not UNSET:
            kwargs[name] = value
    return which, cmd, kwargs


async def attempt(ns: Any, which: str, cmd: Any, kwargs: dict[str, Any]) -> tuple[Any, ...]:
    kwargs = dict(kwargs)
    if kwargs.get("loop") == "running":
        kwargs["loop"] = asyncio.get_running_loop()
    create = ns.create_subprocess_exec if which == "exec" else ns.create_subprocess_shell
    if ns is not ASYNCIO:
        return await spawn_outcome(create, cmd, **kwargs)
    with swallow_unraisable():  # asyncio's loop= noise on 3.10+ (DESIGN 1b), asyncio only
        return await spawn_outcome(create, cmd, **kwargs)


@pytest.mark.filterwarnings("ignore:The loop argument is deprecated:DeprecationWarning")
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(call=calls())
def test_argument_checks_match_asyncio(run, call):
    which, cmd, kwargs = call
    expected = asyncio_reference(lambda ns: attempt(ns, which, cmd, kwargs))
    rs = load_rsubprocess()
    actual = run(attempt(rs, which, cmd, kwargs))
    if "loop" in kwargs and PY >= (3, 10) and expected[1] is TypeError and "loop" in expected[2]:
        # DESIGN 1b: same TypeError, message free (asyncio's names its internal class).
        assert actual[:2] == ("raise", TypeError)
        assert "loop" in actual[2]
        return
    assert actual == expected
