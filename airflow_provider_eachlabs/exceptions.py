"""The errors this provider raises: the one public place to catch them from.

Every class says whether it is *final*: whether a task retry could ever help. A wrong key, a
spent balance, bad input, a content-policy rejection or an answer that breaks a safety rule stay
the same on the next try, so the operators turn them into ``AirflowFailException`` at once (one
wrapper, reading ``is_final``) instead of spending the task's retries and retry delays on them.
Transient ones (429, 5xx, a lost connection, a timeout) stay retryable.

Nothing here imports Airflow or an HTTP library.
"""

from __future__ import annotations

import json
from typing import Any


class EachlabsError(Exception):
    """Base of everything this provider raises about Eachlabs.

    ``final`` is the one attribute that says whether a task retry can help; ``is_final`` reads it.
    """

    final: bool = False


def is_final(error: BaseException) -> bool:
    """Whether a task retry cannot change the outcome of ``error``."""
    return isinstance(error, EachlabsError) and error.final


class EachlabsConfigError(EachlabsError, ValueError):
    """The connection is unusable as configured: no key, a host that is not https, a bad extra."""

    final = True


class EachlabsInputError(EachlabsError, ValueError):
    """An input that breaks the model's rules, named by field, value and rule. Nothing was sent."""

    final = True

    def __init__(self, field: str, value: Any, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"Invalid {field}={show_value(value)}: {rule}")


class EachlabsOutputError(EachlabsError):
    """An output that cannot be kept as asked: not an image, too large, or refused for safety."""

    final = True


class EachlabsDownloadError(EachlabsOutputError):
    """An output that must not be fetched: unsafe URL or redirect, or beyond the size cap."""


class EachlabsStorageError(EachlabsError):
    """Writing a paid output failed after the prediction succeeded; the message says where it is.

    Not final: the storage may be back on the next try, which re-attaches to the same prediction.
    """

    def __init__(self, message: str, *, prediction_id: str, output_url: str | None) -> None:
        self.prediction_id = prediction_id
        self.output_url = output_url
        super().__init__(message)


class EachlabsAPIError(EachlabsError):
    """An HTTP answer that is not a success, with everything the API said about it."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        details: Any = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = f"HTTP {self.status_code}: {self.message}" if self.status_code else self.message
        if self.details not in (None, "", {}, []) and compact(self.details) not in head:
            head += f" (details: {compact(self.details)})"
        return head + request_id_suffix(self.request_id)


class EachlabsInvalidInputError(EachlabsAPIError):
    """400 or 422: the request itself is wrong; sending it again cannot help."""

    final = True


class EachlabsAuthError(EachlabsAPIError):
    """401 or 403: the API key is missing, wrong, or not allowed to do this."""

    final = True


class EachlabsPaymentRequiredError(EachlabsAPIError):
    """402: the account balance is too low."""

    final = True


class EachlabsNotFoundError(EachlabsAPIError):
    """404: unknown model or prediction id."""

    final = True


class EachlabsConflictError(EachlabsAPIError):
    """409: the resource is not in a state that allows this (for instance cancelling a finished run)."""

    final = True


class EachlabsRateLimitError(EachlabsAPIError):
    """429: too many creates a minute or too many predictions in flight; nothing was created."""


class EachlabsServerError(EachlabsAPIError):
    """5xx: the API failed; worth retrying with backoff."""


class EachlabsResponseError(EachlabsAPIError):
    """A 2xx answer this provider cannot read (not JSON, or missing a field it needs)."""


class EachlabsUnsafeAnswerError(EachlabsAPIError):
    """An answer that breaks a rule the provider keeps for safety: a redirect from the API, an id
    that is not a safe token, an answer beyond its size cap. Final: the same host would answer the
    same, and acting on it could write files or send the key where nobody meant."""

    final = True


class EachlabsConnectionError(EachlabsAPIError):
    """No usable answer arrived: the connection was refused, dropped, or timed out.

    ``request_sent`` tells whether the server may have received (and acted on) the request: a
    refused connection sent nothing, a dropped one or a read timeout may have.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        self.request_sent = request_sent
        super().__init__(message)


class PredictionFailed(EachlabsError):
    """The prediction ended in ``failed`` / ``error``.

    Final when the API says why and no retry can change it (a content-policy or input rejection), or
    when the cause is unknown and the task asked not to retry unknown failures.
    """

    def __init__(
        self,
        message: str,
        *,
        prediction_id: str,
        error_code: str | None,
        final: bool,
        request_id: str | None = None,
        cost: float | None = None,
    ) -> None:
        self.prediction_id = prediction_id
        self.error_code = error_code
        self.final = final
        self.request_id = request_id
        # What the API billed for the failed prediction, when it said: the task's outcome shows it.
        self.cost = cost
        super().__init__(message)


class PredictionCancelled(EachlabsError):
    """The prediction ended in ``cancelled`` / ``canceled``: someone stopped it, so a retry should not
    start another behind their back."""

    final = True

    def __init__(
        self, message: str, *, prediction_id: str, request_id: str | None = None, cost: float | None = None
    ) -> None:
        self.prediction_id = prediction_id
        self.request_id = request_id
        self.cost = cost
        super().__init__(message)


class PredictionWaitFailed(EachlabsError):
    """Waiting for a prediction failed in the triggerer; final when the failure it reports was."""

    def __init__(self, message: str, *, prediction_id: str, final: bool) -> None:
        self.prediction_id = prediction_id
        self.final = final
        super().__init__(message)


class PredictionTimeout(EachlabsError):
    """The prediction did not finish within the time the task allowed; it was cancelled."""

    def __init__(self, prediction_id: str, waited_seconds: float, last_status: str | None) -> None:
        self.prediction_id = prediction_id
        self.waited_seconds = waited_seconds
        self.last_status = last_status
        seen = "last status unknown" if last_status is None else f"last status {last_status!r}"
        super().__init__(
            f"Eachlabs prediction {prediction_id} did not finish within {waited_seconds:.1f}s ({seen})"
        )


class EachlabsBatchError(EachlabsError):
    """A batch ended with more failed items than it allows, or past its deadline; the message lists
    the first failures and where the results manifest is. Final only when every failure was (a
    retry would buy the same rejections again); otherwise a task retry redoes only what failed."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        self.final = final
        super().__init__(message)


class EachlabsBudgetError(EachlabsError):
    """A create that would take the task past its ``max_cost``: it was not sent. Final: every later try
    counts what this one spent. The message says what was spent, on which predictions, and what the
    next one would cost."""

    final = True


def show_value(value: Any) -> str:
    """A value as an error message shows it: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def compact(value: Any) -> str:
    """JSON on one line, at most 500 characters, for error messages."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        text = str(value)
    return text[:500]


def request_id_suffix(request_id: str | None) -> str:
    """`` (request id ...)``: round brackets, because Airflow's console reads square ones as markup."""
    return f" (request id {request_id})" if request_id else ""
