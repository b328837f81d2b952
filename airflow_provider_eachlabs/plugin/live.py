"""The API as the api-server's pages reach it: at once or not at all, a few requests at a time.

Someone is waiting on the page, and Airflow's own pages share the api-server's threads, so nothing
here retries: each request is sent once with a short total deadline from a small pool of its own.
Many viewers of one waiting prediction cause one status request every ``FRESH_SECONDS``; when the
pool is busy, a page is told so at once instead of queueing. What reaches the browser on a failure
is the provider's own sentence and the request id, never what the other host answered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

PAGE_TIMEOUT = 5.0  # seconds for one request, in total, sent once
FRESH_SECONDS = 3.0  # a status this young is answered again without asking the API
MAX_REQUESTS = 4  # API requests in flight at once for all the pages of this api-server
_STATUSES_KEPT = 1024


class NotUsable(Exception):
    """The task's connection cannot be used by the api-server; the message says why."""


def page_hook(conn_id: str) -> EachlabsHook:
    """A hook on the DAG's own connection, which must be an ``eachlabs`` one, sending each request
    once within ``PAGE_TIMEOUT``. Looked up on every use: an edited key or host applies at once."""
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
    from airflow_provider_eachlabs.settings import CONN_TYPE

    hook = EachlabsHook(conn_id)
    try:
        conn = hook.get_connection(conn_id)
    except Exception:
        raise NotUsable(f"the task's connection {conn_id!r} does not exist") from None
    if conn.conn_type != CONN_TYPE:
        raise NotUsable(
            f"the task's connection {conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}: "
            "the api-server uses only Eachlabs connections"
        )
    hook.answer_at_once(PAGE_TIMEOUT)
    return hook


def in_words(error: BaseException) -> str:
    """The provider's own sentence for a failure, with the request id: no text from the other host."""
    from airflow_provider_eachlabs.exceptions import (
        EachlabsAuthError,
        EachlabsConnectionError,
        EachlabsDownloadError,
        EachlabsNotFoundError,
        EachlabsRateLimitError,
        EachlabsServerError,
        request_id_suffix,
    )

    if isinstance(error, NotUsable):
        return str(error)
    if isinstance(error, FutureTimeout):
        return f"the API did not answer within {PAGE_TIMEOUT:g} s"
    said = next(
        (
            words
            for kind, words in (
                (EachlabsAuthError, "the API refused the connection's key"),
                (EachlabsNotFoundError, "the API does not know it"),
                (EachlabsRateLimitError, "the API's rate limit was met"),
                (EachlabsServerError, "the API failed"),
                (EachlabsConnectionError, "the API could not be reached in time"),
                (EachlabsDownloadError, "the file was refused (an unsafe address, or too large)"),
            )
            if isinstance(error, kind)
        ),
        f"it could not be read ({type(error).__name__})",
    )
    return said + request_id_suffix(getattr(error, "request_id", None))


class Busy(Exception):
    """Every API slot of this api-server is taken; the page asks again later."""


def call_at_once(work: Callable[[], Any]) -> Any:
    """``work`` on the API pool, waited for at most ``PAGE_TIMEOUT``; ``Busy`` at once when the pool
    is full. A request that overruns finishes in the pool, still holding its slot."""
    if not _slots.acquire(blocking=False):
        raise Busy("the api-server is already asking the API for other pages; this one asks again shortly")
    try:
        future: Future[Any] = _pool.submit(work)
    except BaseException:
        _slots.release()
        raise
    future.add_done_callback(lambda _: _slots.release())
    return future.result(timeout=PAGE_TIMEOUT)


def live_status(conn_id: str, prediction_id: str, badge: Callable[[str], str]) -> dict[str, Any]:
    """The prediction's status now, asked once per ``FRESH_SECONDS`` however many pages look."""
    key = (conn_id, prediction_id)
    with _lock:
        kept = _statuses.get(key)
        if kept is not None and (time.monotonic() - kept[0] < FRESH_SECONDS or key in _asking):
            return kept[1]
        if key in _asking:
            return {"status": "unknown", "badge": "wait", "note": "being checked"}
        _asking.add(key)
    try:
        prediction = call_at_once(lambda: page_hook(conn_id).get_prediction(prediction_id))
        answer = {"status": prediction.status, "badge": badge(prediction.status)}
    except Busy as busy:
        answer = {"status": "unknown", "badge": "wait", "note": str(busy)}
    except Exception as error:
        answer = {"status": "unknown", "badge": "wait", "error": f"Status not read: {in_words(error)}"}
    finally:
        with _lock:
            _asking.discard(key)
    with _lock:
        _statuses[key] = (time.monotonic(), answer)
        _statuses.move_to_end(key)
        while len(_statuses) > _STATUSES_KEPT:
            _statuses.popitem(last=False)
    return answer


_lock = threading.Lock()
_statuses: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
_asking: set[tuple[str, str]] = set()
_slots = threading.BoundedSemaphore(MAX_REQUESTS)
_pool = ThreadPoolExecutor(max_workers=MAX_REQUESTS, thread_name_prefix="eachlabs-page")
