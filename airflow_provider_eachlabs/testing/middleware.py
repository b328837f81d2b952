"""Raw ASGI middleware: request ids, counters and transport-level faults for every route.

It is raw ASGI (not Starlette's BaseHTTPMiddleware) for two reasons: BaseHTTPMiddleware halves
the throughput of the polling route, and dropping a connection needs uvicorn's own `send`
callable, which only the outermost ASGI layer receives unwrapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow_provider_eachlabs.testing.faults import Fault, FaultQueue
from airflow_provider_eachlabs.testing.state import Counters, SimState

__all__ = ["ASGIApp", "SimulatorMiddleware", "classify_route"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MALFORMED_BODY = b'{"status": "success", "message": "Prediction created succ'


def classify_route(method: str, path: str) -> str | None:
    """Map a request to the route names used by `EachlabsSimulator.inject`."""
    if path.startswith("/files/") and method in ("GET", "HEAD"):
        return "file"
    if path.startswith("/uploads/") and method == "PUT":
        return "upload"
    if path in ("/v1/prediction", "/v1/prediction/"):
        return "create" if method == "POST" else None
    if path.startswith("/v1/prediction/"):
        rest = path[len("/v1/prediction/") :].strip("/")
        if not rest:
            return None
        if rest.endswith("/cancel") and rest.count("/") == 1:
            return "cancel" if method == "POST" else None
        if "/" not in rest:
            return "get" if method == "GET" else None
        return None
    if path == "/v1/upload/presign" and method == "POST":
        return "presign"
    if path == "/v1/model" and method == "GET":
        return "model"
    if path == "/v1/executions" and method == "GET":
        return "executions"
    return None


_COUNTER_FOR_ROUTE = {
    "create": "create_requests",
    "get": "gets",
    "cancel": "cancels",
    "presign": "presigns",
    "upload": "uploads",
    "file": "file_downloads",
    "model": "model_gets",
    "executions": "executions",
}


def _count(counters: Counters, route: str | None) -> None:
    counters.requests += 1
    if route is not None:
        name = _COUNTER_FOR_ROUTE[route]
        setattr(counters, name, getattr(counters, name) + 1)


async def _drop_connection(send: Send) -> None:
    """Reset the TCP connection without a response, as a crashed proxy or a network fault would.

    uvicorn hands the outermost ASGI app its RequestResponseCycle.send bound method, whose
    object holds the asyncio transport. SO_LINGER 0 turns close into an RST, so the client
    sees a reset rather than a clean EOF that some clients would retry silently.
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("the 'drop' fault needs uvicorn's HTTP protocol (transport not reachable)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let connection_lost run, so uvicorn knows the client is gone and does not write a 500.
    for _ in range(3):
        await asyncio.sleep(0)


async def _send_body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_truncated(send: Send, captured: list[Message]) -> None:
    """The captured answer, its body cut to the first half and its length header to match."""
    body = b"".join(m.get("body", b"") for m in captured if m["type"] == "http.response.body")
    cut = body[: len(body) // 2]
    for message in captured:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
            await send({**message, "headers": [*headers, (b"content-length", str(len(cut)).encode())]})
    await send({"type": "http.response.body", "body": cut})


async def _drain(receive: Receive) -> None:
    """Read the request body so a faulted answer is not mistaken for a half-read request."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class SimulatorMiddleware:
    def __init__(self, app: ASGIApp, state: SimState, faults: FaultQueue) -> None:
        self.app = app
        self.state = state
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = classify_route(scope["method"], scope["path"])
        _count(self.state.counters, route)

        request_id = b""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id" and value:
                request_id = value[:200]
                break
        if not request_id:
            request_id = ("req_" + uuid.uuid4().hex).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        fault = self.faults.take_transport(route) if route is not None else None
        if fault is None:
            await self.app(scope, receive, send_with_id)
            return
        await self._apply(fault, scope, receive, send, send_with_id)

    async def _apply(self, fault: Fault, scope: Scope, receive: Receive, raw_send: Send, send: Send) -> None:
        captured: list[Message] = []
        if fault.after_processing or fault.kind == "truncate":

            async def capture(message: Message) -> None:
                captured.append(message)

            await self.app(scope, receive, capture)

        if fault.kind == "drop":
            await _drop_connection(raw_send)
        elif fault.kind == "delay":
            await asyncio.sleep(float(fault.params["seconds"]))
            if fault.after_processing:
                for message in captured:
                    await send(message)
            else:
                await self.app(scope, receive, send)
        elif fault.kind == "status":
            if not fault.after_processing:
                await _drain(receive)
            status = int(fault.params["status"])
            text = fault.params.get("message") or f"Simulated HTTP {status} (injected fault)"
            body = json.dumps({"error": text, "status": status}).encode()
            headers: list[tuple[bytes, bytes]] = []
            if fault.params.get("retry_after") is not None:
                headers.append((b"retry-after", str(fault.params["retry_after"]).encode()))
            await _send_body(send, status, body, headers)
        elif fault.kind == "truncate":
            await _send_truncated(send, captured)
        elif fault.kind == "malformed":
            if not fault.after_processing:
                await _drain(receive)
            await _send_body(send, 200, MALFORMED_BODY, [])
