"""The Eachlabs protocol without I/O: what to send, and what an answer means.

Both transports (``requests`` on workers, ``aiohttp`` in the triggerer) send the ``HttpRequest``
built here and hand every answer back here, so the two never disagree on a status, an error or a
retry. The API's answers are input like any other: ids must be safe tokens, redirects from the API
are refused, and every body has a size cap. Nothing in this module imports Airflow or an HTTP
library; it is cheap to import and tested without a network.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from airflow_provider_eachlabs import __version__
from airflow_provider_eachlabs.addresses import validate_api_host as validate_host
from airflow_provider_eachlabs.exceptions import (
    EachlabsAPIError,
    EachlabsAuthError,
    EachlabsConflictError,
    EachlabsConnectionError,
    EachlabsDownloadError,
    EachlabsError,
    EachlabsInputError,
    EachlabsInvalidInputError,
    EachlabsNotFoundError,
    EachlabsPaymentRequiredError,
    EachlabsRateLimitError,
    EachlabsResponseError,
    EachlabsServerError,
    EachlabsUnsafeAnswerError,
    PredictionCancelled,
    PredictionFailed,
    PredictionTimeout,
    compact,
    request_id_suffix,
)
from airflow_provider_eachlabs.redaction import redact, redact_bytes, secret_forms

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_eachlabs.settings import EachlabsSettings

USER_AGENT = f"airflow-provider-eachlabs/{__version__}"
REQUEST_ID_HEADER = "X-Request-Id"
# Caps on what is read of an answer, after decompression: an API answer, and an error body.
API_ANSWER_MAX_BYTES = 1024 * 1024
ERROR_ANSWER_MAX_BYTES = 64 * 1024
# A prediction id: a safe token, so it can name a file, a URL path segment and a log line.
PREDICTION_ID_RULE = "must be 1 to 128 letters, digits, '-' or '_'"
_PREDICTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


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


class FailureCause(str, Enum):
    """Why a prediction failed, as far as its ``error_code`` tells; decides whether a retry may help."""

    CONTENT_POLICY = "content-policy"
    INPUT = "input"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"


# The error codes each cause covers (the README's "Failed predictions" table lists them).
FAILURE_CODES: dict[FailureCause, frozenset[str]] = {
    FailureCause.CONTENT_POLICY: frozenset(
        {"PROVIDER_REJECTED", "CONTENT_POLICY_VIOLATION", "NSFW_CONTENT", "MODERATION_REJECTED"}
    ),
    FailureCause.INPUT: frozenset(
        {"INVALID_INPUT", "INPUT_VALIDATION_FAILED", "INVALID_IMAGE", "UNSUPPORTED_FORMAT", "IMAGE_TOO_LARGE"}
    ),
    FailureCause.TRANSIENT: frozenset(
        {
            "INTERNAL_ERROR",
            "PROVIDER_UNAVAILABLE",
            "PROVIDER_TIMEOUT",
            "TIMEOUT",
            "RATE_LIMITED",
            "INPUT_FETCH_FAILED",
        }
    ),
}


def non_negative_number(value: Any) -> float | None:
    """A finite number that is not negative (a cost, a time), whatever an answer or a record holds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def failure_cause(error_code: str | None) -> FailureCause:
    """What a failed prediction's error code says about retrying it."""
    code = (error_code or "").upper()
    return next((cause for cause, codes in FAILURE_CODES.items() if code in codes), FailureCause.UNKNOWN)


FINAL_CAUSES = frozenset({FailureCause.CONTENT_POLICY, FailureCause.INPUT})


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
    def output_urls(self) -> list[str]:
        """Every URL in ``output``, in order: the spec allows a string, an array or an object."""
        return list(dict.fromkeys(_urls_in(self.output)))

    @property
    def output_url(self) -> str | None:
        urls = self.output_urls
        return urls[0] if urls else None

    @property
    def error_code(self) -> str | None:
        code = self.output.get("error_code") if isinstance(self.output, Mapping) else None
        return str(code) if code else None

    @property
    def cost(self) -> float | None:
        """What the API says the prediction cost, failed and cancelled ones included, when it says."""
        return non_negative_number(self.metrics.get("cost"))

    @property
    def failure_cause(self) -> FailureCause:
        return failure_cause(self.error_code)

    @property
    def error_text(self) -> str:
        """Everything the API said about a failure, once each, in one line."""
        parts: list[str] = []
        if isinstance(self.output, Mapping):
            text = self.output.get("error_message") or self.output.get("error")
            if text:
                parts.append(str(text))
        for extra in (self.message, self.details, self.logs):
            text = compact(extra) if extra not in (None, "", {}, []) else ""
            if text and not any(text in part or part in text for part in parts):
                parts.append(text)
        said = "; ".join(parts) if parts else "the API gave no reason"
        return f"{self.error_code}: {said}" if self.error_code and self.error_code not in said else said

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
            id=check_prediction_id(data["id"]),
            status=str(data["status"]),
            output=data.get("output"),
            metrics=dict(data.get("metrics") or {}),
            logs=data.get("logs"),
            message=data.get("message"),
            details=data.get("details"),
            request_id=data.get("request_id"),
        )


