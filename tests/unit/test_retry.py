"""The one retry layer, on tenacity: what is retried, how long it waits, when it stops, what it logs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import tenacity

from airflow_provider_eachlabs import api, retrying
from airflow_provider_eachlabs.retrying import stop_at_deadline, wait_retry_after_or_jitter
from airflow_provider_eachlabs.settings import EachlabsSettings

SETTINGS = EachlabsSettings(
    host="https://api.example", api_key="k", max_retries=3, backoff_initial=0.01, backoff_max=0.05
)
RATE_LIMITED = api.EachlabsRateLimitError("slow down", status_code=429, retry_after=0.02)
SERVER_ERROR = api.EachlabsServerError("boom", status_code=503)


def failed_state(error: BaseException, attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(error), error, None))
    return state


def test_retry_after_is_honoured_up_to_backoff_max():
    assert wait_retry_after_or_jitter(SETTINGS)(failed_state(RATE_LIMITED, 1)) == 0.02
    long_wait = api.EachlabsRateLimitError("later", status_code=429, retry_after=3600)
    assert wait_retry_after_or_jitter(SETTINGS)(failed_state(long_wait, 1)) == 0.05


def test_backoff_is_jittered_below_an_exponential_ceiling():
    settings = EachlabsSettings(host="h", api_key="k", max_retries=9, backoff_initial=1.0, backoff_max=6.0)
    wait = wait_retry_after_or_jitter(settings)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 6.0), (9, 6.0)]:
        delays = [wait(failed_state(SERVER_ERROR, attempt)) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays), attempt
        assert len(set(delays)) > 100  # drawn at random, not a fixed step


def test_the_backoff_ceiling_starts_at_the_connections_backoff_initial():
    settings = EachlabsSettings(host="h", api_key="k", max_retries=9, backoff_initial=0.001, backoff_max=6.0)
    wait = wait_retry_after_or_jitter(settings)
    assert all(0 <= wait(failed_state(SERVER_ERROR, 1)) <= 0.001 for _ in range(50))


def test_a_caller_that_paces_itself_gets_its_429_at_once():
    """A batch hands 429s to its pacer: one attempt, the rate limit raised, no wait."""
    calls = 0

    def attempt() -> str:
        nonlocal calls
        calls += 1
        raise RATE_LIMITED

    with pytest.raises(api.EachlabsRateLimitError):
        retrying.call_with_retries(
            attempt, SETTINGS, resendable=True, log=logging.getLogger("t"), rate_limits=False
        )
    assert calls == 1


def test_no_wait_ends_after_the_deadline():
    long_wait = api.EachlabsRateLimitError("later", status_code=429, retry_after=60)
    settings = EachlabsSettings(host="h", api_key="k", backoff_max=60)
    deadline = time.time() + 2.0
    assert 1.5 < wait_retry_after_or_jitter(settings, deadline)(failed_state(long_wait, 1)) <= 2.0
    assert wait_retry_after_or_jitter(settings, time.time() - 5)(failed_state(long_wait, 1)) == 0.0
    assert stop_at_deadline(time.time() - 0.01)(failed_state(long_wait, 1))
    assert not stop_at_deadline(time.time() + 60)(failed_state(long_wait, 1))
    assert not stop_at_deadline(None)(failed_state(long_wait, 1))


def test_the_request_and_the_error_decide_what_is_sent_again():
    assert retrying.should_retry(SERVER_ERROR, resendable=True)
    # A create that may have reached the server is never sent again blindly.
    assert not retrying.should_retry(SERVER_ERROR, resendable=False)
    assert not retrying.should_retry(
        api.EachlabsConnectionError("reset", request_sent=True), resendable=False
    )
    assert retrying.should_retry(api.EachlabsConnectionError("refused", request_sent=False), resendable=False)
    assert not retrying.should_retry(api.EachlabsInvalidInputError("bad", status_code=422), resendable=True)
    assert not retrying.should_retry(
        api.EachlabsUnsafeAnswerError("redirect", status_code=302), resendable=True
    )


def test_sync_retries_then_returns_and_logs_each_retry(caplog: pytest.LogCaptureFixture):
    answers: list[Exception | str] = [SERVER_ERROR, RATE_LIMITED, "done"]

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    log = logging.getLogger("test.retry")
    with caplog.at_level(logging.WARNING, logger="test.retry"):
        assert retrying.call_with_retries(attempt, SETTINGS, resendable=True, log=log) == "done"
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(";")[1].split(" in ")[0] for m in messages] == [" retry 1 of 3", " retry 2 of 3"]
    assert messages[0].startswith("Eachlabs request failed (HTTP 503: boom); retry 1 of 3 in ")
    assert (
        messages[1] == "Eachlabs request failed (HTTP 429: slow down); retry 2 of 3 in 0.0s"
    )  # Retry-After 0.02 s


def test_async_raises_the_last_error_once_the_retries_are_spent():
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise SERVER_ERROR

    with pytest.raises(api.EachlabsServerError, match="HTTP 503: boom"):
        asyncio.run(
            retrying.acall_with_retries(
                attempt, SETTINGS, resendable=True, log=logging.getLogger("test.retry")
            )
        )
    assert calls == SETTINGS.max_retries + 1


def test_a_deadline_stops_the_retries_at_the_deadline_itself():
    settings = EachlabsSettings(host="h", api_key="k", max_retries=50, backoff_max=60)
    calls: list[float] = []
    rate_limited = api.EachlabsRateLimitError("slow down", status_code=429, retry_after=60)

    def attempt() -> str:
        calls.append(time.monotonic())
        raise rate_limited

    started = time.monotonic()
    with pytest.raises(api.EachlabsRateLimitError):
        retrying.call_with_retries(
            attempt, settings, resendable=True, log=logging.getLogger("t"), deadline=time.time() + 0.5
        )
    assert len(calls) == 2  # the first try, then one more at the deadline, not 60 s later
    assert 0.45 < calls[1] - started < 2.0


def test_errors_that_are_not_the_apis_are_not_retried():
    calls = 0

    def attempt() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not a transient failure")

    with pytest.raises(ValueError, match="a bug"):
        retrying.call_with_retries(attempt, SETTINGS, resendable=True, log=logging.getLogger("t"))
    assert calls == 1
