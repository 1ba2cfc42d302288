"""The fault suite's summary table is shown at the end of every run, captured output or not."""

from __future__ import annotations

import pytest

SUMMARIES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARIES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for summary in terminalreporter.config.stash.get(SUMMARIES, []):
        terminalreporter.write_sep("=", "fault injection summary")
        terminalreporter.write_line(summary)
