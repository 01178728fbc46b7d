"""The native spawn path's argument handling: ``subprocess.Popen``'s, step for step.

``Popen.__init__`` and ``_execute_child`` are followed line by line for the keywords this path
takes, so a bad argument raises what Popen raises, from the same step. The checks CPython makes
in C -- ``_posixsubprocess.fork_exec``'s and ``os.posix_spawn``'s argument conversions, whose
order and messages change between versions -- are made by those very functions, called with
one extra argument that is always converted last and always fails (``_ArgumentsChecked``), so
they return without forking. The child is then started by ``_core.spawn``.
"""

from __future__ import annotations

import _posixsubprocess
import errno
import os
import signal
import subprocess
import sys
import warnings
from typing import Any, Optional

from . import _core

__all__ = ("native_eligible", "start_native")

PY = sys.version_info[:2]
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

#: Keywords the native spawn path honours exactly; anything else goes through Popen.
NATIVE_KWARGS = frozenset(
    {
        "executable",
        "cwd",
        "env",
        "close_fds",
        "pass_fds",
        "restore_signals",
        "start_new_session",
        "umask",
        *(("process_group",) if PY >= (3, 11) else ()),
    }
)
#: A patched ``subprocess.Popen`` (a test's mock, a sandbox's wrapper) is honoured: spawn
#: through it rather than natively.
STDLIB_POPEN = subprocess.Popen
_broken = False


def native_eligible(kwds: dict[str, Any]) -> bool:
    return (
        not _broken
        and _core.native_spawn_available()
        and NATIVE_KWARGS.issuperset(kwds)
        and subprocess.Popen is STDLIB_POPEN
        and os.environ.get("RSUBPROCESS_SPAWN") != "popen"
    )


def _child_fd(spec: Any, devnull: list[int]) -> Optional[int]:
    """Popen's ``_get_handles`` for one stream, or None if only Popen can take it."""
    if spec is None:
        return -1
    if spec == DEVNULL:
        if not devnull:
            devnull.append(os.open(os.devnull, os.O_RDWR))
        return devnull[0]
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    return None


# --- CPython's own checks --------------------------------------------------------------------


class _ArgumentsChecked(Exception):
    """Raised once CPython has checked every argument (never escapes this module)."""


class _CheckedUid:
    """``uid=`` for fork_exec: converted last, right before it would fork, and never an int."""


class _CheckedSigmask:
    """``setsigmask=`` for posix_spawn: converted after every other argument."""

    def __iter__(self) -> Any:
        raise _ArgumentsChecked


#: fork_exec's message for our ``uid``: everything before it was accepted.
_UID_ACCEPTED = f"uid should be integer, not {_CheckedUid.__name__}"
#: Its signature depends on the version (typeshed knows one).
_fork_exec: Any = _posixsubprocess.fork_exec
#: errpipe_write for the check: any fd number >= 3 passes (nothing is done with it).
_ERRPIPE = 3


def _fork_exec_check(
    args: list[Any],
    executable_list: tuple[bytes, ...],
    close_fds: Any,
    fds_to_keep: set[Any],
    cwd: Any,
    env_list: Optional[list[bytes]],
    fds: tuple[int, int, int],
    restore_signals: Any,
    start_new_session: Any,
    process_group: Any,
    umask: Any,
    errpipe: int = _ERRPIPE,
) -> None:
    """``_posixsubprocess.fork_exec``'s argument checks, exactly as ``_execute_child`` calls
    it (the same arguments in the same order, evaluated in the same order)."""
    p2cread, c2pwrite, errwrite = fds
    # Its last arguments: (process_group,) gid, extra_groups, uid, umask, preexec_fn,
    # (allow_vfork); 3.11 added the two in brackets.
    if PY >= (3, 11):
        tail: tuple[Any, ...] = (process_group, None, None, _CheckedUid(), umask, None, True)
    else:
        tail = (None, None, _CheckedUid(), umask, None)
    try:
        pid = _fork_exec(
            args, executable_list,
            close_fds, tuple(sorted(map(int, fds_to_keep))),
            cwd, env_list,
            p2cread, -1, -1, c2pwrite, -1, errwrite,
            -1, errpipe,
            restore_signals, start_new_session,
            *tail,
        )  # fmt: skip
    except TypeError as exc:
        if str(exc) == _UID_ACCEPTED:
            return
        raise
    _reap(pid)


