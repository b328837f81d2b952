"""A batch task's results for its Eachlabs tab: the results manifest the task writes as it goes.

The manifest is the batch's own record (one JSON line per finished item), at the batch's rendered
``results_path`` (by default in its ``output_path``), so the tab can follow a batch while it runs.
A manifest may hold a hundred thousand lines and a page of thumbnails asks for one row each, so the
api-server reads it in one streaming pass, one read at a time, at most once per ``FRESH_SECONDS``,
and keeps only what the page shows: the counts, the newest stored rows, the first failures, the
predict times, and an index of 8 bytes a row (36 bits of a hash of the key above the 28 bits of the
row's offset, sorted) to find any item's row again with a seek or two. Memory grows with the row
count, never with the rows' text, and a manifest over ``MANIFEST_MAX_BYTES`` is not read at all.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_eachlabs.api import non_negative_number
from airflow_provider_eachlabs.plugin.files import open_inside

FRESH_SECONDS = 10.0
OFFSET_BITS = 28
MANIFEST_MAX_BYTES = 1 << OFFSET_BITS  # 256 MiB: every offset fits below the key's hash in the index
LINE_MAX_BYTES = 64 * 1024  # a longer line is no row the batch wrote, and is skipped
NEWEST_KEPT = 48
PENDING_KEPT = 200  # staged outputs a review shows (with ``review=True``); the rest are in the manifest
FAILURES_KEPT = 50
_KEPT_MANIFESTS = 8


class TooLarge(ValueError):
    """The manifest is larger than the page reads; the message gives both sizes."""


@dataclass
class BatchResults:
    """What the tab shows of one results manifest, and where each item's row is in it."""

    done: int = 0
    stored: int = 0
    failed: int = 0
    invalid: int = 0
    spend: float = 0.0
    newest: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    # With ``review=True``: outputs in the staging folder, waiting for a review (not in output_path).
    staged: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    _times: array[float] = field(default_factory=lambda: array("d"))
    _index: array[int] = field(default_factory=lambda: array("q"))

    def predict_time(self, q: int) -> float | None:
        times = sorted(self._times)
        if len(times) < 2:
            return times[0] if times else None
        return float(statistics.quantiles(times, n=100, method="inclusive")[q - 1])

    def offsets_of(self, key: str) -> list[int]:
        """Where rows whose key shares ``key``'s hash start, newest first: the first whose key is
        ``key`` is its newest row (a key re-done by a retry has several)."""
        wanted = _hash(key)
        at = bisect_right(self._index, (wanted << OFFSET_BITS) | _OFFSET_MASK)
        found = []
        while at > 0 and self._index[at - 1] >> OFFSET_BITS == wanted:
            at -= 1
            found.append(self._index[at] & _OFFSET_MASK)
        return found


def batch_results(path: str, output_path: str) -> BatchResults:
    """The manifest at ``path``, inside ``output_path`` (empty while the batch has finished nothing),
    fresh to ``FRESH_SECONDS``; concurrent misses wait for the one read in flight."""
    with _reading:
        kept = _kept.get(path)
        if kept is not None and time.monotonic() - kept[0] < FRESH_SECONDS:
            return kept[1]
        try:
            with open_inside(path, output_path) as handle:
                results = _scan(handle, path)
        except FileNotFoundError:
            results = BatchResults()
        _kept[path] = (time.monotonic(), results)
        while len(_kept) > _KEPT_MANIFESTS:
            _kept.pop(next(iter(_kept)))
        return results


def batch_row(path: str, output_path: str, key: str) -> dict[str, Any] | None:
    """The newest row of one item, read at its offset; None when the batch has no such item."""
    offsets = batch_results(path, output_path).offsets_of(key)
    if not offsets:
        return None
    with open_inside(path, output_path) as handle:
        for offset in offsets:
            handle.seek(offset)
            row = _row(handle.readline(LINE_MAX_BYTES + 1))
            if row is not None and str(row.get("key")) == key:
                return row
    return None


def _scan(handle: IO[bytes], path: str) -> BatchResults:
    size = _size(handle)
    if size > MANIFEST_MAX_BYTES:
        raise TooLarge(
            f"the results manifest {path} is {size / 2**20:.0f} MiB, more than the "
            f"{MANIFEST_MAX_BYTES / 2**20:.0f} MiB this page reads; every item's result is in the file itself"
        )
    results = BatchResults()
    newest: deque[dict[str, Any]] = deque(maxlen=NEWEST_KEPT)
    index = array("q")
    offset = 0
    while line := handle.readline(LINE_MAX_BYTES + 1):
        start, offset = offset, offset + len(line)
        if len(line) > LINE_MAX_BYTES and not line.endswith(b"\n"):
            while (rest := handle.readline(LINE_MAX_BYTES)) and not rest.endswith(b"\n"):
                offset += len(rest)
            offset += len(rest)
            continue
        row = _row(line)
        if row is None:
            continue
        _count(results, row)
        index.append((_hash(str(row["key"])) << OFFSET_BITS) | start)
        if row.get("status") == "success" and row.get("stored_path"):
            if row.get("review") == "pending":
                if len(results.pending) < PENDING_KEPT:
                    results.pending.append(row)
            else:
                newest.append(row)
    results._index = array("q", sorted(index))
    results.newest = list(reversed(newest))
    return results


def _count(results: BatchResults, row: dict[str, Any]) -> None:
    status = row.get("status")
    results.done += 1
    if status == "success" and row.get("stored_path"):
        if row.get("review") == "pending":
            results.staged += 1
        else:
            results.stored += 1
    if status == "invalid":
        results.invalid += 1
    elif status == "rejected":  # a reviewer rejected it: paid for, deliberately not stored
        pass
    elif status != "success":
        results.failed += 1
        if len(results.failures) < FAILURES_KEPT:
            results.failures.append(row)
    cost = non_negative_number(row.get("cost"))
    if cost is not None:
        results.spend = round(results.spend + cost, 4)
    predict_time = non_negative_number(row.get("predict_time"))
    if predict_time is not None:
        results._times.append(predict_time)


def _size(handle: IO[bytes]) -> int:
    try:
        size = handle.seek(0, 2)
    finally:
        handle.seek(0)
    return int(size)


def _row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return dict(row) if isinstance(row, Mapping) and isinstance(row.get("key"), (str, int)) else None


def _hash(key: str) -> int:
    """36 bits of the key's hash, signed, so that it fills a signed 64-bit entry with an offset."""
    return (
        int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
        >> _HASH_DROP
    )


_HASH_DROP = OFFSET_BITS
_OFFSET_MASK = (1 << OFFSET_BITS) - 1


_reading = threading.Lock()  # one manifest read in flight: concurrent misses wait for it
_kept: dict[str, tuple[float, BatchResults]] = {}
