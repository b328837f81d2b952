"""The worker transport: ``requests``, with a total deadline and a peer check below it.

``requests`` only bounds each socket read, so an answer dripped one byte a second never times out,
and it connects wherever DNS points. Two small additions under its connection pool fix both: a
watchdog per request that shuts the socket down when the request's time is up (during the TLS
handshake too), and a check of the address actually connected to before a public-only request is
sent. HTTP libraries load inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs.addresses import peer_is_public
from airflow_provider_eachlabs.api import ERROR_ANSWER_MAX_BYTES, ApiResponse, HttpRequest
from airflow_provider_eachlabs.exceptions import EachlabsError
from airflow_provider_eachlabs.transport.body import ACCEPT_ENCODING, READ_CHUNK_BYTES, BodyReader
from airflow_provider_eachlabs.transport.failures import PeerRefused, as_eachlabs_error

if TYPE_CHECKING:
    import requests

    from airflow_provider_eachlabs.settings import EachlabsSettings


class _Guard:
    """One request's deadline and peer rule, watched from a timer thread.

    When the deadline passes, the socket in use is shut down, which ends any blocking read or
    handshake at once. During ``connect`` the TLS socket does not exist yet, so a duplicate of the
    raw socket's descriptor stands in for it (``shutdown`` acts on the socket, not the descriptor).
    """

    def __init__(self, seconds: float, public_only: bool) -> None:
        self.public_only = public_only
        self.expired = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._fd: int | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch_socket(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._socket = sock
            if self.expired and sock is not None:
                _shutdown(sock)

    def watch_fd(self, fd: int) -> None:
        with self._lock:
            self._fd = os.dup(fd)

    def unwatch_fd(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def check_peer(self, sock: socket.socket, proxied: bool) -> None:
        """Before any byte of a public-only request: the address connected to must be public.

        Behind a proxy the peer is the proxy, which resolves the name itself: nothing to check here.
        """
        if self.public_only and not proxied:
            peer = str(sock.getpeername()[0])
            if not peer_is_public(peer):
                raise PeerRefused(peer)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                _shutdown(self._socket)
            elif self._fd is not None:
                stand_in = socket.socket(fileno=self._fd)
                _shutdown(stand_in)
                stand_in.detach()

    def cancel(self) -> None:
        self._timer.cancel()
        self.unwatch_fd()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Local(threading.local):
    guard: _Guard | None = None
    session: requests.Session | None = None


_local = _Local()


class _GuardedConnection:
    """Mixed into urllib3's connections: reports its socket to this thread's guard, checks the peer."""

    sock: socket.socket | None
    proxy: Any

    def _new_conn(self) -> socket.socket:
        """The TCP socket, its peer checked before a TLS handshake sends the host name to it."""
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        guard = _local.guard
        if guard is not None:
            guard.watch_fd(sock.fileno())
            try:
                guard.check_peer(sock, self.proxy is not None)
            except PeerRefused:
                guard.unwatch_fd()
                sock.close()
                raise
        return sock

    def connect(self) -> None:
        guard = _local.guard
        try:
            super().connect()  # type: ignore[misc]
        finally:
            if guard is not None:
                guard.unwatch_fd()
        if guard is not None and self.sock is not None:
            guard.watch_socket(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        guard = _local.guard
        if guard is not None and self.sock is not None:  # a kept-alive connection, already connected
            guard.watch_socket(self.sock)
            guard.check_peer(self.sock, self.proxy is not None)
        super().request(*args, **kwargs)  # type: ignore[misc]


def _session() -> requests.Session:
    """This thread's session, whose connection pools use the guarded connections."""
    if _local.session is None:
        import requests
        import urllib3

        class HTTPConnection(_GuardedConnection, urllib3.connection.HTTPConnection):
            pass

        class HTTPSConnection(_GuardedConnection, urllib3.connection.HTTPSConnection):
            pass

        class HTTPPool(urllib3.HTTPConnectionPool):
            ConnectionCls = HTTPConnection

        class HTTPSPool(urllib3.HTTPSConnectionPool):
            ConnectionCls = HTTPSConnection

        pools = {"http": HTTPPool, "https": HTTPSPool}

        class Adapter(requests.adapters.HTTPAdapter):
            def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
                super().init_poolmanager(*args, **kwargs)
                self.poolmanager.pool_classes_by_scheme = pools

            def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
                manager = super().proxy_manager_for(proxy, **kwargs)
                manager.pool_classes_by_scheme = pools
                return manager

        session = requests.Session()
        session.mount("http://", Adapter())
        session.mount("https://", Adapter())
        # An answer's cookies are never sent back: no request here is meant to carry state.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        _local.session = session
    return _local.session


def send(request: HttpRequest, settings: EachlabsSettings) -> ApiResponse:
    """Send ``request`` once, within ``settings.timeout`` in total, and read its capped answer."""
    guard = _Guard(settings.timeout, request.public_only)
    _local.guard = guard
    try:
        with _session().request(
            request.method,
            request.url,
            headers={**request.headers, "Accept-Encoding": ACCEPT_ENCODING},
            json=request.json,
            data=request.content,
            params=request.params,
            timeout=settings.timeout,
            stream=True,
            allow_redirects=False,
        ) as response:
            limit = request.max_bytes if response.status_code < 300 else ERROR_ANSWER_MAX_BYTES
            reader = BodyReader(response.headers.get("Content-Encoding"), limit)
            for chunk in response.raw.stream(READ_CHUNK_BYTES, decode_content=False):
                reader.feed(chunk)
            return ApiResponse(response.status_code, response.headers, reader.content())
    except Exception as error:
        raise _as_eachlabs_error(error, request, settings, guard.expired) from None
    finally:
        guard.cancel()
        _local.guard = None


def _as_eachlabs_error(
    error: Exception, request: HttpRequest, settings: EachlabsSettings, expired: bool
) -> EachlabsError:
    import requests
    import urllib3.exceptions

    reason = error.args[0] if error.args else None
    reason = getattr(reason, "reason", reason)
    never_sent = isinstance(error, requests.ConnectTimeout) or isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    )
    return as_eachlabs_error(error, request, settings, never_sent=never_sent, timed_out=expired)
