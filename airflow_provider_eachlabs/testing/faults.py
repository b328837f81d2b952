"""Scripted failures, so the provider's retry, timeout and status handling can be tested for real.

Faults are queued per route and consumed one per request (or one per created prediction for the
outcome faults), which lets a test say "the next two polls fail with 503, then it works" without
timing tricks. The queue is shared between the test thread and the server's event loop, hence
the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OUTCOME_FAULTS",
    "ROUTES",
    "TRANSPORT_FAULTS",
    "Fault",
    "FaultQueue",
]

ROUTES = frozenset({"create", "get", "cancel", "presign", "upload", "file", "model", "executions"})
TRANSPORT_FAULTS = frozenset({"status", "drop", "delay", "malformed", "truncate"})
OUTCOME_FAULTS = frozenset({"status_variant", "never_finish", "fail"})

_FINAL_WORDS = frozenset({"error", "failed", "canceled", "cancelled", "success"})
_ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "retry_after", "after_processing", "message"}),
    "drop": frozenset({"after_processing"}),
    "delay": frozenset({"seconds", "after_processing"}),
    "malformed": frozenset({"after_processing"}),
    # The real answer with only the first half of its body, as a cut-off file on a CDN.
    "truncate": frozenset(),
    "status_variant": frozenset({"final", "running"}),
    "never_finish": frozenset(),
    "fail": frozenset({"error_code", "error_message"}),
}


@dataclass
class Fault:
    """One queued fault; `remaining` counts down as requests or predictions consume it."""

    route: str
    kind: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def after_processing(self) -> bool:
        return bool(self.params.get("after_processing", False))


def _check(route: str, kind: str, times: int, params: dict[str, Any]) -> None:
    """Typos in a test's fault script should fail the test at once, not silently do nothing."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {sorted(ROUTES)}")
    if kind not in _ALLOWED_PARAMS:
        raise ValueError(f"unknown fault {kind!r}; expected one of {sorted(_ALLOWED_PARAMS)}")
    if times < 1:
        raise ValueError("times must be >= 1")
    unknown = set(params) - _ALLOWED_PARAMS[kind]
    if unknown:
        raise ValueError(f"fault {kind!r} does not take {sorted(unknown)}")
    if kind in OUTCOME_FAULTS and route != "create":
        raise ValueError(f"fault {kind!r} scripts prediction outcomes; its route must be 'create'")
    if kind == "status":
        status = params.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise ValueError("fault 'status' needs status=<HTTP status code>")
    if kind == "delay":
        seconds = params.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError("fault 'delay' needs seconds=<non-negative number>")
    if kind == "status_variant":
        if "final" not in params and "running" not in params:
            raise ValueError("fault 'status_variant' needs final=... and/or running=...")
        if "final" in params and params["final"] not in _FINAL_WORDS:
            raise ValueError(f"final must be one of {sorted(_FINAL_WORDS)}")
        if "running" in params and not isinstance(params["running"], str):
            raise ValueError("running must be a string")


class FaultQueue:
    """FIFO of faults per route; transport faults and outcome faults are consumed separately."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transport: list[Fault] = []
        self._outcome: list[Fault] = []

    def add(self, route: str, kind: str, times: int = 1, **params: Any) -> None:
        _check(route, kind, times, params)
        fault = Fault(route=route, kind=kind, remaining=times, params=dict(params))
        with self._lock:
            (self._outcome if kind in OUTCOME_FAULTS else self._transport).append(fault)

    def clear(self) -> None:
        with self._lock:
            self._transport.clear()
            self._outcome.clear()

    @staticmethod
    def _take(queue: list[Fault], route: str) -> Fault | None:
        for fault in queue:
            if fault.route == route:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.remove(fault)
                return fault
        return None

    def take_transport(self, route: str) -> Fault | None:
        """The fault for the next request to `route`, if one is queued."""
        with self._lock:
            return self._take(self._transport, route)

    def take_outcomes(self) -> list[Fault]:
        """Outcome faults for the next created prediction: one of each kind queued, oldest first."""
        taken: list[Fault] = []
        with self._lock:
            for kind in sorted(OUTCOME_FAULTS):
                for fault in self._outcome:
                    if fault.kind == kind:
                        taken.append(fault)
                        break
            for fault in taken:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._outcome.remove(fault)
        return taken
