"""The two HTTP transports under ``EachlabsHook``, and the one retry policy both use.

Workers send with ``requests`` (the hook's ``Session``). The triggerer sends with ``aiohttp``: one
session per event loop, shared by every trigger in it, with at most ``ASYNC_POOL_SIZE`` sockets to
the API. aiohttp was chosen over httpx for that path because a thousand waits queue on one small
pool there, and aiohttp spends about a tenth of the CPU per GET in that situation (BENCHMARKS.md).

Both turn what they receive into an ``ApiResponse`` for ``api`` to read, and every transport
failure into an ``EachlabsConnectionError`` that says whether the request may have reached the
server. HTTP libraries load inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.api import ApiRequest, ApiResponse, EachlabsConnectionError

if TYPE_CHECKING:
    import aiohttp
    import requests

    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsSettings

T = TypeVar("T")

# One pool per event loop, shared by every trigger in it: at most this many sockets to the API.
ASYNC_POOL_SIZE = 10

_async_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
_async_users: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


def retry_delay(
    settings: EachlabsSettings, error: BaseException, attempt: int, idempotent: bool
) -> float | None:
    """Seconds to wait before sending again after failed ``attempt`` (1-based), or None to give up.

    ``api.should_retry`` decides whether a repeat is safe. The server's ``Retry-After`` wins;
    otherwise the wait is drawn at random below an exponential ceiling ("full jitter"), so tasks that
    failed together do not all come back in the same second.
    """
    if attempt > settings.max_retries or not api.should_retry(error, idempotent=idempotent):
        return None
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return float(min(retry_after, settings.backoff_max))
    ceiling = min(settings.backoff_max, settings.backoff_initial * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


def call_with_retries(
    attempt: Callable[[], T], settings: EachlabsSettings, *, idempotent: bool, log: Any
) -> T:
    """Run ``attempt`` until it returns, or ``retry_delay`` gives up and its last error is raised.

    ``log`` is the hook's logger: stdlib or structlog, depending on where the hook runs.
    """
    number = 0
    while True:
        number += 1
        try:
            return attempt()
        except api.EachlabsError as error:
            delay = _retry_or_raise(settings, error, number, idempotent, log)
        time.sleep(delay)


async def acall_with_retries(
    attempt: Callable[[], Awaitable[T]], settings: EachlabsSettings, *, log: Any
) -> T:
    """``call_with_retries`` on the event loop, for idempotent requests (the triggerer only GETs).

    A plain loop rather than a retry library: it is on every poll of every trigger, and the first
    attempt, which nearly always succeeds, should cost no more than the request itself.
    """
    number = 0
    while True:
        number += 1
        try:
            return await attempt()
        except api.EachlabsError as error:
            delay = _retry_or_raise(settings, error, number, True, log)
        await asyncio.sleep(delay)


def _retry_or_raise(
    settings: EachlabsSettings, error: api.EachlabsError, attempt: int, idempotent: bool, log: Any
) -> float:
    delay = retry_delay(settings, error, attempt, idempotent)
    if delay is None:
        raise error
    log.warning(
        "Eachlabs request failed (%s); retry %d of %d in %.1fs", error, attempt, settings.max_retries, delay
    )
    return delay


# --- sync: requests ----------------------------------------------------------------------------------


def send(session: requests.Session, method: str, url: str, *, timeout: float, **kwargs: Any) -> ApiResponse:
    import requests

    try:
        response = session.request(method, url, timeout=timeout, **kwargs)
    except requests.RequestException as error:
        raise _sync_error(method, url, error) from None
    return ApiResponse(response.status_code, response.headers, response.content)


def download_once(
    session: requests.Session, url: str, headers: dict[str, str], max_bytes: int, timeout: float
) -> api.Download | str:
    """One GET of an output: the file, or the ``Location`` of a redirect for the caller to check."""
    import requests

    try:
        with session.get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False) as r:
            if r.is_redirect and r.headers.get("Location"):
                return str(r.headers["Location"])
            if r.status_code >= 300:
                api.raise_for_status(ApiResponse(r.status_code, r.headers, r.content[:2048]))
            content_type = r.headers.get("Content-Type", "")
            if not content_type.lower().startswith("image/"):
                # Retried like a transient answer: an error page in place of a finished output.
                raise api.EachlabsResponseError(
                    f"output {url} is not an image (Content-Type {content_type or 'missing'!r})",
                    status_code=r.status_code,
                    request_id=api.header(r.headers, api.REQUEST_ID_HEADER),
                )
            declared = int(r.headers.get("Content-Length") or 0)
            chunks: list[bytes] = []
            size = 0
            for chunk in r.iter_content(64 * 1024):
                size += len(chunk)
                if max(size, declared) > max_bytes:
                    raise api.EachlabsDownloadError(f"output {url} is larger than the {max_bytes} byte limit")
                chunks.append(chunk)
    except requests.RequestException as error:
        raise _sync_error("GET", url, error) from None
    return api.Download(url, b"".join(chunks), content_type)


def _sync_error(method: str, url: str, error: Exception) -> EachlabsConnectionError:
    import requests
    import urllib3.exceptions

    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)
    never_sent = isinstance(error, requests.ConnectTimeout) or isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )
    return _connection_error(method, url, error, never_sent)


# --- async: aiohttp ----------------------------------------------------------------------------------


async def send_async(url: str, request: ApiRequest, settings: EachlabsSettings) -> ApiResponse:
    """One request on the event loop's shared session.

    The timeouts bound connecting and each read, not the whole call: with a thousand triggers on ten
    sockets, waiting for a free socket is normal and must not count as the API being slow.
    """
    import aiohttp

    held = _async_sessions.get(asyncio.get_running_loop())
    try:
        if held is not None:  # the common case: a waiting trigger holds the session open
            return await _request(held, url, request, settings)
        async with shared_session() as session:
            return await _request(session, url, request, settings)
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        never_sent = isinstance(error, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
        raise _connection_error(request.method, url, error, never_sent) from None


async def _request(
    session: aiohttp.ClientSession, url: str, request: ApiRequest, settings: EachlabsSettings
) -> ApiResponse:
    async with session.request(
        request.method,
        url,
        headers=api.auth_headers(settings.api_key),
        json=request.json,
        params=request.params,
        timeout=_timeout(settings.timeout),
    ) as response:
        return ApiResponse(response.status, response.headers, await response.read())


@functools.lru_cache(maxsize=8)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    """One timeout object per setting, not one per request."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


@asynccontextmanager
async def shared_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The event loop's shared session: a bounded pool instead of a socket per trigger.

    Held by each trigger for its whole wait (so the pool's sockets stay open between polls) and by
    each request; the last holder to leave closes it, so no loop ends with an unclosed session.
    """
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _async_sessions.get(loop)
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=ASYNC_POOL_SIZE))
        _async_sessions[loop] = session
    _async_users[loop] = _async_users.get(loop, 0) + 1
    try:
        yield session
    finally:
        _async_users[loop] -= 1
        if _async_users[loop] == 0:
            del _async_sessions[loop]
            await session.close()


def _connection_error(method: str, url: str, error: Exception, never_sent: bool) -> EachlabsConnectionError:
    lines = str(error).strip().splitlines()
    detail = lines[0][:300] if lines else "no detail"
    return EachlabsConnectionError(
        f"{method} {url} failed: {type(error).__name__}: {detail}", request_sent=not never_sent
    )
