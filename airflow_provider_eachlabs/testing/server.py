"""EachlabsSimulator: the simulated API served over real HTTP from a background thread.

A real socket (not an in-process ASGI transport) is the point: the provider's hooks, triggers
and retry logic must be exercised with their real HTTP clients, timeouts and connection errors.
fastapi, uvicorn and Pillow are imported in start() so importing this package stays cheap.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

from airflow_provider_eachlabs.testing.faults import FaultQueue
from airflow_provider_eachlabs.testing.state import Counters, PredictionRecord, SimState, StoredFile

__all__ = ["EachlabsSimulator"]


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class EachlabsSimulator:
    """A local stand-in for https://api.eachlabs.ai, for tests, demos and benchmarks."""

    def __init__(
        self,
        api_key: str | Sequence[str] = "sim-key",
        predict_seconds: float = 9.0,
        host: str = "127.0.0.1",
        port: int = 0,
        max_in_flight: int = 10,
        creates_per_minute: int = 100,
        balance: float | None = None,
        cost_per_prediction: float = 0.05,
        reject_word: str | None = "forbidden",
        mask_required: bool = False,
    ) -> None:
        keys = (api_key,) if isinstance(api_key, str) else tuple(api_key)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("api_key must be a non-empty string or a sequence of them")
        if predict_seconds < 0:
            raise ValueError("predict_seconds must be >= 0")
        self.host = host
        self.port = port
        self.reject_word = reject_word
        self._state = SimState(
            api_keys=keys,
            predict_seconds=predict_seconds,
            max_in_flight=max_in_flight,
            creates_per_minute=creates_per_minute,
            balance=balance,
            cost_per_prediction=cost_per_prediction,
            mask_required=mask_required,
        )
        self._faults = FaultQueue()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._engine: Any = None
        self._base_url: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> EachlabsSimulator:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        import uvicorn

        from airflow_provider_eachlabs.testing.app import Engine, build_app
        from airflow_provider_eachlabs.testing.middleware import SimulatorMiddleware

        # Binding here (not in uvicorn) makes the port known before the thread starts, and lets
        # port=0 pick a free port without a race.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        self._base_url = f"http://{_format_host(self.host)}:{self.port}"

        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="eachlabs-sim-fill")
        self._engine = Engine(
            state=self._state,
            faults=self._faults,
            executor=self._executor,
            reject_word=self.reject_word,
            base_url=self._base_url,
        )
        app = SimulatorMiddleware(build_app(self._engine), self._state, self._faults)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="eachlabs-simulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("Eachlabs simulator failed to start (see log output)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Eachlabs simulator did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._server = None
        self._thread = None
        self._executor = None

    def __enter__(self) -> EachlabsSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """e.g. "http://127.0.0.1:PORT", no trailing slash; only known once started."""
        if self._base_url is None:
            raise RuntimeError("start() the simulator before asking for its base_url")
        return self._base_url

    @property
    def counters(self) -> Counters:
        return self._state.counters

    def reset_counters(self) -> None:
        self._state.counters = Counters()

    @property
    def predictions(self) -> dict[str, PredictionRecord]:
        """A snapshot of id -> record; the records themselves are live."""
        return dict(self._state.predictions)

    @property
    def balance(self) -> float | None:
        """What is left of the configured balance (None = unlimited)."""
        return self._state.balance

    @property
    def api_keys(self) -> tuple[str, ...]:
        return self._state.api_keys

    def add_file(self, data: bytes, content_type: str = "image/png", name: str | None = None) -> str:
        """Store a file as if uploaded and return its public URL, for tests that skip presign."""
        import uuid

        from airflow_provider_eachlabs.testing.app import CONTENT_TYPES

        ext = CONTENT_TYPES.get(content_type, "bin")
        path = f"uploads/{name or uuid.uuid4()}.{ext}"
        self._state.files[path] = StoredFile(content_type, data)
        return f"{self.base_url}/files/{path}"

    def file_bytes(self, url: str) -> bytes | None:
        """The bytes behind one of the simulator's file URLs, without an HTTP request."""
        prefix = self.base_url + "/files/"
        if not url.startswith(prefix):
            return None
        stored = self._state.files.get(url[len(prefix) :].split("?", 1)[0])
        return None if stored is None else stored.data

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, route: str, fault: str, times: int = 1, **params: Any) -> None:
        """Script the next `times` requests to `route` (or predictions, for outcome faults)."""
        self._faults.add(route, fault, times, **params)

    def clear_faults(self) -> None:
        self._faults.clear()
