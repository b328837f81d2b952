"""What the API itself billed, per Eachlabs connection, for the fills page to show beside what the
DAGs recorded.

The connections are the deployment's own: the Connection table's ``eachlabs`` rows and the
api-server's ``AIRFLOW_CONN_*`` variables of that type, never anything a task wrote (XCom included).
For each, ``GET /v1/executions`` is paged through (``PAGE_ROWS`` a page, until a page is short) within
bounds: at most ``MAX_PAGES`` pages and ``LISTING_SECONDS`` per listing, each request sent once from
the pages' API pool (``live.call_at_once``), so a huge history or a slow API cannot hold the
api-server. A listing that meets a bound says so in ``ApiFigures.truncated``; one that fails says why
in ``ApiFigures.error``, in the provider's own words, never with the key or what the other host said.

Each (connection, period) is listed at most once per ``FRESH_SECONDS`` in this process, failures
included, and concurrent pages asking for the same one share the listing in flight. The listings run
on a pool of ``MAX_LISTINGS`` threads, fewer than the API pool's slots, so the task pages' status
requests still find one free.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

PAGE_ROWS = 100  # the API's largest page
MAX_PAGES = 100  # per listing: 10,000 executions
LISTING_SECONDS = 10.0  # per listing, in total
FRESH_SECONDS = 60.0  # a listing this young is answered again without asking the API
MAX_LISTINGS = 2  # listings at once in this api-server (each sends one request at a time)
MIN_PAGE_SECONDS = 0.5  # a page is not asked for with less time than this left
STATUSES = ("success", "error", "cancelled", "other")
_BUSY_PAUSE = 0.05  # seconds between asks for a slot of the API pool
_KEPT = 256  # (connection, period) answers kept
_ENV_PREFIX = "AIRFLOW_CONN_"

Key = tuple[str, datetime | None, datetime | None]


@dataclass(frozen=True)
class ApiFigures:
    """What the API lists for one connection's key over a period (``since``/``until`` in UTC; None is
    the API's default: the 90 days before ``until``, or up to now).

    ``count`` executions, ``cost`` the exact sum in USD of the ``execution_cost`` that are numbers,
    ``unknown_cost`` how many had none (missing, null, not a number). ``by_status`` counts each of
    ``STATUSES``: ``success``, ``error`` (``failed`` too), ``cancelled`` (``canceled`` too) and
    ``other`` (still running, or a word the API does not document). ``prediction_ids`` are the
    executions' ids, for the page to find what the API billed that no task recorded. The figures are
    shared by every view of the minute: nothing in them can be changed.

    ``truncated`` says, in words, that a bound stopped the listing (the figures are a part of the
    period); ``error`` says why the API could not be read, naming the connection (the figures are
    only what was read before). ``fetched_at`` is when the listing ended (UTC).
    """

    conn_id: str
    since: datetime | None
    until: datetime | None
    count: int
    cost: Decimal
    unknown_cost: int
    by_status: Mapping[str, int]
    prediction_ids: frozenset[str]
    truncated: str | None
    error: str | None
    fetched_at: datetime
    # Each execution's status (one of ``STATUSES``) and cost (None: the API gave none), by id: the
    # page settles with them the predictions whose end no task recorded.
    executions: Mapping[str, tuple[str, Decimal | None]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def complete(self) -> bool:
        """The whole period was read: the figures are the API's totals."""
        return self.truncated is None and self.error is None


def api_figures(
    session: Session, since: datetime | None, until: datetime | None, *, wait: float | None = None
) -> list[ApiFigures]:
    """The API's figures for ``since``..``until`` for every Eachlabs connection of the deployment,
    in connection id order, within ``wait`` seconds in all (by default ``LISTING_SECONDS`` and a
    page's deadline: the whole listing).

    A naive datetime is read as UTC. ``until=None`` is "now", and is cached as one period for
    ``FRESH_SECONDS``: pass whole days or None, not a ``now()`` that differs on every view. A listing
    not over in time is answered with an ``error`` saying so; it goes on and is kept for the next view.
    """
    period = (_utc(since), _utc(until))
    flights = [(conn_id, _flight((conn_id, *period))) for conn_id in eachlabs_connection_ids(session)]
    whole = LISTING_SECONDS + _page_timeout() + 1.0
    deadline = time.monotonic() + (whole if wait is None else min(wait, whole))
    answers = []
    for conn_id, flight in flights:
        try:
            answers.append(flight.result(timeout=max(0.0, deadline - time.monotonic())))
        except Exception:
            answers.append(
                _figures(
                    (conn_id, *period),
                    _Tally(),
                    error=f"Eachlabs connection {conn_id!r}: the API's history is still being read; "
                    "it shows when the page is loaded again",
                )
            )
    return answers