def _posix_spawn_check(executable: Any, args: list[Any], env: Any, kwargs: dict[str, Any]) -> None:
    """``os.posix_spawn``'s argument checks, exactly as ``_posix_spawn`` calls it."""
    try:
        pid = os.posix_spawn(executable, args, env, setsigmask=_CheckedSigmask(), **kwargs)
    except _ArgumentsChecked:
        return
    _reap(pid)


def _reap(pid: int) -> None:
    # Only on an interpreter whose checks do not stop where they should (see _checks_safe).
    os.waitpid(pid, 0)
    raise RuntimeError("rsubprocess: CPython's argument check spawned a child")


def _checks_are_safe() -> bool:
    """Whether both checks stop before spawning on this interpreter: tried once, with a
    program that does not exist and a real error pipe should fork_exec fork after all."""
    global _checks_safe
    if _checks_safe is None:
        _checks_safe = False
        r, w = os.pipe()
        try:
            _fork_exec_check(
                [b"x"], (b"/nonexistent/rsubprocess-probe",), True, {w}, None, None,
                (-1, -1, -1), True, False, -1, -1, errpipe=w,
            )  # fmt: skip
            _posix_spawn_check("/nonexistent/rsubprocess-probe", ["x"], os.environ, {})
            _checks_safe = True
        except Exception:  # a changed signature or order: Popen does the checks instead
            pass
        finally:
            os.close(r)
            os.close(w)
    return _checks_safe


_checks_safe: Optional[bool] = None


# --- the spawn ---------------------------------------------------------------------------------


def _setup_filename(posix_spawn: bool, orig_executable: Any, cwd: Any) -> Optional[tuple[Any]]:
    """The filename CPython's OSError names for a failure before exec: its posix_spawn path
    names the executable; its fork path names cwd before 3.13 and nothing since."""
    if posix_spawn:
        return (orig_executable,)
    if PY >= (3, 13):
        return None
    return (cwd,)


def _c_int(value: int) -> int:
    """C's (int) cast, as CPython applies it to a converted pid_t argument."""
    return ((int(value) + 2**31) % 2**32) - 2**31


def start_native(
    args: Any,
    shell: bool,
    fds: tuple[Any, Any, Any],
    kwds: dict[str, Any],
    pdeathsig: int = 0,
    rlimits: Optional[list[tuple[int, int, int]]] = None,
) -> Any:
    """Start the child without Popen; None if only Popen can take these arguments."""
    if not kwds and _checks_safe:
        plain = _plain(args, shell, fds)
        if plain is not None:
            return _spawn((*plain, pdeathsig, rlimits or []))
    # Popen.__init__'s defaults for the keywords this path takes.
    executable = kwds.get("executable")
    cwd = kwds.get("cwd")
    env = kwds.get("env")
    close_fds = kwds.get("close_fds", True)
    pass_fds = kwds.get("pass_fds", ())
    restore_signals = kwds.get("restore_signals", True)
    start_new_session = kwds.get("start_new_session", False)
    umask = kwds.get("umask", -1)
    process_group = kwds.get("process_group")
    devnull: list[int] = []
    try:
        # Popen.__init__
        if PY >= (3, 13) and fds[1] is STDOUT:
            raise ValueError("STDOUT can only be used for stderr")
        if pass_fds and not close_fds:
            warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=4)
            close_fds = True
        if process_group is None:
            process_group = -1
        # Popen._get_handles
        p2cread = _child_fd(fds[0], devnull)
        c2pwrite = _child_fd(fds[1], devnull)
        if fds[2] == STDOUT:
            stdout_fd = c2pwrite if c2pwrite != -1 else sys.__stdout__.fileno()  # type: ignore[union-attr]
            errwrite: Optional[int] = stdout_fd
        else:
            errwrite = _child_fd(fds[2], devnull)
        if p2cread is None or c2pwrite is None or errwrite is None:
            return None
        if not _checks_are_safe():
            return None
        child_fds = (p2cread, c2pwrite, errwrite)
        # Popen._execute_child
        if isinstance(args, (str, bytes)):
            args = [args]
        elif isinstance(args, os.PathLike):
            if shell:
                raise TypeError("path-like args is not allowed when shell is true")
            args = [args]
        else:
            args = list(args)
        if shell:
            args = ["/bin/sh", "-c", *args]
            if executable:
                args[0] = executable
        if executable is None:
            executable = args[0]
        sys.audit("subprocess.Popen", executable, args, cwd, env)
        posix_spawn = _uses_posix_spawn(
            executable, close_fds, pass_fds, cwd, child_fds, start_new_session, process_group,
            umask,
        )  # fmt: skip
        orig_executable = executable
        if posix_spawn:
            envp, exec_list = _posix_spawn_args(
                executable, args, env, restore_signals, close_fds, child_fds
            )
            keep: list[int] = []
        else:
            envp, exec_list = _fork_exec_args(
                executable, args, env, close_fds, pass_fds, cwd, child_fds,
                restore_signals, start_new_session, process_group, umask,
            )  # fmt: skip
            keep = sorted({int(fd) for fd in pass_fds})
        spawn_args = (
            [os.fsencode(a) for a in args],
            exec_list,
            envp,
            None if cwd is None else os.fsencode(cwd),
            child_fds,
            bool(close_fds),
            keep,
            bool(restore_signals),
            bool(start_new_session),
            _c_int(process_group),
            int(umask),
            orig_executable,
            cwd,
            _setup_filename(posix_spawn, orig_executable, cwd),
            pdeathsig,
            rlimits or [],
        )
        return _spawn(spawn_args)
    finally:
        for fd in devnull:
            os.close(fd)


