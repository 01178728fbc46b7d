"""Argument checks for rsubprocess's additions to asyncio's API (timeouts, child setup)."""

from __future__ import annotations

import math
import resource
import signal
from typing import Any, Callable, Mapping, Optional

#: Every RLIMIT_* constant this platform's ``resource`` module knows.
_RLIMITS = {getattr(resource, n): n for n in dir(resource) if n.startswith("RLIMIT_")}
_RLIM_INFINITY = resource.RLIM_INFINITY
_U64_INFINITY = 2**64 - 1


def check_timeout(timeout: Any) -> Optional[float]:
    """None, or the timeout in seconds; negative means "already expired" (as subprocess)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError("timeout must not be NaN")
    return max(float(timeout), 0.0)


def check_pdeathsig(sig: Any) -> int:
    """The signal number for ``pdeathsig=`` (0 when None)."""
    if sig is None:
        return 0
    if isinstance(sig, bool):
        raise TypeError("pdeathsig must be a signal number or None, not bool")
    num = int(sig.__index__())
    if num == 0 or num not in signal.valid_signals():
        raise ValueError(f"pdeathsig must be a valid signal number, not {sig!r}")
    return num


def check_rlimits(rlimits: Any) -> list[tuple[int, int, int]]:
    """``rlimits={resource.RLIMIT_X: (soft, hard)}`` as (resource, soft, hard) for the child."""
    if rlimits is None:
        return []
    if not isinstance(rlimits, Mapping):
        raise TypeError(f"rlimits must be a mapping, not {type(rlimits).__name__}")
    out = []
    for key, value in rlimits.items():
        if isinstance(key, bool) or not isinstance(key, int) or key not in _RLIMITS:
            raise ValueError(f"unknown resource limit {key!r} (use resource.RLIMIT_* constants)")
        try:
            soft, hard = value
        except (TypeError, ValueError):
            raise TypeError(
                f"rlimits[{_RLIMITS[key]}] must be a (soft, hard) pair, not {value!r}"
            ) from None
        pair = []
        for v in (soft, hard):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"rlimits[{_RLIMITS[key]}] values must be integers, not {v!r}")
            if v == _RLIM_INFINITY:
                v = _U64_INFINITY
            elif v < 0:
                raise ValueError(f"rlimits[{_RLIMITS[key]}] values must be >= 0, not {v}")
            pair.append(v)
        if pair[1] != _U64_INFINITY and (pair[0] == _U64_INFINITY or pair[0] > pair[1]):
            raise ValueError(f"rlimits[{_RLIMITS[key]}]: soft limit exceeds hard limit")
        out.append((key, pair[0], pair[1]))
    return out


def setup_preexec(
    pdeathsig: int, rlimits: list[tuple[int, int, int]], user_preexec: Optional[Callable[[], Any]]
) -> Optional[Callable[[], Any]]:
    """On the Popen path: the child setup as a ``preexec_fn`` (the native path does it in Rust)."""
    if not pdeathsig and not rlimits:
        return user_preexec
    import ctypes
    import os

    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        for res, soft, hard in rlimits:
            inf = _RLIM_INFINITY
            resource.setrlimit(
                res,
                (inf if soft == _U64_INFINITY else soft, inf if hard == _U64_INFINITY else hard),
            )
        if pdeathsig:
            libc.prctl(1, pdeathsig, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:
                os._exit(128 + pdeathsig)
        if user_preexec is not None:
            user_preexec()

    return preexec