def eachlabs_connection_ids(session: Session) -> list[str]:
    """The ids of the deployment's Eachlabs connections, sorted: the Connection table's rows of type
    ``eachlabs`` and the ``AIRFLOW_CONN_*`` variables of this process whose URI or JSON has that
    type. Connections only a secrets backend holds cannot be listed and are not included."""
    import os

    from airflow.models.connection import Connection
    from sqlalchemy import select

    from airflow_provider_eachlabs.settings import CONN_TYPE

    stored = session.scalars(select(Connection.conn_id).where(Connection.conn_type == CONN_TYPE))
    from_env = (
        name[len(_ENV_PREFIX) :].lower()
        for name, value in os.environ.items()
        if name.startswith(_ENV_PREFIX) and len(name) > len(_ENV_PREFIX) and _env_type(value) == CONN_TYPE
    )
    return sorted({*stored, *from_env})


def _env_type(value: str) -> str | None:
    """The ``conn_type`` of an ``AIRFLOW_CONN_*`` value, JSON or URI, as Airflow reads it; None when
    there is none."""
    import json
    from urllib.parse import urlsplit

    text = value.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            return None
        kind = loaded.get("conn_type") if isinstance(loaded, dict) else None
        return kind.replace("-", "_").lower() if isinstance(kind, str) else None
    try:
        scheme = urlsplit(text).scheme
    except ValueError:
        return None
    return scheme.replace("-", "_") if scheme and "://" in text else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# --- one listing per (connection, period) per minute, shared by the pages asking at once ----------


def _flight(key: Key) -> Future[ApiFigures]:
    """The answer for ``key``: the one kept if fresh, else the listing in flight, else a new one."""
    with _lock:
        kept = _kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < FRESH_SECONDS:
            done: Future[ApiFigures] = Future()
            done.set_result(kept[1])
            return done
        flight = _flights.get(key)
        if flight is not None:
            return flight
        flight = _flights[key] = Future()
    try:
        _listings().submit(_lead, key, flight)
    except BaseException:
        with _lock:
            _flights.pop(key, None)
        raise
    return flight


def _lead(key: Key, flight: Future[ApiFigures]) -> None:
    try:
        figures = _listing(key)
    except Exception as error:  # _listing answers every failure; this keeps the followers answered
        figures = _figures(key, _Tally(), error=_failure(key[0], error))
    with _lock:
        _kept[key] = (time.monotonic(), figures)
        _kept.move_to_end(key)
        while len(_kept) > _KEPT:
            _kept.popitem(last=False)
        _flights.pop(key, None)
    flight.set_result(figures)


# --- one listing ---------------------------------------------------------------------------------


class _Tally:
    """The figures so far; an execution met twice (paging while new ones arrive) counts once."""

    def __init__(self) -> None:
        self.count = 0
        self.cost = Decimal(0)
        self.unknown_cost = 0
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.ids: set[str] = set()
        self.executions: dict[str, tuple[str, Decimal | None]] = {}

    def add(self, rows: Iterable[Any]) -> None:
        for row in rows:
            if not isinstance(row, Mapping):
                continue
            ident = row.get("id")
            if isinstance(ident, str) and ident:
                if ident in self.ids:
                    continue
                self.ids.add(ident)
            self.count += 1
            status = _status(row.get("status"))
            self.by_status[status] += 1
            cost = _money(row.get("execution_cost"))
            if isinstance(ident, str) and ident:
                self.executions[ident] = (status, cost)
            if cost is None:
                self.unknown_cost += 1
            else:
                self.cost += cost


def _status(raw: object) -> str:
    from airflow_provider_eachlabs.api import (
        CANCELLED_STATUSES,
        FAILURE_STATUSES,
        SUCCESS_STATUSES,
        PredictionStatus,
    )

    word = PredictionStatus.parse(raw)
    if word in SUCCESS_STATUSES or raw == "completed":  # "completed": a workflow's execution
        return "success"
    if word in FAILURE_STATUSES:
        return "error"
    if word in CANCELLED_STATUSES:
        return "cancelled"
    return "other"


