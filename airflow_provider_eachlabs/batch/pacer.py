"""Creates paced under the API's two caps on the client, so that a batch alone on its key meets no 429.

The caps are per API key: at most ``max_in_flight`` predictions running and at most ``per_minute``
creates in any sliding minute. The pacer counts a prediction in flight from the moment its create is
sent until the batch has seen it end, which is never earlier than the API stops counting it; and it
counts a create in the minute from when its answer arrived, which is never earlier than the API
received it. Both errors are on the safe side, so the API's count can never exceed the caps.

A 429 can still come when someone else uses the same key. It is honoured (no create until its
``Retry-After`` has passed) and it shrinks the share of both caps the batch takes by a fifth; each
quiet minute gives a tenth back. Sans-IO: every method is told the time.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW_SECONDS = 60.0
SHRINK_ON_429 = 0.8
RECOVER_PER_QUIET_MINUTE = 0.1
SMALLEST_SHARE = 0.1


class Pacer:
    """When the next create may be sent.

    :param max_in_flight: predictions running at once, at most.
    :param per_minute: creates in any sliding minute, at most.
    """

    def __init__(self, max_in_flight: int, per_minute: int) -> None:
        if max_in_flight < 1 or per_minute < 1:
            raise ValueError("max_in_flight and per_minute must be at least 1")
        self.max_in_flight = max_in_flight
        self.per_minute = per_minute
        self.in_flight = 0
        self.rate_limited = 0
        self._answered: deque[float] = deque()
        self._sending = 0
        self._paused_until = 0.0
        self._share = 1.0
        self._last_429: float | None = None

    @property
    def in_flight_cap(self) -> int:
        return max(1, math.floor(self.max_in_flight * self._share))

    @property
    def per_minute_cap(self) -> int:
        return max(1, math.floor(self.per_minute * self._share))

    def delay(self, now: float) -> float | None:
        """Seconds until a create may be sent (0: now), or None while every slot is taken: then only
        a prediction ending frees one, and no amount of waiting alone does."""
        self._recover(now)
        if now < self._paused_until:
            return self._paused_until - now
        if self.in_flight >= self.in_flight_cap:
            return None
        # Compared as ``answer + WINDOW <= now``, the very sum the delay below is made of: with
        # ``answer <= now - WINDOW`` rounding could keep a create in the minute yet report 0.0 (send).
        while self._answered and self._answered[0] + WINDOW_SECONDS <= now:
            self._answered.popleft()
        if len(self._answered) + self._sending < self.per_minute_cap:
            return 0.0
        if not self._answered:  # the minute is full of creates still being sent
            return None
        return self._answered[0] + WINDOW_SECONDS - now

    def sending(self) -> None:
        """A create is about to be sent: it holds a slot and a place in the minute from now on."""
        self.in_flight += 1
        self._sending += 1

    def created(self, now: float) -> None:
        """The create was answered with a prediction: it counts in the minute from ``now``."""
        self._sending -= 1
        self._answered.append(now)

    def not_created(self, now: float, retry_after: float | None = None) -> None:
        """The create made nothing (a 429, or a refusal): its slot is free again. A 429 (give its
        ``retry_after``, 1 s when the API sent none) pauses every create and shrinks the batch's share."""
        self._sending -= 1
        self.in_flight -= 1
        if retry_after is not None:
            self.rate_limited += 1
            self._paused_until = max(self._paused_until, now + max(retry_after, 0.0))
            self._share = max(SMALLEST_SHARE, self._share * SHRINK_ON_429)
            self._last_429 = now

    def finished(self) -> None:
        """The batch saw a prediction end: its slot is free."""
        self.in_flight -= 1

    def _recover(self, now: float) -> None:
        if self._last_429 is not None and self._share < 1.0 and now - self._last_429 >= WINDOW_SECONDS:
            self._share = min(1.0, self._share + RECOVER_PER_QUIET_MINUTE)
            self._last_429 = now
