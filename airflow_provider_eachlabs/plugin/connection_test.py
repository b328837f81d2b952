"""The UI's "Test Connection" button, for an Eachlabs connection.

The connections list's Test button posts the row as it is, with ``port: Number(row.port)``: 0 for a
connection without a port, and every Eachlabs connection has none (the form hides the port). The
route (``test_connection`` in ``airflow/api_fastapi/core_api/routes/public/connections.py``) takes a
port that differs from the stored one for another destination (``_same_endpoint`` makes ``""`` the
same as NULL, not 0), will not send the stored key there, and will not take the masked ``***`` the
UI sends for it: "400 The host or port to test differs from the stored connection". Every Eachlabs
connection failed so, while ``airflow connections test`` (no body) passed. apache/airflow#73298
makes the route take 0 for no port; until every Airflow this provider supports has it, this
middleware takes ``port: 0`` out of a test of an ``eachlabs`` connection before the route reads it.

That changes no destination and lets nothing through that Airflow refuses: an Eachlabs connection's
port 0 is no port (``settings`` folds only a non-zero port into the host), and Airflow already
tests a body without a port against the stored connection's own. Every other request passes as it
came, without its body being read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow_provider_eachlabs.settings import CONN_TYPE

TEST_PATH = "/api/v2/connections/test"
# A connection test is a few hundred bytes; a larger body goes on as it came, unread past this.
MAX_BODY_BYTES = 64 * 1024

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def without_zero_port(body: bytes) -> bytes | None:
    """``body`` without its ``port`` when it tests an ``eachlabs`` connection with port 0; else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE:
        return None
    port = data.get("port")
    if type(port) is not int or port != 0:
        return None
    del data["port"]
    return json.dumps(data).encode()


class EachlabsConnectionTestMiddleware:
    """A root middleware of the api-server: ``port: 0`` out of the Test button's body for an
    Eachlabs connection (see the module's docstring). Pure ASGI: any other request costs one check
    of its method and path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith(TEST_PATH):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        size, more = 0, True
        while more and size <= MAX_BODY_BYTES:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = bool(message.get("more_body", False))
        whole = not more and size <= MAX_BODY_BYTES and read[-1]["type"] == "http.request"
        fixed = without_zero_port(b"".join(m.get("body", b"") for m in read)) if whole else None
        if fixed is not None:
            read = [{"type": "http.request", "body": fixed, "more_body": False}]
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(fixed)).encode())]}

        async def replay() -> Message:
            return read.pop(0) if read else await receive()

        await self.app(scope, replay, send)
