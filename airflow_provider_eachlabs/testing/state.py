"""Everything the simulator remembers: predictions, stored files, counters, per-key limits.

Status is derived from the clock on every read instead of being advanced by timers, so a test
that sleeps past `predict_seconds` always sees a terminal status, however busy the machine is.
State is touched by the server's event loop and read by the test thread; a lock guards the
compound updates (create checks + insert) and plain attribute reads are atomic enough.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "NON_TERMINAL",
    "Counters",
    "LimitExceeded",
    "PredictionRecord",
    "SimState",
    "StoredFile",
    "Upload",
    "iso",
]

NON_TERMINAL = "non-terminal"
STARTING_FRACTION = 0.1


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Counters:
    """Request counts, so tests can assert how many calls a client really made."""

    creates: dict[str, int] = field(default_factory=dict)
    create_requests: int = 0
    gets: int = 0
    cancels: int = 0
    presigns: int = 0
    uploads: int = 0
    file_downloads: int = 0
    model_gets: int = 0
    executions: int = 0
    requests: int = 0


@dataclass
class PredictionRecord:
    """One prediction. `status` is what a GET would report now (scripted words included)."""

    id: str
    model: str
    input: dict[str, Any]
    api_key: str
    created_at: float  # epoch seconds
    predict_seconds: float
    cost: float
    webhook_url: str | None = None
    webhook_secret: str | None = None
    running_word: str | None = None
    final_word: str | None = None
    never_finish: bool = False
    cancelled_at: float | None = None  # monotonic
    # Filled in by the worker once the result is known; published only at the deadline.
    outcome: str | None = None  # "success" | "failed"
    output: Any = None
    logs: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return math.inf if self.never_finish else self.started + self.predict_seconds

    def phase(self, now: float | None = None) -> str:
        """'starting' | 'processing' | 'finishing' (deadline passed, result pending) | 'cancelled' |
        'success' | 'failed' — the true state, before any scripted status words."""
        now = time.monotonic() if now is None else now
        if self.cancelled_at is not None:
            return "cancelled"
        if now < self.deadline:
            if now - self.started < STARTING_FRACTION * self.predict_seconds:
                return "starting"
            return "processing"
        if self.outcome is None:
            return "finishing"
        return self.outcome

    def is_terminal(self, now: float | None = None) -> bool:
        return self.phase(now) in ("cancelled", "success", "failed")

    def reported_status(self, now: float | None = None) -> str:
        phase = self.phase(now)
        if phase == "finishing":
            phase = "processing"
        if phase in ("starting", "processing"):
            return self.running_word or phase
        return self.final_word or phase

    @property
    def status(self) -> str:
        return self.reported_status()

    def run_time(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        end = min(now, self.deadline)
        if self.cancelled_at is not None:
            end = min(end, self.cancelled_at)
        return round(max(0.0, end - self.started), 3)

    def completed_at(self) -> float | None:
        if not self.is_terminal():
            return None
        return self.created_at + self.run_time()


@dataclass
class Upload:
    id: str
    content_type: str
    ext: str
    signature: str
    api_key: str
    upload_deadline: float  # monotonic
    expires_at: float  # epoch


@dataclass
class StoredFile:
    content_type: str
    data: bytes


class LimitExceeded(Exception):
    """A create refused before anything is created or billed."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class SimState:
    def __init__(
        self,
        *,
        api_keys: tuple[str, ...],
        predict_seconds: float,
        max_in_flight: int,
        creates_per_minute: int,
        balance: float | None,
        cost_per_prediction: float,
        mask_required: bool = False,
    ) -> None:
        self.api_keys = api_keys
        self.predict_seconds = predict_seconds
        self.max_in_flight = max_in_flight
        self.creates_per_minute = creates_per_minute
        self.balance = balance
        self.cost_per_prediction = cost_per_prediction
        self.mask_required = mask_required
        self.lock = threading.Lock()
        self.counters = Counters()
        self.predictions: dict[str, PredictionRecord] = {}
        self.uploads: dict[str, Upload] = {}
        # Keyed by the path under /files/, e.g. "uploads/<id>.png", "outputs/<id>.jpg".
        self.files: dict[str, StoredFile] = {}
        self._create_times: dict[str, collections.deque[float]] = {}

    def check_and_register(self, record: PredictionRecord) -> None:
        """Apply the per-key caps and the balance, then store the prediction, atomically.

        Raises LimitExceeded (429 with Retry-After, or 402) and stores nothing in that case.
        """
        now = time.monotonic()
        key = record.api_key
        with self.lock:
            window = self._create_times.setdefault(key, collections.deque())
            while window and window[0] <= now - 60.0:
                window.popleft()
            if len(window) >= self.creates_per_minute:
                wait = max(1, math.ceil(window[0] + 60.0 - now))
                raise LimitExceeded(
                    429, f"Rate limit exceeded: {self.creates_per_minute} creates per minute", wait
                )
            running = [p for p in self.predictions.values() if p.api_key == key and not p.is_terminal(now)]
            if len(running) >= self.max_in_flight:
                soonest = min(p.deadline for p in running)
                wait = 1 if math.isinf(soonest) else max(1, math.ceil(soonest - now))
                raise LimitExceeded(
                    429,
                    f"Too many concurrent predictions: at most {self.max_in_flight} in flight per key",
                    wait,
                )
            if self.balance is not None:
                if self.balance + 1e-9 < record.cost:
                    raise LimitExceeded(402, "Insufficient balance")
                self.balance = round(self.balance - record.cost, 10)
            window.append(now)
            record.started = now
            self.predictions[record.id] = record
            self.counters.creates[key] = self.counters.creates.get(key, 0) + 1
