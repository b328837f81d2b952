"""The triggerer transport: ``aiohttp``, one session per event loop shared by every trigger in it.

aiohttp was chosen over httpx for this path because a thousand waits queue on ``POOL_SIZE`` sockets
and aiohttp spends about a tenth of the CPU per GET in that situation (BENCHMARKS.md). Each request
has aiohttp's own total deadline, which also counts the wait for a free socket: at a thousand
triggers that wait is a fraction of a second, far below the timeout, and a slow answer holds its
socket no longer than the timeout either. Bodies arrive raw (no automatic gzip) and are decoded
under their cap; public-only requests resolve through a resolver that drops non-public addresses,
so the socket never reaches one. HTTP libraries load inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.addresses import NotCanonical, host_address, peer_is_public
from airflow_provider_eachlabs.api import ERROR_ANSWER_MAX_BYTES, ApiResponse, HttpRequest
from airflow_provider_eachlabs.exceptions import EachlabsError
from airflow_provider_eachlabs.transport.body import ACCEPT_ENCODING, READ_CHUNK_BYTES, BodyReader
from airflow_provider_eachlabs.transport.failures import PeerRefused, as_eachlabs_error

if TYPE_CHECKING:
    import aiohttp

    from airflow_provider_eachlabs.settings import EachlabsSettings

# One pool per event loop, shared by every trigger in it: at most this many sockets to the API.
POOL_SIZE = 10

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)
_users: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=8)
def _timeouts(seconds: float) -> aiohttp.ClientTimeout:
    """The request's total deadline, and the same bound on connecting and on each read; one object
    per setting, not one per request."""
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds, sock_connect=seconds, sock_read=seconds)


def _new_session(resolver: Any = None) -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL_SIZE, resolver=resolver),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@asynccontextmanager
async def shared_session() -> AsyncIterator[aiohttp.ClientSession]:
    """The event loop's shared session: a bounded pool instead of a socket per trigger.

    Held by each trigger for its whole wait (so the pool's sockets stay open between polls) and by
    each request; the last holder to leave closes it, so no loop ends with an unclosed session.
    """
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None:
        session = _new_session()
        _sessions[loop] = session
    _users[loop] = _users.get(loop, 0) + 1
    try:
        yield session
    finally:
        _users[loop] -= 1
        if _users[loop] == 0:
            del _sessions[loop]
            await session.close()


@asynccontextmanager
async def _public_only_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session of its own for a public-only request, resolving names to public addresses only."""
    import aiohttp

    class PublicOnlyResolver(aiohttp.ThreadedResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> Any:
            found = await super().resolve(host, port, family)
            public = [entry for entry in found if peer_is_public(str(entry["host"]))]
            if not public:
                raise PeerRefused(str(found[0]["host"]) if found else "no address")
            return public

    session = _new_session(PublicOnlyResolver())
    try:
        yield session
    finally:
        await session.close()


async def send(request: HttpRequest, settings: EachlabsSettings) -> ApiResponse:
    """Send ``request`` once, within ``settings.timeout`` in total, and read its capped answer."""
    try:
        if request.public_only:
            _refuse_private_literal(request.url)  # aiohttp does not resolve an address literal
            async with _public_only_session() as session:
                return await _exchange(session, request, settings)
        held = _sessions.get(asyncio.get_running_loop())
        if held is not None:  # the common case: a waiting trigger holds the session open
            return await _exchange(held, request, settings)
        async with shared_session() as session:
            return await _exchange(session, request, settings)
    except Exception as error:
        raise _as_eachlabs_error(error, request, settings) from None


def _refuse_private_literal(url: str) -> None:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        literal = host_address(host)
    except NotCanonical:
        raise PeerRefused(host) from None
    if literal is not None and not peer_is_public(str(literal)):
        raise PeerRefused(str(literal))


def _as_eachlabs_error(error: Exception, request: HttpRequest, settings: EachlabsSettings) -> EachlabsError:
    import aiohttp

    never_sent = isinstance(error, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
    timed_out = isinstance(error, asyncio.TimeoutError) and not never_sent
    return as_eachlabs_error(error, request, settings, never_sent=never_sent, timed_out=timed_out)


async def _exchange(
    session: aiohttp.ClientSession, request: HttpRequest, settings: EachlabsSettings
) -> ApiResponse:
    async with session.request(
        request.method,
        request.url,
        headers={**request.headers, "Accept-Encoding": ACCEPT_ENCODING},
        json=request.json,
        data=request.content,
        params=request.params,
        allow_redirects=False,
        timeout=_timeouts(settings.timeout),
    ) as response:
        limit = request.max_bytes if response.status < 300 else ERROR_ANSWER_MAX_BYTES
        encoding = response.headers.get("Content-Encoding")
        length = response.content_length
        if not encoding and length is not None and length <= limit:
            # The common case, every poll: a plain body of a known, small length, read at once.
            return ApiResponse(response.status, response.headers, await response.read())
        reader = BodyReader(encoding, limit)
        async for chunk in response.content.iter_chunked(READ_CHUNK_BYTES):
            reader.feed(chunk)
        return ApiResponse(response.status, response.headers, reader.content())
