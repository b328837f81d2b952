"""The one polling decision shared by the sync loop and the trigger."""

from __future__ import annotations

import pytest

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.api import Prediction
from airflow_provider_eachlabs.polling import PollLoop, PollSchedule, expected_seconds_for


def loop(deadline: float = 100.0, interval: float | None = 1.0) -> PollLoop:
    return PollLoop("p1", started_at=0.0, deadline=deadline, schedule=PollSchedule(interval, 9.0))


def test_adaptive_schedule_looks_first_just_before_the_expected_time_then_every_second():
    schedule = PollSchedule(None, expected_seconds_for("flux-fill-pro"))
    assert schedule.delay(0.0) == 8.0
    assert schedule.delay(8.0) == 1.0
    assert schedule.delay(26.0) == 1.0


def test_a_wait_counts_from_the_create_and_says_how_long_it_has_been():
    """Two seconds after the create, the adaptive first look (8 s for a 9 s model) is 6 s away."""
    wait = PollLoop("p1", started_at=1000.0, deadline=2000.0, schedule=PollSchedule(None, 9.0))
    step = wait.on_prediction(Prediction(id="p1", status="processing"), now=1002.0)
    assert (step.wait, step.note) == (6.0, "Prediction p1 is 'processing' after 2.0s")


def test_adaptive_schedule_backs_off_for_long_runs_up_to_thirty_seconds():
    schedule = PollSchedule(None, 9.0)
    assert schedule.delay(37.0) == 5.0
    assert schedule.delay(3600.0) == 30.0


@pytest.mark.parametrize(
    ("interval", "begins_after", "first_wait"),
    [
        (None, 0.0, 8.0),
        (None, 1.5, 6.5),
        (None, 8.0, 0.0),
        (None, 40.0, 0.0),
        (5.0, 2.0, 5.0),
        (5.0, 7.0, 5.0),
    ],
)
def test_a_late_wait_looks_at_once_when_the_adaptive_first_look_is_due(
    interval: float | None, begins_after: float, first_wait: float
):
    """The adaptive first look is a time after the create; a fixed interval starts with the wait."""
    waiting = PollLoop("p1", started_at=100.0, deadline=1e9, schedule=PollSchedule(interval, 9.0))
    assert waiting.first_wait(100.0 + begins_after) == first_wait


def test_fixed_interval_is_kept():
    assert PollSchedule(2.5, 9.0).delay(0.0) == 2.5


def test_terminal_prediction_ends_the_wait_with_a_status_note():
    step = loop().on_prediction(Prediction(id="p1", status="success"), now=3.0)
    assert step.done is not None and step.done.status == "success"
    assert step.note == "Prediction p1 is 'success' after 3.0s"


def test_status_note_only_when_the_status_changes():
    poll = loop()
    assert poll.on_prediction(Prediction(id="p1", status="processing"), 1.0).note is not None
    assert poll.on_prediction(Prediction(id="p1", status="processing"), 2.0).note is None


def test_unknown_status_keeps_polling_and_warns_once():
    poll = loop()
    first = poll.on_prediction(Prediction(id="p1", status="mystery"), 1.0)
    assert first.done is None and first.wait == 1.0
    assert first.note is not None and "does not know" in first.note
    poll.on_prediction(Prediction(id="p1", status="processing"), 2.0)
    again = poll.on_prediction(Prediction(id="p1", status="mystery"), 3.0)
    assert again.note is not None and "does not know" not in again.note


def test_wait_never_passes_the_deadline_and_the_deadline_times_out():
    poll = loop(deadline=10.0, interval=5.0)
    assert poll.on_prediction(Prediction(id="p1", status="processing"), 7.0).wait == 3.0
    assert poll.on_prediction(Prediction(id="p1", status="processing"), 10.0).timed_out


def test_the_look_at_the_deadline_still_says_what_it_saw():
    """The last look may be the first to see a status; the timeout step carries its note."""
    step = loop(deadline=10.0, interval=5.0).on_prediction(Prediction(id="p1", status="queued"), 10.0)
    assert step.timed_out and step.note == "Prediction p1 is 'queued' after 10.0s"


def test_a_transient_error_the_retries_gave_up_on_is_raised_before_the_deadline():
    server_error = api.EachlabsServerError("boom", status_code=502)
    with pytest.raises(api.EachlabsServerError):
        loop(deadline=10.0).on_error(server_error, 3.0)


def test_a_transient_error_at_the_deadline_is_the_timeout_it_caused():
    rate_limited = api.EachlabsRateLimitError("slow down", status_code=429, retry_after=60)
    step = loop(deadline=10.0).on_error(rate_limited, 10.0)
    assert step.timed_out
    assert step.note is not None and "HTTP 429" in step.note


def test_final_errors_are_raised_at_once_even_at_the_deadline():
    with pytest.raises(api.EachlabsAuthError):
        loop(deadline=10.0).on_error(api.EachlabsAuthError("bad key", status_code=401), 10.0)