def _spawn(spawn_args: tuple[Any, ...]) -> Any:
    """``_core.spawn(*spawn_args)``; None (and Popen from now on) where clone(CLONE_PIDFD)
    is refused."""
    global _broken
    try:
        return _core.spawn(*spawn_args)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            # clone(CLONE_PIDFD) unsupported here (kernel < 5.2, seccomp): use Popen.
            _broken = True
            return None
        raise


def _plain(args: Any, shell: bool, fds: tuple[Any, Any, Any]) -> Optional[tuple[Any, ...]]:
    """``_core.spawn``'s arguments for the common call, or None for anything else.

    The common call: no keyword at all, every argument an exact ``str`` or ``bytes`` that
    encodes without error and holds no NUL, stdin/stdout/stderr each a pipe end or inherited.
    Then no step of Popen's can fail before the exec: the checks CPython makes in C accept
    every such value but one (below), so they are not run again. The bad-input corpus takes
    this path whenever it draws no keyword and a pipe or an int for stdin, and
    tests/test_process.py makes plain calls, failing ones included; both run on asyncio too.
    What is left of ``start_native`` is the audit event, the encoding and the PATH search, in
    Popen's order. Anything else returns None before any side effect, and ``start_native``
    takes it step for step, raising what Popen raises.
    """
    if shell:
        if type(args) is not str and type(args) is not bytes:
            return None
        args = ["/bin/sh", "-c", args]
    elif type(args) is tuple:
        args = list(args)
    else:
        return None
    child_fds: list[int] = []
    for fd in fds:
        if fd is None:
            child_fds.append(-1)
        elif type(fd) is int and fd >= 0:
            child_fds.append(fd)
        else:
            return None  # DEVNULL, STDOUT, a bool, a file object: Popen._get_handles' cases
    try:
        argv = [a if type(a) is bytes else os.fsencode(a) for a in args if type(a) in _PLAIN]
    except UnicodeError:
        return None
    if len(argv) != len(args) or not argv or any(b"\0" in a for a in argv):
        return None
    executable = args[0]
    fds3 = (child_fds[0], child_fds[1], child_fds[2])
    # Popen's defaults: close_fds=True, no pass_fds, cwd, session, process group or umask.
    posix_spawn = _uses_posix_spawn(executable, True, (), None, fds3, False, -1, -1)
    # posix_spawn's one check plain values can fail: glibc's file actions refuse an fd at or
    # above the open-files limit (EBADF, raised in the parent without a filename).
    if posix_spawn and max(child_fds) >= os.sysconf("SC_OPEN_MAX"):
        return None
    sys.audit("subprocess.Popen", executable, args, None, None)
    return (
        argv,
        list(_exec_list(argv[0], None)),
        None,
        None,
        fds3,
        True,
        [],
        True,
        False,
        -1,
        -1,
        executable,
        None,
        _setup_filename(posix_spawn, executable, None),
    )


