"""The one retry policy: what is retried, how long it waits, when it gives up, and what it logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from airflow_provider_eachlabs import api, transport
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsSettings

SETTINGS = EachlabsSettings(
    host="https://api.example", api_key="k", max_retries=3, backoff_initial=0.01, backoff_max=0.05
)
RATE_LIMITED = api.EachlabsRateLimitError("slow down", status_code=429, retry_after=0.02)
SERVER_ERROR = api.EachlabsServerError("boom", status_code=503)


def test_retry_after_is_honoured_up_to_backoff_max():
    assert transport.retry_delay(SETTINGS, RATE_LIMITED, 1, idempotent=False) == 0.02
    long_wait = api.EachlabsRateLimitError("later", status_code=429, retry_after=3600)
    assert transport.retry_delay(SETTINGS, long_wait, 1, idempotent=True) == 0.05


def test_backoff_is_jittered_below_an_exponential_ceiling():
    settings = EachlabsSettings(host="h", api_key="k", max_retries=9, backoff_initial=1.0, backoff_max=6.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 6.0), (9, 6.0)]:
        delays = [transport.retry_delay(settings, SERVER_ERROR, attempt, idempotent=True) for _ in range(200)]
        assert None not in delays
        assert all(0 <= d <= ceiling for d in delays if d is not None), attempt
        assert len(set(delays)) > 100  # drawn at random, not a fixed step


def test_gives_up_after_max_retries_and_on_unsafe_repeats():
    assert transport.retry_delay(SETTINGS, SERVER_ERROR, 3, idempotent=True) is not None
    assert transport.retry_delay(SETTINGS, SERVER_ERROR, 4, idempotent=True) is None
    # A create that may have reached the server is never sent again blindly.
    assert transport.retry_delay(SETTINGS, SERVER_ERROR, 1, idempotent=False) is None
    lost = api.EachlabsConnectionError("reset", request_sent=True)
    assert transport.retry_delay(SETTINGS, lost, 1, idempotent=False) is None
    refused = api.EachlabsConnectionError("refused", request_sent=False)
    assert transport.retry_delay(SETTINGS, refused, 1, idempotent=False) is not None
    bad_input = api.EachlabsInvalidInputError("bad", status_code=422)
    assert transport.retry_delay(SETTINGS, bad_input, 1, idempotent=True) is None


def test_sync_loop_retries_then_returns_and_logs_each_retry(caplog: pytest.LogCaptureFixture):
    answers: list[Exception | str] = [SERVER_ERROR, RATE_LIMITED, "done"]

    def attempt() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    log = logging.getLogger("test.retry")
    with caplog.at_level(logging.WARNING, logger="test.retry"):
        assert transport.call_with_retries(attempt, SETTINGS, idempotent=True, log=log) == "done"
    assert [r.getMessage().split(";")[1].split(" in ")[0] for r in caplog.records] == [
        " retry 1 of 3",
        " retry 2 of 3",
    ]
    assert "HTTP 503: boom" in caplog.records[0].getMessage()


def test_async_loop_raises_the_last_error_once_the_retries_are_spent():
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        raise SERVER_ERROR

    with pytest.raises(api.EachlabsServerError, match="HTTP 503: boom"):
        asyncio.run(transport.acall_with_retries(attempt, SETTINGS, log=logging.getLogger("test.retry")))
    assert calls == SETTINGS.max_retries + 1


def test_errors_that_are_not_the_apis_are_not_retried():
    calls = 0

    def attempt() -> str:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not a transient failure")

    with pytest.raises(ValueError, match="a bug"):
        transport.call_with_retries(attempt, SETTINGS, idempotent=True, log=logging.getLogger("t"))
    assert calls == 1
