"""``rsubprocess.run()``: ``subprocess.run`` as a coroutine, with the cleanup done right."""

from __future__ import annotations

import locale
import os
import subprocess
from typing import Any, Optional

from . import _extras
from .subprocess import PIPE, Process, create_subprocess_exec, create_subprocess_shell


def _text(data: Optional[bytes], encoding: str, errors: Optional[str]) -> Any:
    if data is None:
        return None
    # Popen's text mode: decode, then universal newlines.
    return data.decode(encoding, errors or "strict").replace("\r\n", "\n").replace("\r", "\n")


async def run(
    args: Any,
    *,
    stdin: Any = None,
    input: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    capture_output: bool = False,
    shell: bool = False,
    cwd: Any = None,
    timeout: Optional[float] = None,
    check: bool = False,
    encoding: Optional[str] = None,
    errors: Optional[str] = None,
    text: Optional[bool] = None,
    env: Any = None,
    universal_newlines: Optional[bool] = None,
    **popen_kwds: Any,
) -> subprocess.CompletedProcess[Any]:
    """Run a command and wait for it, like :func:`subprocess.run`, without blocking the loop.

    On ``timeout`` the child and its descendants are killed and reaped, then
    :class:`subprocess.TimeoutExpired` is raised with the output read so far. If the awaiting
    task is cancelled, the child and its descendants are killed and reaped before
    ``CancelledError`` propagates. ``check=True`` raises :class:`subprocess.CalledProcessError`
    for a non-zero exit. ``text``/``encoding``/``errors`` decode as ``subprocess.run`` does.
    """
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        stdin = PIPE
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        stdout = stderr = PIPE
    t = _extras.check_timeout(timeout)
    text_mode = bool(encoding or errors or text or universal_newlines)
    enc = encoding or locale.getpreferredencoding(False)
    if text_mode and input is not None:
        input = input.encode(enc, errors or "strict")
    kwds = dict(stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, **popen_kwds)
    if shell:
        proc: Process = await create_subprocess_shell(args, **kwds)
    else:
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if not argv:
            raise IndexError("list index out of range")
        proc = await create_subprocess_exec(*argv, **kwds)
    proc.args = args
    try:
        out, err = await proc.communicate(input, timeout=t)
    except subprocess.TimeoutExpired as exc:
        await proc._kill_and_reap()
        exc.timeout = timeout  # type: ignore[assignment]
        if text_mode:
            exc.stdout = _text(exc.stdout, enc, errors)
            exc.stderr = _text(exc.stderr, enc, errors)
        raise
    except BaseException:
        await proc._kill_and_reap()
        raise
    rc = proc.returncode
    assert rc is not None
    if text_mode:
        out, err = _text(out, enc, errors), _text(err, enc, errors)
    if check and rc:
        raise subprocess.CalledProcessError(rc, args, output=out, stderr=err)
    return subprocess.CompletedProcess(args, rc, out, err)
