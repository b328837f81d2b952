"""The Eachlabs protocol without I/O: what to send, and what a response means.

Both transports (``requests`` on workers, ``aiohttp`` in the triggerer) build their requests here and
hand every response back here, so the two never disagree on a status, an error or a retry. Nothing in
this module imports Airflow or an HTTP library; it is cheap to import and tested without a network.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_eachlabs import __version__

DEFAULT_HOST = "https://api.eachlabs.ai"
USER_AGENT = f"airflow-provider-eachlabs/{__version__}"
REQUEST_ID_HEADER = "X-Request-Id"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class PredictionStatus(str, Enum):
    """Every status word the API is documented to use (NOTES.md reconciles the sources)."""

    CREATED = "created"
    QUEUED = "queued"
    STARTING = "starting"
    PROCESSING = "processing"
    SUCCESS = "success"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"
    CANCELED = "canceled"

    @classmethod
    def parse(cls, raw: object) -> PredictionStatus | None:
        """The status for ``raw``, or None for a word no source documents (treated as still running)."""
        if not isinstance(raw, str):
            return None
        try:
            return cls(raw.strip().lower())
        except ValueError:
            return None


SUCCESS_STATUSES = frozenset({PredictionStatus.SUCCESS, PredictionStatus.SUCCEEDED})
FAILURE_STATUSES = frozenset({PredictionStatus.FAILED, PredictionStatus.ERROR})
CANCELLED_STATUSES = frozenset({PredictionStatus.CANCELLED, PredictionStatus.CANCELED})
TERMINAL_STATUSES = SUCCESS_STATUSES | FAILURE_STATUSES | CANCELLED_STATUSES


@dataclass(frozen=True)
class Prediction:
    """One prediction as ``GET /v1/prediction/{id}`` describes it."""

    id: str
    status: str
    output: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: str | None = None
    message: str | None = None
    details: Any = None
    request_id: str | None = None

    @property
    def known_status(self) -> PredictionStatus | None:
        return PredictionStatus.parse(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.known_status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.known_status in SUCCESS_STATUSES

    @property
    def failed(self) -> bool:
        return self.known_status in FAILURE_STATUSES

    @property
    def cancelled(self) -> bool:
        return self.known_status in CANCELLED_STATUSES

    @property
    def output_url(self) -> str | None:
        """The first URL in ``output``: the spec allows a string, an array or an object."""
        return first_url(self.output)

    @property
    def error_text(self) -> str:
        """Everything the API said about a failure, in one line for the task log and exception."""
        parts: list[str] = []
        if isinstance(self.output, Mapping):
            code = self.output.get("error_code")
            text = self.output.get("error_message") or self.output.get("error")
            if code:
                parts.append(f"error_code={code}")
            if text:
                parts.append(str(text))
        for extra in (self.message, self.details, self.logs):
            if extra and str(extra) not in parts:
                parts.append(str(extra))
        return "; ".join(parts) if parts else "the API gave no reason"

    def to_dict(self) -> dict[str, Any]:
        """Primitives only: this travels in trigger events."""
        return {
            "id": self.id,
            "status": self.status,
            "output": self.output,
            "metrics": self.metrics,
            "logs": self.logs,
            "message": self.message,
            "details": self.details,
            "request_id": self.request_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            output=data.get("output"),
            metrics=dict(data.get("metrics") or {}),
            logs=data.get("logs"),
            message=data.get("message"),
            details=data.get("details"),
            request_id=data.get("request_id"),
        )


def first_url(output: Any) -> str | None:
    if isinstance(output, str):
        return output if output.startswith(("http://", "https://")) else None
    if isinstance(output, list):
        for item in output:
            if url := first_url(item):
                return url
    if isinstance(output, Mapping):
        for key in ("url", "image", "output", "uri"):
            if url := first_url(output.get(key)):
                return url
    return None


# --- the error family -------------------------------------------------------------------------------


class EachlabsError(Exception):
    """Base of everything this provider raises about Eachlabs."""


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
        if self.details not in (None, "", {}, []):
            head += f" (details: {_compact(self.details)})"
        if self.request_id:
            head += f" [request id {self.request_id}]"
        return head


class EachlabsInvalidInputError(EachlabsAPIError):
    """400 or 422: the request itself is wrong; sending it again cannot help."""


class EachlabsAuthError(EachlabsAPIError):
    """401 or 403: the API key is missing, wrong, or not allowed to do this."""


class EachlabsPaymentRequiredError(EachlabsAPIError):
    """402: the account balance is too low."""


class EachlabsNotFoundError(EachlabsAPIError):
    """404: unknown model or prediction id."""


class EachlabsConflictError(EachlabsAPIError):
    """409: the resource is not in a state that allows this (for instance cancelling a finished run)."""


class EachlabsRateLimitError(EachlabsAPIError):
    """429: too many creates a minute or too many predictions in flight; nothing was created."""


class EachlabsServerError(EachlabsAPIError):
    """5xx: the API failed; worth retrying with backoff."""


class EachlabsResponseError(EachlabsAPIError):
    """A 2xx answer this provider cannot read (not JSON, or missing a field it needs)."""


class EachlabsConnectionError(EachlabsAPIError):
    """No usable answer arrived: the connection was refused, dropped, or timed out.

    ``request_sent`` tells whether the server may have received (and acted on) the request: a
    refused connection sent nothing, a dropped one or a read timeout may have.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        self.request_sent = request_sent
        super().__init__(message)


