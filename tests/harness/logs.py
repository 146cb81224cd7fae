"""Attach the logs of the processes a test used to its report when it fails."""

from __future__ import annotations

import pytest

from llmproxy.devstack.process import ManagedProcess

PROCESSES_KEY = pytest.StashKey[list[ManagedProcess]]()


def watch(item: pytest.Item, *processes: ManagedProcess) -> None:
    """Remember processes whose logs belong to item's report if it fails."""
    item.stash.setdefault(PROCESSES_KEY, []).extend(processes)


def attach(item: pytest.Item, report: pytest.TestReport) -> None:
    """Add each watched process's log tail as a section of a failed report."""
    if report.failed:
        for process in item.stash.get(PROCESSES_KEY, []):
            report.sections.append((f"log of {process.name}", process.log_tail(80)))
