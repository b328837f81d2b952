"""When to look at each prediction of a batch: close to when this batch's predictions really end.

A single fill looks once a second after its model's expected time (``polling.PollSchedule``); a
batch at the in-flight cap cannot afford that, because every second a finished prediction goes
unseen is a second its slot stays empty, and the next create waits for that slot. So the batch
learns how long its predictions take: until three have ended it looks every ``LEARNING_INTERVAL``
from the start (a model page's estimate can be far off, and a first wave that waits for it would
cost the whole estimate); then it looks first just before the median run time the API reported,
every ``TIGHT_INTERVAL`` until well past it, then less and less often, like the single fill. A
fixed ``poll_interval`` overrides all of this.
"""

from __future__ import annotations

import statistics
from collections import deque

TIGHT_INTERVAL = 0.25
EARLIEST_LOOK = 0.5
LEARNING_INTERVAL = 0.5
LONGEST_INTERVAL = 30.0
LEARNED_FROM = 50


class LearnedSchedule:
    """Seconds until the next look at a prediction, from the durations of those that ended."""

    def __init__(self, expected_seconds: float, interval: float | None = None) -> None:
        self.expected_seconds = expected_seconds
        self.interval = interval
        self._durations: deque[float] = deque(maxlen=LEARNED_FROM)

    @property
    def learned(self) -> bool:
        return len(self._durations) >= 3

    @property
    def typical(self) -> float:
        """How long a prediction of this batch takes: learned once three have ended."""
        return statistics.median(self._durations) if self.learned else self.expected_seconds

    def observe(self, seconds: float) -> None:
        """A prediction ran ``seconds`` (as the API reported it, else as seen from here)."""
        self._durations.append(seconds)

    def delay(self, elapsed: float) -> float:
        """Seconds from now until the next look at a prediction created ``elapsed`` seconds ago."""
        if self.interval is not None:
            return self.interval
        if not self.learned:
            return max(EARLIEST_LOOK - elapsed, LEARNING_INTERVAL if elapsed >= EARLIEST_LOOK else 0.0)
        typical = self.typical
        first = max(EARLIEST_LOOK, typical - 2 * TIGHT_INTERVAL)
        if elapsed < first:
            return first - elapsed
        tight_until = 2 * typical + 2.0
        if elapsed < tight_until:
            return TIGHT_INTERVAL
        return min(LONGEST_INTERVAL, max(TIGHT_INTERVAL, (elapsed - tight_until) * 0.5))