class EachlabsDownloadError(EachlabsError):
    """An output that must not be fetched or kept: unsafe URL, too large, not an image. Final."""


class PredictionFailed(EachlabsError):
    """The prediction ended in ``failed`` / ``error``."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        where = f" [request id {prediction.request_id}]" if prediction.request_id else ""
        super().__init__(
            f"Eachlabs prediction {prediction.id} ended with status {prediction.status!r}: "
            f"{prediction.error_text}{where}"
        )


class PredictionCancelled(EachlabsError):
    """The prediction ended in ``cancelled`` / ``canceled``."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__(f"Eachlabs prediction {prediction.id} was cancelled ({prediction.error_text})")


class PredictionTimeout(EachlabsError):
    """The prediction did not finish within the time the task allowed."""

    def __init__(self, prediction_id: str, waited_seconds: float, last_status: str | None) -> None:
        self.prediction_id = prediction_id
        self.waited_seconds = waited_seconds
        self.last_status = last_status
        super().__init__(
            f"Eachlabs prediction {prediction_id} did not finish within {waited_seconds:.1f}s "
            f"(last status {last_status!r})"
        )


_ERROR_CLASSES: dict[int, type[EachlabsAPIError]] = {
    400: EachlabsInvalidInputError,
    401: EachlabsAuthError,
    402: EachlabsPaymentRequiredError,
    403: EachlabsAuthError,
    404: EachlabsNotFoundError,
    409: EachlabsConflictError,
    422: EachlabsInvalidInputError,
    429: EachlabsRateLimitError,
}


def raise_for_prediction_end(prediction: Prediction) -> None:
    """Raise the task-facing error for a failed or cancelled prediction; return on anything else."""
    if prediction.failed:
        raise PredictionFailed(prediction)
    if prediction.cancelled:
        raise PredictionCancelled(prediction)


# --- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """A request for either transport to send: method, path below the host, JSON body, query."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