def _urls_in(output: Any) -> Iterator[str]:
    if isinstance(output, str):
        if output.startswith(("http://", "https://")):
            yield output
    elif isinstance(output, list):
        for item in output:
            yield from _urls_in(item)
    elif isinstance(output, Mapping):
        for value in output.values():
            yield from _urls_in(value)


def raise_for_prediction_end(prediction: Prediction, *, retry_unknown_failures: bool = True) -> None:
    """Raise the task-facing error for a failed or cancelled prediction; return on anything else.

    A failure whose cause no retry can change (content policy, input) is final; an unknown cause is
    final only when the task asked not to retry unknown failures.
    """
    where = request_id_suffix(prediction.request_id)
    if prediction.failed:
        cause = prediction.failure_cause
        if cause in FINAL_CAUSES:
            final, advice = True, f" Not retried: a {cause.value} rejection does not change on a retry."
        elif cause is FailureCause.UNKNOWN and not retry_unknown_failures:
            final, advice = True, " Not retried: retry_unknown_failures is off."
        else:
            final, advice = False, ""
        raise PredictionFailed(
            f"Eachlabs prediction {prediction.id} ended with status {prediction.status!r}: "
            f"{prediction.error_text}{where}.{advice}",
            prediction_id=prediction.id,
            error_code=prediction.error_code,
            final=final,
            request_id=prediction.request_id,
            cost=prediction.cost,
        )
    if prediction.cancelled:
        raise PredictionCancelled(
            f"Eachlabs prediction {prediction.id} was cancelled ({prediction.error_text}){where}",
            prediction_id=prediction.id,
            request_id=prediction.request_id,
            cost=prediction.cost,
        )


def check_prediction_id(value: object, *, field_name: str | None = None) -> str:
    """A prediction id that is a safe token, from wherever it came.

    From a DAG (``field_name`` given) a bad id is an input error; from the API or a record it is an
    unsafe answer. Either way it is refused before it reaches a path, a URL, a log or XCom.
    """
    if isinstance(value, str) and _PREDICTION_ID.fullmatch(value):
        return value
    if field_name is not None:
        raise EachlabsInputError(field_name, value, PREDICTION_ID_RULE)
    shown = repr(value)[:80]
    raise EachlabsUnsafeAnswerError(f"refusing the prediction id {shown}: it {PREDICTION_ID_RULE}")


# --- requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """One request as a transport sends it, with the rules its answer is read under.

    ``max_bytes`` caps the answer after decompression, and ``oversize_error`` is raised past it;
    ``public_only`` makes the transport refuse to connect unless the peer address is public (outputs
    and presigned uploads, never the API host). Redirects are never followed by a transport: a
    caller that allows them checks each hop itself.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    params: Mapping[str, str] | None = None
    max_bytes: int = API_ANSWER_MAX_BYTES
    oversize_error: type[EachlabsError] = EachlabsUnsafeAnswerError
    public_only: bool = False


@dataclass(frozen=True)
class ApiRequest:
    """A call to the API: method, path below the host, JSON body, query.

    ``resendable`` says whether sending it twice is harmless (a GET, a cancel, a presign) or could
    buy a second prediction (a create): the retry layer reads it, so a new POST cannot inherit a
    default by accident.
    """

    method: str
    path: str
    resendable: bool
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None

    def to_http(self, settings: EachlabsSettings) -> HttpRequest:
        """The request to the configured host, the only place the key is ever sent."""
        return HttpRequest(
            self.method,
            settings.host + self.path,
            headers=auth_headers(settings.api_key),
            json=self.json,
            params=self.params,
        )


