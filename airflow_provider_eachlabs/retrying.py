"""The one retry layer, on tenacity: what is retried, how long it waits, and when it stops.

Every request of the provider, sync on workers and async in the triggerer, goes through here, and
nothing else retries a request. The policy is tenacity's parts: a retry predicate read from the
error (``should_retry``), a wait that honours ``Retry-After`` and is otherwise full-jitter
exponential backoff, a stop that is the attempt count *or* the caller's deadline, and a log line
before each sleep. With a deadline (a wait for a prediction has one), no sleep ends after it: the
last attempt is made at the deadline, then the error is raised for the caller to turn into a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from airflow_provider_eachlabs.exceptions import (
    EachlabsConnectionError,
    EachlabsRateLimitError,
    EachlabsResponseError,
    EachlabsServerError,
    is_final,
)

if TYPE_CHECKING:
    from airflow_provider_eachlabs.settings import EachlabsSettings

T = TypeVar("T")


def should_retry(error: BaseException, *, resendable: bool, rate_limits: bool = True) -> bool:
    """Whether sending the same request again is safe and may help.

    429 always (a rejected request did nothing), unless the caller paces itself (``rate_limits``
    False: a batch hands its 429s to its pacer, which holds every create, not only this one).
    5xx, an unreadable answer and a lost connection only
    when repeating the request is harmless, or when the request provably never left: a create that
    may have reached the server is never re-sent blindly, as it could buy a second prediction.
    Final errors (other 4xx, unsafe answers) never.
    """
    if is_final(error):
        return False
    if isinstance(error, EachlabsRateLimitError):
        return rate_limits
    if isinstance(error, EachlabsConnectionError):
        return resendable or not error.request_sent
    return resendable and isinstance(error, (EachlabsServerError, EachlabsResponseError))


class wait_retry_after_or_jitter(tenacity.wait.wait_base):
    """The server's ``Retry-After`` (up to ``backoff_max``), else a random wait below an exponential
    ceiling ("full jitter", so tasks that failed together do not all come back in the same second);
    never past ``deadline``."""

    def __init__(self, settings: EachlabsSettings, deadline: float | None = None) -> None:
        self._jitter = tenacity.wait_random_exponential(
            multiplier=settings.backoff_initial, max=settings.backoff_max
        )
        self._longest = settings.backoff_max
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        assert retry_state.outcome is not None  # tenacity waits only after an attempt
        error = retry_state.outcome.exception()
        retry_after = getattr(error, "retry_after", None)
        delay = (
            float(min(retry_after, self._longest)) if retry_after is not None else self._jitter(retry_state)
        )
        if self._deadline is None:
            return delay
        return max(0.0, min(delay, self._deadline - time.time()))


class stop_at_deadline(tenacity.stop.stop_base):
    """Stop once the caller's deadline (epoch seconds) has come; never without one."""

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._deadline is not None and time.time() >= self._deadline


def _policy(
    settings: EachlabsSettings,
    *,
    resendable: bool,
    deadline: float | None,
    log: Any,
    rate_limits: bool = True,
) -> dict[str, Any]:
    """tenacity's arguments for one request: retry predicate, wait, stop and before-sleep log."""

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        assert retry_state.outcome is not None  # tenacity sleeps only after an attempt
        error = retry_state.outcome.exception()
        log.warning(
            "Eachlabs request failed (%s); retry %d of %d in %.1fs",
            error,
            retry_state.attempt_number,
            settings.max_retries,
            retry_state.upcoming_sleep,
        )

    return {
        "retry": tenacity.retry_if_exception(
            lambda error: should_retry(error, resendable=resendable, rate_limits=rate_limits)
        ),
        "wait": wait_retry_after_or_jitter(settings, deadline),
        "stop": tenacity.stop_after_attempt(settings.max_retries + 1) | stop_at_deadline(deadline),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _count_rate_limit(error: BaseException, tags: Mapping[str, str] | None) -> None:
    """A 429 is counted where it is met: here, the one layer every request goes through."""
    if isinstance(error, EachlabsRateLimitError):
        from airflow_provider_eachlabs import metrics

        metrics.rate_limited(tags)


def call_with_retries(
    attempt: Callable[[], T],
    settings: EachlabsSettings,
    *,
    resendable: bool,
    log: Any,
    deadline: float | None = None,
    rate_limits: bool = True,
    metric_tags: Mapping[str, str] | None = None,
) -> T:
    """Run ``attempt`` until it returns, or the policy gives up and its last error is raised.

    The first attempt runs before any retry machinery is built; if it fails, its error is handed to
    tenacity as attempt 1, so tenacity alone decides whether, when and how often to try again.
    ``log`` is the caller's logger (stdlib or structlog); ``deadline`` is epoch seconds;
    ``rate_limits`` False hands a 429 to the caller at once (see ``should_retry``). Every 429 met is
    counted in the metrics, with ``metric_tags``.
    """
    try:
        return attempt()
    except Exception as error:
        first: Exception = error
        _count_rate_limit(error, metric_tags)
    replayed = False

    def first_failure_then_attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first
        try:
            return attempt()
        except Exception as error:
            _count_rate_limit(error, metric_tags)
            raise

    policy = _policy(settings, resendable=resendable, deadline=deadline, log=log, rate_limits=rate_limits)
    return tenacity.Retrying(**policy)(first_failure_then_attempt)


async def acall_with_retries(
    attempt: Callable[[], Awaitable[T]],
    settings: EachlabsSettings,
    *,
    resendable: bool,
    log: Any,
    deadline: float | None = None,
    metric_tags: Mapping[str, str] | None = None,
) -> T:
    """``call_with_retries`` on the event loop: tenacity's ``AsyncRetrying``, which sleeps with asyncio.

    Building ``AsyncRetrying`` and running its action chain costs about a fifth of a poll's CPU, and a
    thousand waiting triggers poll hundreds of times a second, almost always successfully at the first
    attempt: that attempt runs on its own, and tenacity takes over from its failure.
    """
    try:
        return await attempt()
    except Exception as error:
        first: Exception = error
        _count_rate_limit(error, metric_tags)
    replayed = False

    async def first_failure_then_attempt() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first
        try:
            return await attempt()
        except Exception as error:
            _count_rate_limit(error, metric_tags)
            raise

    retrying = tenacity.AsyncRetrying(**_policy(settings, resendable=resendable, deadline=deadline, log=log))
    result: T = await retrying(first_failure_then_attempt)
    return result
