"""When to look again, and when to stop: the one polling decision the sync loop and the trigger share.

Sans-IO: it is told what a GET returned (or how it failed) and the time, and answers with the next
step. Deadlines are wall-clock epoch seconds, not monotonic, because a trigger carries its deadline
through ``serialize()`` into another process after a triggerer restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_eachlabs.api import Prediction
from airflow_provider_eachlabs.exceptions import EachlabsError, is_final

DEFAULT_EXPECTED_SECONDS = 5.0
MODEL_EXPECTED_SECONDS = {"flux-fill-pro": 9.0}
_SHORT_INTERVAL = 1.0
_LONGEST_INTERVAL = 30.0


def expected_seconds_for(model: str | None) -> float:
    """The model page's processing-time estimate, used to place the first look."""
    return MODEL_EXPECTED_SECONDS.get(model or "", DEFAULT_EXPECTED_SECONDS)


@dataclass(frozen=True)
class PollSchedule:
    """Fixed ``interval`` when given; otherwise adaptive around the model's expected time.

    Adaptive: the first look comes one second before the expected finish, then every second until
    three times the expected time, then intervals grow by half each look up to 30 s, so a long run
    does not cost hundreds of GETs.
    """

    interval: float | None = None
    expected_seconds: float = DEFAULT_EXPECTED_SECONDS

    @property
    def first_look(self) -> float:
        """Seconds after the create at which the adaptive schedule's first GET is due."""
        return max(_SHORT_INTERVAL, self.expected_seconds - _SHORT_INTERVAL)

    def first_delay(self, elapsed: float) -> float:
        """Seconds before the first GET of a wait that begins ``elapsed`` seconds after the create.

        A fixed interval is the time between looks, and the first one starts with the wait. The
        adaptive first look is a time after the create: a wait that begins after it was due (the
        triggerer picked the trigger up late, restarted, or a retry re-attached) looks at once
        instead of one more interval later.
        """
        if self.interval is not None:
            return self.interval
        return max(0.0, self.first_look - elapsed)

    def delay(self, elapsed: float) -> float:
        """Seconds to wait before the next GET, ``elapsed`` seconds after the create."""
        if self.interval is not None:
            return self.interval
        if elapsed < self.first_look:
            return self.first_look - elapsed
        steady_until = 3 * self.expected_seconds
        if elapsed < steady_until:
            return _SHORT_INTERVAL
        return min(_LONGEST_INTERVAL, max(_SHORT_INTERVAL, (elapsed - steady_until) * 0.5))


@dataclass(frozen=True)
class Step:
    """What to do next. ``done`` carries the terminal prediction; ``timed_out`` ends the wait."""

    wait: float = 0.0
    done: Prediction | None = None
    timed_out: bool = False
    note: str | None = None


class PollLoop:
    """State of one wait: the last status seen and the deadline.

    Transient failures of a status request are not retried here: the one retry layer under the hook
    retries them, bounded by this loop's deadline, and hands over only what it gave up on.
    """

    def __init__(
        self, prediction_id: str, *, started_at: float, deadline: float, schedule: PollSchedule
    ) -> None:
        self.prediction_id = prediction_id
        self.started_at = started_at
        self.deadline = deadline
        self.schedule = schedule
        self.last_status: str | None = None
        self._warned_unknown = False

    def first_wait(self, now: float) -> float:
        """The wait before the first GET (zero once the first look is already due)."""
        return self._bounded(self.schedule.first_delay(now - self.started_at), now)

    def on_prediction(self, prediction: Prediction, now: float) -> Step:
        elapsed = now - self.started_at
        note = None
        if prediction.status != self.last_status:
            note = f"Prediction {self.prediction_id} is {prediction.status!r} after {elapsed:.1f}s"
            if prediction.known_status is None and not self._warned_unknown:
                self._warned_unknown = True
                note += " (a status the provider does not know: treated as still running)"
            self.last_status = prediction.status
        if prediction.is_terminal:
            return Step(done=prediction, note=note)
        if now >= self.deadline:
            return Step(timed_out=True, note=note)
        return Step(wait=self._bounded(self.schedule.delay(elapsed), now), note=note)

    def on_error(self, error: EachlabsError, now: float) -> Step:
        """A status request the retry layer gave up on: at the deadline a transient failure is the
        timeout it caused; anything else is raised."""
        if is_final(error) or now < self.deadline:
            raise error
        return Step(
            timed_out=True, note=f"Polling prediction {self.prediction_id} failed at the deadline ({error})"
        )

    def _bounded(self, wait: float, now: float) -> float:
        """Never sleep past the deadline: the last look happens at the deadline itself."""
        return max(0.0, min(wait, self.deadline - now))
