"""The one list of CPython tests that are not run against rsubprocess, each with its reason.

DESIGN.md 1c: CPython's own tests are the spec, except tests that can only pass on asyncio's own
machinery. Keys are ``"<module>:<TestClass>.<test_method>"`` patterns (``fnmatch``), matched
against the tests of the running interpreter's ``test.test_asyncio``; a pattern that matches
nothing on some version is fine (tests come and go between 3.9 and 3.13).

Not excluded on purpose:
  * ``test_popen_error*``: they ``mock.patch('subprocess.Popen')``; rsubprocess looks
    ``subprocess.Popen`` up at call time, so the mock is what it calls.
  * Tests that drive ``self.loop.subprocess_exec`` or ``BaseSubprocessTransport`` directly: they
    pass whatever rsubprocess does (they never reach it). They run, marked
    ``asyncio_machinery``, and the summary counts them apart.
"""

from __future__ import annotations

import fnmatch

MOCKS_CONNECT_READ_PIPE = (
    "mocks loop.connect_read_pipe to spy on asyncio's pipe transport pause_reading/"
    "resume_reading; rsubprocess reads its pipes without connect_read_pipe"
)
FAST_WATCHER = (
    "reruns the suite under FastChildWatcher, whose SIGCHLD handler reaps every child with "
    "waitpid(-1): it steals rsubprocess's exit statuses (rsubprocess then reports 255, like "
    "asyncio's other watchers do when robbed)"
)
INACTIVE_WATCHER = (
    "expects asyncio's 'asyncio.get_child_watcher() is not activated' RuntimeError; rsubprocess "
    "has no child watcher, so there is no inactive state to report"
)
PRIVATE_ASSIGNMENT = (
    "assigns a private attribute of StreamReader (DESIGN 1c allows reading _buffer only)"
)

EXCLUDED: dict[str, str] = {
    "test_subprocess:*.test_pause_reading": MOCKS_CONNECT_READ_PIPE,
    "test_subprocess:SubprocessFastWatcherTests.*": FAST_WATCHER,
    "test_subprocess:GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher": (
        INACTIVE_WATCHER
    ),
    "test_streams:StreamTests.test___repr__waiter": PRIVATE_ASSIGNMENT + " (_waiter)",
    "test_streams:StreamTests.test___repr__transport": PRIVATE_ASSIGNMENT + " (_transport)",
}


def exclusion_reason(module: str, test: str) -> str | None:
    """Reason ``"<module>:<Class>.<method>"`` is excluded, or None."""
    key = f"{module}:{test}"
    for pattern, reason in EXCLUDED.items():
        if fnmatch.fnmatchcase(key, pattern):
            return reason
    return None