@dataclass(frozen=True)
class ApiResponse:
    """What either transport received: enough to decide what it means."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def request_id(self) -> str | None:
        return header(self.headers, REQUEST_ID_HEADER)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts too."""
    if name in headers:
        return headers[name]
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def auth_headers(api_key: str) -> dict[str, str]:
    """Both documented auth headers: the model page's ``X-API-Key`` and the spec's Bearer token."""
    return {
        "X-API-Key": api_key,
        "Authorization": f"Bearer {api_key}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }


def create_prediction_request(
    model: str,
    input: Mapping[str, Any],
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
) -> ApiRequest:
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if webhook_url:
        body["webhook_url"] = webhook_url
    if webhook_secret:
        body["webhook_secret"] = webhook_secret
    return ApiRequest("POST", "/v1/prediction", json=body)


def get_prediction_request(prediction_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/v1/prediction/{quote(prediction_id, safe='')}")


def cancel_prediction_request(prediction_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/v1/prediction/{quote(prediction_id, safe='')}/cancel")


def get_model_request(slug: str) -> ApiRequest:
    return ApiRequest("GET", "/v1/model", params={"slug": slug})


def presign_upload_request(content_type: str) -> ApiRequest:
    file_type = content_type.split("/", 1)[0]
    if file_type not in ("image", "video", "audio"):
        file_type = "other"
    return ApiRequest(
        "POST", "/v1/upload/presign", json={"content_type": content_type, "file_type": file_type}
    )


@dataclass(frozen=True)
class PresignedUpload:
    """Where to PUT a file's bytes, with which headers, and the URL to pass as input afterwards."""

    presigned_url: str
    public_url: str
    required_headers: dict[str, str]


def read_presigned_upload(body: Any) -> PresignedUpload:
    if not isinstance(body, Mapping) or not body.get("presigned_url") or not body.get("public_url"):
        raise EachlabsResponseError(f"the presign answer lacks presigned_url or public_url: {_compact(body)}")
    headers = body.get("required_headers") or {}
    return PresignedUpload(
        presigned_url=str(body["presigned_url"]),
        public_url=str(body["public_url"]),
        required_headers={str(k): str(v) for k, v in dict(headers).items()},
    )


@dataclass(frozen=True)
class Download:
    """An output file fetched in full: its bytes and what the server said they are."""

    url: str
    content: bytes
    content_type: str


def list_executions_request(limit: int = 20, offset: int = 0, model: str | None = None) -> ApiRequest:
    params = {"limit": str(limit), "offset": str(offset)}
    if model:
        params["model"] = model
    return ApiRequest("GET", "/v1/executions", params=params)


def parse_timestamp(value: object) -> float | None:
    """Epoch seconds from the API's ISO 8601 timestamps (``Z`` or an offset), or None."""
    if not isinstance(value, str) or not value:
        return None
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def prediction_url(host: str, prediction_id: str) -> str:
    """The API URL of a prediction: what the UI link and XCom point at."""
    return f"{host.rstrip('/')}{get_prediction_request(prediction_id).path}"


# --- responses --------------------------------------------------------------------------------------


def read_json(response: ApiResponse) -> Any:
    """The body as JSON, or the error this response stands for."""
    raise_for_status(response)
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise EachlabsResponseError(
            f"the answer is not JSON: {_snippet(response.content)}",
            status_code=response.status_code,
            request_id=response.request_id,
        ) from exc


def read_created_prediction_id(response: ApiResponse) -> str:
    """The id from a create answer; any 2xx is accepted, as some docs say 201."""
    body = read_json(response)
    if isinstance(body, Mapping):
        for key in ("predictionID", "prediction_id", "id"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    raise EachlabsResponseError(
        f"the create answer carries no prediction id: {_snippet(response.content)}",
        status_code=response.status_code,
        request_id=response.request_id,
    )


def read_prediction(response: ApiResponse, prediction_id: str) -> Prediction:
    """A prediction from a GET answer; the id may be under ``id`` or ``predictionID``."""
    body = read_json(response)
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise EachlabsResponseError(
            f"the prediction answer has no status: {_snippet(response.content)}",
            status_code=response.status_code,
            request_id=response.request_id,
        )
    metrics = body.get("metrics")
    return Prediction(
        id=str(body.get("id") or body.get("predictionID") or prediction_id),
        status=body["status"],
        output=body.get("output"),
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        logs=body.get("logs") if isinstance(body.get("logs"), str) else None,
        message=body.get("message") if isinstance(body.get("message"), str) else None,
        details=body.get("details"),
        request_id=response.request_id,
    )


def raise_for_status(response: ApiResponse) -> None:
    """Raise the error class for a non-2xx answer, with the API's message, details and request id."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message, details = _error_body(response.content)
    if status >= 500:
        error_class: type[EachlabsAPIError] = EachlabsServerError
    else:
        error_class = _ERROR_CLASSES.get(status, EachlabsAPIError)
    raise error_class(
        message or f"the API answered HTTP {status}",
        status_code=status,
        details=details,
        request_id=response.request_id,
        retry_after=retry_after_seconds(response.headers),
    )


def _error_body(content: bytes) -> tuple[str | None, Any]:
    """``message`` (model page) or ``error`` (spec), plus ``details``; plain text is kept as is."""
    try:
        body = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace").strip()
        return (text[:300] or None), None
    if not isinstance(body, Mapping):
        return _compact(body), None
    message = body.get("message") or body.get("error")
    if isinstance(message, Mapping):
        message = message.get("message") or _compact(message)
    return (str(message) if message else None), body.get("details")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    value = header(headers, "Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            from datetime import datetime, timezone

            seconds = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def should_retry(error: BaseException, *, idempotent: bool) -> bool:
    """Whether sending the same request again is safe and may help.

    429 always (a rejected request did nothing). 5xx and a lost connection only when repeating the
    request is harmless, or when the request provably never left: a create that may have reached the
    server is never re-sent blindly, as it could buy a second prediction. Other 4xx never.
    """
    if isinstance(error, EachlabsRateLimitError):
        return True
    if isinstance(error, EachlabsConnectionError):
        return idempotent or not error.request_sent
    if isinstance(error, (EachlabsServerError, EachlabsResponseError)):
        return idempotent
    return False


def create_outcome_unknown(error: BaseException) -> bool:
    """Whether a failed create may still have made a prediction: it must be looked for, not re-sent.

    A 5xx may come after the work was done, a dropped connection or a read timeout after the request
    arrived, and an unreadable 2xx is a create that succeeded. A 429, any other 4xx, or a connection
    that never opened made nothing.
    """
    if isinstance(error, EachlabsConnectionError):
        return error.request_sent
    return isinstance(error, (EachlabsServerError, EachlabsResponseError))


# --- URLs -------------------------------------------------------------------------------------------


def validate_host(host: str) -> str:
    """The API base URL: HTTPS, or plain HTTP to a loopback host only, so the key never travels in clear."""
    candidate = host.strip().rstrip("/") or DEFAULT_HOST
    if "://" not in candidate:
        candidate = f"https://{candidate}"
    parts = urlsplit(candidate)
    hostname = (parts.hostname or "").lower()
    if not hostname:
        raise ValueError(f"Eachlabs connection host {host!r} is not a URL")
    if parts.scheme == "https":
        return candidate
    if parts.scheme == "http" and (hostname in LOOPBACK_HOSTS or hostname.startswith("127.")):
        return candidate
    raise ValueError(
        f"Eachlabs connection host {host!r} must use https:// (plain http:// is allowed only for "
        "localhost / 127.0.0.1 / ::1) so that the API key is never sent in clear"
    )


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str)[:500]
    except (TypeError, ValueError):
        return str(value)[:500]


def _snippet(content: bytes) -> str:
    return repr(content[:200].decode("utf-8", "replace"))
