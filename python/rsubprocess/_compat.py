"""Every per-version behaviour switch of the Python layer, in one table.

rsubprocess matches the running CPython's asyncio except for the deliberate differences listed
in the README; the Rust side mirrors the few switches it needs in ``src/compat.rs``.
"""

from __future__ import annotations

import sys

PY = sys.version_info[:2]

#: 3.9 still accepts ``loop=`` (with a DeprecationWarning); 3.10+ reject it.
ACCEPTS_LOOP_KWARG = PY < (3, 10)
#: Popen gained ``pipesize`` in 3.10.
HAS_PIPESIZE = PY >= (3, 10)

LOOP_DEPRECATION = (
    "The loop argument is deprecated since Python 3.8 and scheduled for removal in Python 3.10."
)
#: What 3.10+ asyncio raises for ``loop=`` (it reaches BaseSubprocessTransport.__init__).
LOOP_TYPEERROR = (
    "BaseSubprocessTransport.__init__() got multiple values for argument 'loop'"
    if PY >= (3, 10)
    else "__init__() got multiple values for argument 'loop'"
)

#: 3.12+: ``communicate()`` closes stdin even without input, and ignores input without a stdin
#: pipe (older versions leave stdin open, and raise AttributeError for the input).
COMMUNICATE_CLOSES_STDIN = PY >= (3, 12)