@dataclass(frozen=True)
class ApiResponse:
    """What either transport received: enough to decide what it means."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def request_id(self) -> str | None:
        value = header(self.headers, REQUEST_ID_HEADER)
        return value[:100] if value else None

    @property
    def is_redirect(self) -> bool:
        return 300 <= self.status_code < 400

    def redacted(self, secrets: Iterable[str | None], *, keep_success_body: bool = False) -> ApiResponse:
        """This answer without the secrets, in its headers and its body, before anything reads it:
        every error, prediction and trigger event built from it is then free of them.

        ``keep_success_body`` leaves a 2xx body as it came: a downloaded image is bytes, not words.
        """
        found = tuple(secrets)
        forms = [form.encode() for form in secret_forms(found)]
        body = not (keep_success_body and 200 <= self.status_code < 300)
        in_body = body and any(form in self.content for form in forms)
        in_headers = any(form in str(value).encode() for value in self.headers.values() for form in forms)
        if not (in_body or in_headers):
            return self
        return ApiResponse(
            self.status_code,
            {str(name): redact(str(value), found) for name, value in self.headers.items()},
            redact_bytes(self.content, found) if body else self.content,
        )


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
    return ApiRequest("POST", "/v1/prediction", resendable=False, json=body)


def get_prediction_request(prediction_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/v1/prediction/{check_prediction_id(prediction_id)}", resendable=True)


def cancel_prediction_request(prediction_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/v1/prediction/{check_prediction_id(prediction_id)}/cancel", resendable=True)


def get_model_request(slug: str) -> ApiRequest:
    return ApiRequest("GET", "/v1/model", resendable=True, params={"slug": slug})


def presign_upload_request(content_type: str) -> ApiRequest:
    file_type = content_type.split("/", 1)[0]
    if file_type not in ("image", "video", "audio"):
        file_type = "other"
    return ApiRequest(
        "POST",
        "/v1/upload/presign",
        resendable=True,
        json={"content_type": content_type, "file_type": file_type},
    )


def list_executions_request(
    limit: int = 20,
    offset: int = 0,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ApiRequest:
    """A page of executions; ``since`` and ``until`` bound their creation time, sent as ``from`` and
    ``to`` in RFC 3339 UTC with a ``Z`` (a naive datetime is read as UTC)."""
    from datetime import timezone

    params = {"limit": str(limit), "offset": str(offset)}
    if model:
        params["model"] = model
    for name, moment in (("from", since), ("to", until)):
        if moment is not None:
            utc = (
                moment.replace(tzinfo=timezone.utc)
                if moment.tzinfo is None
                else moment.astimezone(timezone.utc)
            )
            params[name] = utc.isoformat().replace("+00:00", "Z")
    return ApiRequest("GET", "/v1/executions", resendable=True, params=params)


def prediction_url(host: str, prediction_id: str) -> str:
    """The API URL of a prediction."""
    return f"{host.rstrip('/')}{get_prediction_request(prediction_id).path}"


# Headers an S3-style presigned PUT may need; anything else a presign answer asks for is not sent.
_UPLOAD_HEADER_NAMES = frozenset(
    {
        "content-type",
        "content-md5",
        "content-disposition",
        "content-encoding",
        "content-language",
        "cache-control",
        "expires",
    }
)
_UPLOAD_HEADER_PREFIXES = ("x-amz-",)


@dataclass(frozen=True)
class PresignedUpload:
    """Where to PUT a file's bytes, with which headers, and the URL to pass as input afterwards.

    ``dropped_headers`` names what the answer asked for that is not an S3 upload header: they are
    not sent (an answer could otherwise make the provider send any header anywhere).
    """

    presigned_url: str
    public_url: str
    required_headers: dict[str, str]
    dropped_headers: tuple[str, ...] = ()


def read_presigned_upload(body: Any) -> PresignedUpload:
    if not isinstance(body, Mapping) or not body.get("presigned_url") or not body.get("public_url"):
        raise EachlabsResponseError(f"the presign answer lacks presigned_url or public_url: {compact(body)}")
    raw_headers = body.get("required_headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise EachlabsResponseError(
            f"the presign answer's required_headers is not an object: {compact(body)}"
        )
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in raw_headers.items():
        name, value = str(name), str(value)
        allowed = name.lower() in _UPLOAD_HEADER_NAMES or name.lower().startswith(_UPLOAD_HEADER_PREFIXES)
        if allowed and not any(c in name + value for c in "\r\n\0"):
            kept[name] = value
        else:
            dropped.append(name[:60])
    return PresignedUpload(str(body["presigned_url"]), str(body["public_url"]), kept, tuple(dropped))


@dataclass(frozen=True)
class Download:
    """An output file fetched in full: its bytes and what the server said they are."""

    url: str
    content: bytes
    content_type: str


def read_download(response: ApiResponse, url: str) -> Download | str:
    """One hop of an output download: the file, or the ``Location`` of a redirect for the caller to check."""
    if response.is_redirect:
        location = header(response.headers, "Location")
        if location:
            return location
    raise_for_status(response)
    content_type = header(response.headers, "Content-Type") or ""
    if not content_type.lower().startswith("image/"):
        # Retried like a transient answer: an error page in place of a finished output.
        raise EachlabsResponseError(
            f"output {url[:200]} is not an image (Content-Type {content_type[:60] or 'missing'!r})",
            status_code=response.status_code,
            request_id=response.request_id,
        )
    return Download(url, response.content, content_type)


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


# --- responses --------------------------------------------------------------------------------------


def read_json(response: ApiResponse) -> Any:
    """The body as JSON, or the error this response stands for."""
    raise_for_status(response)
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError) as exc:
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
            if value not in (None, ""):
                return check_prediction_id(value)
    raise EachlabsResponseError(
        f"the create answer carries no prediction id: {_snippet(response.content)}",
        status_code=response.status_code,
        request_id=response.request_id,
    )


def read_prediction(response: ApiResponse, prediction_id: str) -> Prediction:
    """The prediction asked about, from a GET answer.

    The id is the one the provider asked for, whatever the answer echoes: an echoed id is never
    trusted to name a file or a later request.
    """
    body = read_json(response)
    if not isinstance(body, Mapping) or not isinstance(body.get("status"), str):
        raise EachlabsResponseError(
            f"the prediction answer has no status: {_snippet(response.content)}",
            status_code=response.status_code,
            request_id=response.request_id,
        )
    metrics = body.get("metrics")
    return Prediction(
        id=prediction_id,
        status=body["status"][:40],
        output=body.get("output"),
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        logs=body.get("logs") if isinstance(body.get("logs"), str) else None,
        message=body.get("message") if isinstance(body.get("message"), str) else None,
        details=body.get("details"),
        request_id=response.request_id,
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


def raise_for_status(response: ApiResponse) -> None:
    """Raise the error class for a non-2xx answer, with the API's message, details and request id.

    A redirect is an error too: API calls follow none, so the key never travels to another host.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    if response.is_redirect:
        location = (header(response.headers, "Location") or "nowhere")[:200]
        raise EachlabsUnsafeAnswerError(
            f"refusing a redirect to {location}: API calls and uploads follow no redirects, so the key "
            "and the files go only to the host they were sent to",
            status_code=status,
            request_id=response.request_id,
        )
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
    except (ValueError, RecursionError):
        text = content[:300].decode("utf-8", "replace").strip()
        return (text or None), None
    if not isinstance(body, Mapping):
        return compact(body), None
    message = body.get("message") or body.get("error")
    if isinstance(message, Mapping):
        message = message.get("message") or compact(message)
    return (str(message)[:300] if message else None), body.get("details")


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


def create_outcome_unknown(error: BaseException) -> bool:
    """Whether a failed create may still have made a prediction: it must be looked for, not re-sent.

    A 5xx may come after the work was done, a dropped connection or a read timeout after the request
    arrived, and an unreadable 2xx is a create that succeeded. A 429, any other 4xx, or a connection
    that never opened made nothing.
    """
    if isinstance(error, EachlabsConnectionError):
        return error.request_sent
    return isinstance(error, (EachlabsServerError, EachlabsResponseError))


def _snippet(content: bytes) -> str:
    return repr(content[:200].decode("utf-8", "replace"))


# The error family moved to ``exceptions``; these names stay importable from here.
__all__ = [
    "EachlabsAPIError",
    "EachlabsAuthError",
    "EachlabsConflictError",
    "EachlabsConnectionError",
    "EachlabsDownloadError",
    "EachlabsError",
    "EachlabsInvalidInputError",
    "EachlabsNotFoundError",
    "EachlabsPaymentRequiredError",
    "EachlabsRateLimitError",
    "EachlabsResponseError",
    "EachlabsServerError",
    "EachlabsUnsafeAnswerError",
    "PredictionCancelled",
    "PredictionFailed",
    "PredictionTimeout",
    "validate_host",
]