_PLAIN = (str, bytes)


def _uses_posix_spawn(
    executable: Any,
    close_fds: Any,
    pass_fds: Any,
    cwd: Any,
    fds: tuple[int, int, int],
    start_new_session: Any,
    process_group: int,
    umask: Any,
) -> bool:
    """Popen._execute_child's choice of posix_spawn over fork_exec, for the keywords this
    path takes (it decides which filename a failure before exec carries)."""
    p2cread, c2pwrite, errwrite = fds
    return bool(
        subprocess._USE_POSIX_SPAWN
        and os.path.dirname(executable)
        and (not close_fds or (PY >= (3, 13) and _have_closefrom()))
        and not pass_fds
        and cwd is None
        and (p2cread == -1 or p2cread > 2)
        and (c2pwrite == -1 or c2pwrite > 2)
        and (errwrite == -1 or errwrite > 2)
        and not start_new_session
        and (PY < (3, 11) or process_group == -1)
        and umask < 0
    )


def _exec_list(executable: bytes, env: Any) -> tuple[bytes, ...]:
    """The paths fork_exec tries: the program itself if it names a directory, else each
    directory of PATH (``env``'s, or ours when None) in turn."""
    if os.path.dirname(executable):
        return (executable,)
    return tuple(os.path.join(os.fsencode(d), executable) for d in os.get_exec_path(env))


def _have_closefrom() -> bool:
    return bool(getattr(subprocess, "_HAVE_POSIX_SPAWN_CLOSEFROM", False))


def _posix_spawn_args(
    executable: Any,
    args: list[Any],
    env: Any,
    restore_signals: Any,
    close_fds: Any,
    fds: tuple[int, int, int],
) -> tuple[Optional[list[bytes]], list[bytes]]:
    """Popen._posix_spawn up to its os.posix_spawn call; returns (envp, exec_list)."""
    if env is None and PY < (3, 13):
        env = os.environ
    kwargs: dict[str, Any] = {}
    if restore_signals:
        kwargs["setsigdef"] = [
            s for s in (getattr(signal, n, None) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")) if s
        ]
    file_actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds) if fd != -1
    ]
    if PY >= (3, 13) and close_fds:
        file_actions.append((os.POSIX_SPAWN_CLOSEFROM, 3))  # type: ignore[attr-defined]
    if file_actions:
        kwargs["file_actions"] = file_actions
    # os.environ always passes posix_spawn's checks (putenv rejects what they would): check
    # an empty mapping instead of converting it twice.
    _posix_spawn_check(executable, args, {} if env is os.environ else env, kwargs)
    envp = None
    if env is not None and env is not os.environ:
        # posix_spawn's own conversion of the mapping (which it has just accepted).
        envp = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in zip(env.keys(), env.values())]
    return envp, [os.fsencode(executable)]


def _fork_exec_args(
    executable: Any,
    args: list[Any],
    env: Any,
    close_fds: Any,
    pass_fds: Any,
    cwd: Any,
    fds: tuple[int, int, int],
    restore_signals: Any,
    start_new_session: Any,
    process_group: Any,
    umask: Any,
) -> tuple[Optional[list[bytes]], list[bytes]]:
    """Popen._execute_child's fork path up to its fork_exec call; returns (envp, exec_list)."""
    if env is not None:
        env_list: Optional[list[bytes]] = []
        for k, v in env.items():
            k = os.fsencode(k)
            if b"=" in k:
                raise ValueError("illegal environment variable name")
            env_list.append(k + b"=" + os.fsencode(v))  # type: ignore[union-attr]
    else:
        env_list = None
    executable_list = _exec_list(os.fsencode(executable), env)
    fds_to_keep = set(pass_fds)
    fds_to_keep.add(_ERRPIPE)
    _fork_exec_check(
        args, executable_list, close_fds, fds_to_keep, cwd, env_list, fds,
        restore_signals, start_new_session, process_group, umask,
    )  # fmt: skip
    return env_list, list(executable_list)
