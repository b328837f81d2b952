"""The fills page's figures: the spend ledger (``ledger``) folded into per-DAG, per-day buckets.

Why a fold kept in the api-server and not a query per page: adding up a million ledger rows takes
the database seconds (SQLite groups them by DAG and day in 2.3 s before reading any JSON), while the
page must answer within one. Ledger rows are written once and never changed, so each row is read
once: the first page after a start reads them all, every later page only the rows added since (by
primary key, which grows with every write; the ids of the last few seconds are read again, so a
row that committed late is not missed, and each is folded once). Memory is one bucket per DAG, day
and connection, whatever the number of predictions. A row deleted under the fold (its DAG run
deleted) is noticed by a count at most once a minute, and the fold is rebuilt.

Runs in the api-server only, on Airflow 3.3 and newer (task_state_store).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_eachlabs.ledger import (
    BATCH,
    BOUGHT,
    CANCELLED,
    ENDED,
    FAILED,
    PREFIX,
    SUCCEEDED,
    bin_seconds,
    time_bin,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

STATUSES = (SUCCEEDED, FAILED, CANCELLED)
# Rows are folded as soon as they are seen, but ids are read again from the last one folded this
# long ago: a transaction that took an id and commits after a row with a higher id was read is a
# matter of milliseconds, and a fold that moved past it would never read it.
SETTLE_SECONDS = 5.0
DELETION_CHECK_SECONDS = 60.0
FETCH_ROWS = 10_000


class BucketKey(NamedTuple):
    """A bucket's DAG, day (UTC) and the Eachlabs connection its predictions were bought with ("" when
    the entry does not say)."""

    dag_id: str
    day: date
    conn: str


@dataclass
class Bucket:
    """One DAG's predictions bought on one day (UTC), as its tasks recorded them."""

    bought: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    cost: int = 0  # micro-USD
    unknown_cost: int = 0  # ended predictions the API gave no cost for
    times: Counter[int] = field(default_factory=Counter)  # successes by ``ledger.time_bin``

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    def add(self, other: Bucket) -> None:
        for name in ("bought", SUCCEEDED, FAILED, CANCELLED, "cost", "unknown_cost"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.times.update(other.times)


@dataclass(frozen=True)
class Figures:
    """What a pipeline owner watches, for one group of buckets."""

    bought: int
    succeeded: int
    failed: int
    cancelled: int
    # Bought and not seen to end by their task: still running, or its task was stopped while waiting
    # (marked failed while deferred) or did not wait.
    open: int
    spend: float
    unknown_cost: int
    p50_predict_time: float | None
    p95_predict_time: float | None

    @property
    def success_rate(self) -> float | None:
        ended = self.succeeded + self.failed + self.cancelled
        return self.succeeded / ended if ended else None

    def count(self, status: str | None) -> int:
        return getattr(self, status) if status in (*STATUSES, "open") else self.bought


def figures(buckets: Iterable[Bucket]) -> Figures:
    total = Bucket()
    for bucket in buckets:
        total.add(bucket)
    return Figures(
        bought=total.bought,
        succeeded=total.succeeded,
        failed=total.failed,
        cancelled=total.cancelled,
        open=max(0, total.bought - total.ended),
        spend=total.cost / 1_000_000,
        unknown_cost=total.unknown_cost,
        p50_predict_time=_percentile(total.times, 0.50),
        p95_predict_time=_percentile(total.times, 0.95),
    )


def _percentile(times: Counter[int], q: float) -> float | None:
    count = sum(times.values())
    if not count:
        return None
    rank, seen = q * (count - 1), 0
    for number in sorted(times):
        seen += times[number]
        if seen > rank:
            return bin_seconds(number)
    return None


class Fold:
    """The ledger folded into buckets, kept up to date by ``refresh``; one per api-server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checked_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.buckets: dict[BucketKey, Bucket] = {}
        self.watermark = 0  # the highest id folded
        self.settled = 0  # every id up to this one was folded, or will never be written
        self.recent: dict[int, float] = {}  # ids folded above ``settled``, and when
        self.rows = 0
        # Single predictions bought whose end no task recorded (yet), and their bucket: running ones,
        # and those whose task stopped waiting (marked failed while deferred, or it did not wait),
        # which the API's history settles (``records.reconciliation``). Few: not one per prediction.
        self.open: dict[str, BucketKey] = {}
        # Each DAG's tasks' ``max_cost``, as their latest entries said: the page shows the sum beside
        # what the DAG spent. One number per task.
        self.budgets: dict[str, dict[str, float]] = {}

    def refresh(self, session: Session) -> None:
        """Fold the rows written since the last refresh (all of them, the first time). A row written
        more than ``SETTLE_SECONDS`` ago moves the point reads start from past it; a newer one is
        remembered, so the next refresh reads it again without counting it twice."""
        with self._lock:
            now = time.monotonic()
            if now - self.checked_at > DELETION_CHECK_SECONDS:
                self.checked_at = now
                if self.rows and _count_up_to(session, self.watermark) != self.rows:
                    self._reset()
            settled = self.settled
            for ident, dag_id, key, raw, task_id, old in _rows_after(session, self.settled):
                if old:
                    settled = max(settled, ident)
                if ident in self.recent:
                    continue
                if not old:
                    self.recent[ident] = now
                self.watermark = max(self.watermark, ident)
                self.rows += 1
                self._fold(dag_id, key, raw, task_id)
            aged = [ident for ident, seen in self.recent.items() if now - seen >= SETTLE_SECONDS]
            self.settled = max(settled, *aged) if aged else settled
            self.recent = {i: seen for i, seen in self.recent.items() if i > self.settled}

    def _fold(self, dag_id: str, key: str, raw: Any, task_id: str) -> None:
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            return
        if not isinstance(value, Mapping):
            return
        if key.startswith((BOUGHT, BATCH)):
            budget = _number(value.get("max_cost"))
            tasks = self.budgets.get(dag_id)
            if budget is not None:
                if tasks is None:
                    tasks = self.budgets[dag_id] = {}
                tasks[task_id] = budget
            elif tasks:
                tasks.pop(task_id, None)
        named = value.get("conn")
        conn = named if isinstance(named, str) else ""
        if key.startswith(BOUGHT):
            where = BucketKey(dag_id, _day(value.get("at")), conn)
            self._at(where).bought += 1
            self.open[key[len(BOUGHT) :]] = where
        elif key.startswith(ENDED):
            status = value.get("status")
            if status not in STATUSES:
                return
            self.open.pop(key[len(ENDED) :], None)
            bucket = self._at(BucketKey(dag_id, _day(value.get("bought_at")), conn))
            setattr(bucket, status, getattr(bucket, status) + 1)
            cost = value.get("cost")
            if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0:
                bucket.cost += cost
            else:
                bucket.unknown_cost += 1
            seconds = _number(value.get("predict_time"))
            if status == SUCCEEDED and seconds is not None:
                bucket.times[time_bin(seconds)] += 1
        elif key.startswith(BATCH):
            bucket = self._at(BucketKey(dag_id, _day(value.get("at")), conn))
            for name in ("bought", SUCCEEDED, FAILED, CANCELLED, "cost"):
                number = value.get(name)
                if isinstance(number, int) and not isinstance(number, bool) and number > 0:
                    setattr(bucket, name, getattr(bucket, name) + number)
            times = value.get("times")
            for name, number in times.items() if isinstance(times, Mapping) else ():
                if str(name).lstrip("-").isdigit() and isinstance(number, int) and number > 0:
                    bucket.times[int(name)] += number

    def _at(self, where: BucketKey) -> Bucket:
        bucket = self.buckets.get(where)
        if bucket is None:
            bucket = self.buckets[where] = Bucket()
        return bucket

    def budget(self, dag_id: str) -> float | None:
        """The sum of the DAG's tasks' ``max_cost`` (USD per run), None when no task has one."""
        with self._lock:
            tasks = self.budgets.get(dag_id)
            return round(sum(tasks.values()), 6) if tasks else None

    def open_predictions(self, since: date | None = None, until: date | None = None) -> dict[str, BucketKey]:
        """The open single predictions bought within the period (both ends included)."""
        with self._lock:
            return {
                ident: where
                for ident, where in self.open.items()
                if (since is None or where.day >= since) and (until is None or where.day <= until)
            }

    def select(
        self, dag_ids: set[str], since: date | None = None, until: date | None = None
    ) -> dict[BucketKey, Bucket]:
        """The buckets of the readable DAGs within the period (both ends included)."""
        with self._lock:
            return {
                where: bucket
                for where, bucket in self.buckets.items()
                if where.dag_id in dag_ids
                and (since is None or where.day >= since)
                and (until is None or where.day <= until)
            }


FOLD = Fold()
# Set once the first fold (``warm_up``) has read the whole ledger; pages asked for before answer at
# once with a note instead of waiting for it (or reading it a second time).
READY = threading.Event()
# How long a page waits for the first fold before it answers without figures: a small ledger is read
# within it, a million rows are not.
FIRST_FOLD_WAIT = 0.5
_first_fold = threading.Lock()
_STARTED = threading.Event()


def warm_up(session_factory: Callable[[], AbstractContextManager[Session]]) -> threading.Thread:
    """Fold the whole ledger in a thread of the api-server's worker, so that the first page after a
    start does not read a million rows while its user waits; the new fold replaces ``FOLD`` when it
    is complete. Started by the first page, never before the server forks its workers."""

    def read() -> None:
        global FOLD
        fold = Fold()
        try:
            with session_factory() as session:
                fold.refresh(session)
            FOLD = fold
        except Exception as error:  # the pages' own refresh reads it then
            import logging

            logging.getLogger(__name__).warning("Could not fold the spend ledger: %s", error)
        finally:
            READY.set()

    thread = threading.Thread(target=read, name="eachlabs-spend-ledger", daemon=True)
    thread.start()
    return thread


def current(
    session: Session, session_factory: Callable[[], AbstractContextManager[Session]] | None = None
) -> Fold | None:
    """The fold, brought up to date; None while the first fold is still reading (it is started here,
    once, with ``session_factory``: Airflow's ``create_session`` by default)."""
    if not READY.is_set():
        with _first_fold:
            if not _STARTED.is_set():
                _STARTED.set()
                warm_up(session_factory or _airflow_sessions())
        if not READY.wait(FIRST_FOLD_WAIT):
            return None
    fold = FOLD
    fold.refresh(session)
    return fold


def _airflow_sessions() -> Callable[[], AbstractContextManager[Session]]:
    from airflow.utils.session import create_session

    return create_session


def _rows_after(session: Session, watermark: int) -> Iterable[tuple[int, str, str, Any, str, bool]]:
    """The ledger's rows after ``watermark``, by id, each with whether it was written more than
    ``SETTLE_SECONDS`` ago (the database compares: converting a million timestamps to Python costs
    seconds)."""
    from datetime import timedelta

    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from sqlalchemy import select

    cutoff = datetime.now(timezone.utc) - timedelta(seconds=SETTLE_SECONDS)
    query = (
        select(Store.id, Store.dag_id, Store.key, Store.value, Store.task_id, (Store.updated_at < cutoff))
        .where(Store.id > watermark, Store.key.startswith(PREFIX, autoescape=True))
        .order_by(Store.id)
        .execution_options(yield_per=FETCH_ROWS)
    )
    for row in session.execute(query):
        yield row[0], row[1], row[2], row[3], row[4], bool(row[5])


def _count_up_to(session: Session, watermark: int) -> int:
    from airflow.models.task_state_store import TaskStateStoreModel as Store
    from sqlalchemy import func, select

    query = select(func.count()).where(Store.id <= watermark, Store.key.startswith(PREFIX, autoescape=True))
    return int(session.scalar(query) or 0)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _day(at: Any) -> date:
    """The UTC day of an epoch time (now when the entry gives none): arithmetic, no datetime."""
    seconds = _number(at) or time.time()
    return date.fromordinal(_EPOCH_ORDINAL + int(seconds // 86400))


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None
