"""The try-count table: each case of test_try_counts.py adds a row, and the run ends by printing it."""

from __future__ import annotations

from typing import Any

import pytest

TRY_ROWS: list[dict[str, Any]] = []
COLUMNS = ("error", "cause", "kind", "tries", "predictions")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TRY_ROWS:
        return
    widths = [max(len(col), *(len(str(row[col])) for row in TRY_ROWS)) for col in COLUMNS]
    terminalreporter.section("Eachlabs try counts (retries=2)")
    terminalreporter.write_line(" | ".join(col.ljust(w) for col, w in zip(COLUMNS, widths, strict=True)))
    terminalreporter.write_line("-|-".join("-" * w for w in widths))
    for row in TRY_ROWS:
        terminalreporter.write_line(
            " | ".join(str(row[col]).ljust(w) for col, w in zip(COLUMNS, widths, strict=True))
        )
