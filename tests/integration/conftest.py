"""Tables the integration suite prints at the end of a run, and the README carries: the fault suite
(each fault at each step) and the re-run rule (each way a task instance runs again). Each case adds
a row."""

from __future__ import annotations

from typing import Any

import pytest

FAULT_ROWS: list[dict[str, Any]] = []
COLUMNS = ("step", "fault", "outcome", "predictions created", "requests made")
RERUN_ROWS: list[dict[str, Any]] = []
RERUN_COLUMNS = ("operator", "run again by", "input since the earlier try", "predictions bought", "outcome")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    faults = sorted(FAULT_ROWS, key=lambda row: (row["order"], row["fault"]))
    _table(terminalreporter, "Eachlabs fault suite", COLUMNS, faults)
    reruns = sorted(RERUN_ROWS, key=lambda row: (row["order"], row["operator"]))
    _table(terminalreporter, "Eachlabs re-runs", RERUN_COLUMNS, reruns)


def _table(
    reporter: pytest.TerminalReporter, title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    widths = [max(len(col), *(len(str(row[col])) for row in rows)) for col in columns]
    reporter.section(title)
    reporter.write_line(" | ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    reporter.write_line("-|-".join("-" * w for w in widths))
    for row in rows:
        reporter.write_line(
            " | ".join(str(row[col]).ljust(w) for col, w in zip(columns, widths, strict=True))
        )