def _money(raw: object) -> Decimal | None:
    """A JSON number as the decimal it was written as (0.05 is 0.05, not the float near it)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    return Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)


def _figures(
    key: Key, tally: _Tally, *, truncated: str | None = None, error: str | None = None
) -> ApiFigures:
    conn_id, since, until = key
    return ApiFigures(
        conn_id=conn_id,
        since=since,
        until=until,
        count=tally.count,
        cost=tally.cost,
        unknown_cost=tally.unknown_cost,
        by_status=MappingProxyType(dict(tally.by_status)),
        prediction_ids=frozenset(tally.ids),
        executions=MappingProxyType(dict(tally.executions)),
        truncated=truncated,
        error=error,
        fetched_at=datetime.now(timezone.utc),
    )


def _failure(conn_id: str, error: BaseException) -> str:
    from airflow_provider_eachlabs.plugin.live import in_words

    return f"Eachlabs connection {conn_id!r}: {in_words(error)}"


class _OutOfTime(Exception):
    """The listing's time was spent before the next page could be asked for."""


def _listing(key: Key) -> ApiFigures:
    """Every page of the period, within ``MAX_PAGES`` and ``LISTING_SECONDS``."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from airflow_provider_eachlabs.exceptions import EachlabsConnectionError
    from airflow_provider_eachlabs.plugin.live import page_hook

    conn_id, since, until = key
    deadline = time.monotonic() + LISTING_SECONDS
    tally = _Tally()
    stopped = f"listing stopped at its {LISTING_SECONDS:g} s budget"
    try:
        hook = page_hook(conn_id)
    except Exception as error:
        return _figures(key, tally, error=_failure(conn_id, error))
    for page in range(MAX_PAGES):
        try:
            body = _page(hook, page * PAGE_ROWS, since, until, deadline)
        except _OutOfTime:
            if not page:
                busy = f"the api-server's API requests were all taken for {LISTING_SECONDS:g} s"
                return _figures(key, tally, error=f"Eachlabs connection {conn_id!r}: {busy}")
            return _figures(key, tally, truncated=f"{stopped}, after {tally.count:,} executions")
        except (FutureTimeout, EachlabsConnectionError) as error:
            if page and time.monotonic() >= deadline - MIN_PAGE_SECONDS:
                # The page's request was cut short to end within the budget.
                return _figures(key, tally, truncated=f"{stopped}, after {tally.count:,} executions")
            return _figures(key, tally, error=_failure(conn_id, error))
        except Exception as error:
            return _figures(key, tally, error=_failure(conn_id, error))
        rows = body.get("executions")
        if not isinstance(rows, list):
            return _figures(
                key, tally, error=f"Eachlabs connection {conn_id!r}: the API's executions answer has no list"
            )
        tally.add(rows)
        if len(rows) < PAGE_ROWS:
            return _figures(key, tally)
    return _figures(key, tally, truncated=f"listing truncated at {MAX_PAGES * PAGE_ROWS:,} executions")


def _page(
    hook: EachlabsHook, offset: int, since: datetime | None, until: datetime | None, deadline: float
) -> dict[str, Any]:
    """One page, sent once from the pages' API pool, its request ending by ``deadline``; a full pool
    is asked again until then."""
    from airflow_provider_eachlabs.plugin.live import PAGE_TIMEOUT, Busy, call_at_once

    while True:
        left = deadline - time.monotonic()
        if left < MIN_PAGE_SECONDS:
            raise _OutOfTime
        hook.answer_at_once(min(PAGE_TIMEOUT, left))
        try:
            body: dict[str, Any] = call_at_once(
                lambda: hook.list_executions(limit=PAGE_ROWS, offset=offset, since=since, until=until)
            )
            return body
        except Busy:
            time.sleep(_BUSY_PAUSE)


def _page_timeout() -> float:
    from airflow_provider_eachlabs.plugin.live import PAGE_TIMEOUT

    return PAGE_TIMEOUT


def _listings() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_LISTINGS, thread_name_prefix="eachlabs-reconcile")
        return _pool


_lock = threading.Lock()
_kept: OrderedDict[Key, tuple[float, ApiFigures]] = OrderedDict()
_flights: dict[Key, Future[ApiFigures]] = {}
_pool: ThreadPoolExecutor | None = None
