"""Summary lines for the CPython suites: how many of the rsubprocess runs actually reach
rsubprocess (the others drive asyncio's own transports and are marked ``asyncio_machinery``)."""

from __future__ import annotations

OUTCOMES = ("passed", "failed", "skipped")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[tuple[str, bool], int] = {}
    for outcome in OUTCOMES:
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "tests/stdlib/" not in nodeid or "[rsubprocess-" not in nodeid:
                continue
            key = (outcome, "asyncio_machinery" in report.keywords)
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    terminalreporter.section("CPython suites run against rsubprocess")
    for machinery, label in ((False, "exercise rsubprocess"), (True, "asyncio's own machinery")):
        line = ", ".join(f"{counts.get((o, machinery), 0)} {o}" for o in OUTCOMES)
        terminalreporter.write_line(f"{label:>25}: {line}")
