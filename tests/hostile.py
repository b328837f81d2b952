"""A hostile API host for the tests: a small loopback HTTP server that answers whatever a test scripts.

The simulator answers the way the API should; this one answers the way a compromised, misconfigured
or impersonated host could: redirects elsewhere, ids that are paths, gzip bombs, bodies dripped one
byte at a time, broken headers. It records every request it receives (method, path, headers, body),
so a test can also show that nothing reached a second server.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HostileServer:
    """Answers by (method, path prefix); unscripted requests get a 404."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    base_url: str = ""

    def on(self, method: str, path: str, answer: Answer) -> None:
        self.answers[(method, path)] = answer

    def answer_for(self, method: str, path: str) -> Answer | None:
        matches = [key for key in self.answers if key[0] == method and path.startswith(key[1])]
        return self.answers[max(matches, key=lambda key: len(key[1]))] if matches else None


@contextmanager
def hostile_server() -> Iterator[HostileServer]:
    state = HostileServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.received.append(Received(self.command, self.path, dict(self.headers.items()), body))
            answer = state.answer_for(self.command, self.path)
            if answer is None:
                send(self, 404, b'{"error": "not scripted"}')
            else:
                answer(self)

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that hangs up on a hostile answer is the point, not a failure

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


# --- answers ---------------------------------------------------------------------------------------


def send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def json_answer(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return lambda handler: send(handler, status, json.dumps(body).encode(), headers)


def raw_answer(status: int, body: bytes, headers: dict[str, str]) -> Answer:
    return lambda handler: send(handler, status, body, headers)


def redirect(status: int, location: str) -> Answer:
    return lambda handler: send(handler, status, b"", {"Location": location})


def gzip_bomb(unpacked_bytes: int, status: int = 200) -> Answer:
    """A small gzip body that unpacks to ``unpacked_bytes`` of JSON-ish whitespace."""
    packed = gzip.compress(b"[" + b" " * unpacked_bytes + b"]", compresslevel=9)
    return raw_answer(status, packed, {"Content-Encoding": "gzip", "Content-Type": "application/json"})


def dripped(body: bytes, every_seconds: float, *, headers_too: bool = False) -> Answer:
    """The answer one byte at a time, each within any per-read timeout, so it never ends on its own."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        payload = head + body if headers_too else body
        if not headers_too:
            handler.wfile.write(head)
        try:
            for byte in payload:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(every_seconds)
        except OSError:
            pass  # the client gave up, as it should

    return answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
