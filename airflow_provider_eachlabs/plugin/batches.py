"""A batch task's results for its Eachlabs tab: the results manifest the task writes as it goes.

The manifest is the batch's own record (one JSON line per finished item), at the path the task put
in its ``eachlabs_batch`` XCom before its first create, so the tab can follow a batch while it runs.
A manifest may hold a hundred thousand lines, and a page of thumbnails asks for one row each, so
each manifest is read at most once per ``FRESH_SECONDS`` and kept, by path, for the next requests.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_eachlabs.plugin.images import read_limited

FRESH_SECONDS = 10.0
MANIFEST_MAX_BYTES = 256 * 1024 * 1024
_KEPT_MANIFESTS = 8


@dataclass(frozen=True)
class BatchResults:
    """The rows of one results manifest, in the order the items finished, and their figures."""

    rows: list[dict[str, Any]]
    by_key: dict[str, dict[str, Any]]

    @property
    def stored(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") == "success" and row.get("stored_path")]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") not in ("success", "invalid")]

    @property
    def invalid(self) -> int:
        return sum(1 for row in self.rows if row.get("status") == "invalid")

    @property
    def spend(self) -> float:
        return round(sum(_number(row.get("cost")) or 0.0 for row in self.rows), 4)

    def predict_time(self, q: int) -> float | None:
        times = sorted(t for t in (_number(row.get("predict_time")) for row in self.rows) if t is not None)
        if len(times) < 2:
            return times[0] if times else None
        return float(statistics.quantiles(times, n=100, method="inclusive")[q - 1])


def batch_results(path: str) -> BatchResults:
    """The manifest at ``path`` (empty while the batch has finished nothing), fresh to ten seconds."""
    with _lock:
        kept = _kept.get(path)
        if kept is not None and time.monotonic() - kept[0] < FRESH_SECONDS:
            return kept[1]
    try:
        content = read_limited(path, MANIFEST_MAX_BYTES)
    except FileNotFoundError:
        content = b""
    rows = [row for row in map(_row, content.decode("utf-8", "replace").splitlines()) if row is not None]
    results = BatchResults(rows, {str(row.get("key")): row for row in rows})
    with _lock:
        _kept[path] = (time.monotonic(), results)
        while len(_kept) > _KEPT_MANIFESTS:
            _kept.pop(next(iter(_kept)))
    return results


def _row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return dict(row) if isinstance(row, Mapping) and "key" in row else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


_lock = threading.Lock()
_kept: dict[str, tuple[float, BatchResults]] = {}
