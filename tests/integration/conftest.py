"""The fault suite's summary: each case adds a row, and the run ends by printing the table."""

from __future__ import annotations

from typing import Any

import pytest

FAULT_ROWS: list[dict[str, Any]] = []
COLUMNS = ("step", "fault", "outcome", "predictions created", "requests made")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FAULT_ROWS:
        return
    rows = sorted(FAULT_ROWS, key=lambda row: (row["order"], row["fault"]))
    widths = [max(len(col), *(len(str(row[col])) for row in rows)) for col in COLUMNS]
    terminalreporter.section("Eachlabs fault suite")
    terminalreporter.write_line(" | ".join(col.ljust(w) for col, w in zip(COLUMNS, widths, strict=True)))
    terminalreporter.write_line("-|-".join("-" * w for w in widths))
    for row in rows:
        terminalreporter.write_line(
            " | ".join(str(row[col]).ljust(w) for col, w in zip(COLUMNS, widths, strict=True))
        )
