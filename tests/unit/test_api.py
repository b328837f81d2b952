"""The protocol core: every response variant NOTES.md lists, read the same by both transports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.addresses import validate_api_host
from airflow_provider_eachlabs.api import ApiResponse, Prediction, PredictionStatus
from airflow_provider_eachlabs.exceptions import EachlabsConfigError, EachlabsInputError
from airflow_provider_eachlabs.retrying import should_retry


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ApiResponse(status, {"X-Request-Id": "req-1", **(headers or {})}, content)


@pytest.mark.parametrize(
    ("word", "terminal", "succeeded", "failed", "cancelled"),
    [
        ("starting", False, False, False, False),
        ("processing", False, False, False, False),
        ("created", False, False, False, False),
        ("queued", False, False, False, False),
        ("success", True, True, False, False),
        ("succeeded", True, True, False, False),
        ("failed", True, False, True, False),
        ("error", True, False, True, False),
        ("cancelled", True, False, False, True),
        ("canceled", True, False, False, True),
        ("Success", True, True, False, False),
        ("mystery", False, False, False, False),
    ],
)
def test_every_documented_status_word(
    word: str, terminal: bool, succeeded: bool, failed: bool, cancelled: bool
):
    prediction = Prediction(id="p", status=word)
    assert (prediction.is_terminal, prediction.succeeded, prediction.failed, prediction.cancelled) == (
        terminal,
        succeeded,
        failed,
        cancelled,
    )


def test_unknown_status_is_not_a_known_status():
    assert PredictionStatus.parse("mystery") is None
    assert PredictionStatus.parse(None) is None


@pytest.mark.parametrize("key", ["predictionID", "id"])
def test_create_answer_id_under_either_key_and_any_2xx(key: str):
    assert api.read_created_prediction_id(response(201, {"status": "success", key: "abc"})) == "abc"


def test_create_answer_without_id_is_a_response_error_naming_the_body():
    with pytest.raises(api.EachlabsResponseError, match="no prediction id") as caught:
        api.read_created_prediction_id(response(200, {"status": "success"}))
    assert caught.value.request_id == "req-1"


@pytest.mark.parametrize("echoed", [{"id": "p1"}, {"predictionID": "p1"}, {"id": "../../etc/x"}, {}])
def test_prediction_answer_keeps_the_id_asked_about_whatever_it_echoes(echoed: dict[str, str]):
    body = {
        **echoed,
        "status": "success",
        "output": "https://cdn.example.com/p1.png",
        "metrics": {"predict_time": 8.5, "cost": 0.05},
    }
    prediction = api.read_prediction(response(200, body), "p1")
    assert prediction.id == "p1"
    assert prediction.output_url == "https://cdn.example.com/p1.png"
    assert prediction.metrics == {"predict_time": 8.5, "cost": 0.05}
    assert prediction.request_id == "req-1"


@pytest.mark.parametrize(
    ("output", "url"),
    [
        (["https://a/1.png", "https://a/2.png"], "https://a/1.png"),
        ({"url": "https://a/x.jpg"}, "https://a/x.jpg"),
        ({"images": [{"url": "https://a/y.png"}]}, "https://a/y.png"),
        ({"images": []}, None),
        ("not a url", None),
        (None, None),
    ],
)
def test_output_may_be_string_array_or_object(output: Any, url: str | None):
    assert Prediction(id="p", status="success", output=output).output_url == url


def test_failure_detail_from_output_logs_and_message_all_reach_the_error():
    body = {
        "id": "p1",
        "status": "error",
        "output": {"error_code": "PROVIDER_REJECTED", "error_message": "prompt flagged"},
        "logs": "moderation stage 2",
        "message": "Prediction failed",
    }
    prediction = api.read_prediction(response(200, body), "p1")
    with pytest.raises(api.PredictionFailed) as caught:
        api.raise_for_prediction_end(prediction)
    assert str(caught.value) == (
        "Eachlabs prediction p1 ended with status 'error': PROVIDER_REJECTED: prompt flagged; Prediction "
        "failed; moderation stage 2 (request id req-1). Not retried: a content-policy rejection does not "
        "change on a retry."
    )


def test_a_rejection_is_said_once_even_when_the_logs_repeat_it():
    prediction = Prediction(
        id="p1",
        status="failed",
        output={"error_code": "PROVIDER_REJECTED", "error_message": "The provider rejected the prompt."},
        logs="PROVIDER_REJECTED: The provider rejected the prompt.",
    )
    assert prediction.error_text == "PROVIDER_REJECTED: The provider rejected the prompt."


@pytest.mark.parametrize(
    ("code", "retry_unknown", "final"),
    [
        ("PROVIDER_REJECTED", True, True),
        ("INVALID_INPUT", True, True),
        ("INTERNAL_ERROR", True, False),
        ("INTERNAL_ERROR", False, False),
        ("SOMETHING_NEW", True, False),
        ("SOMETHING_NEW", False, True),
        (None, True, False),
        (None, False, True),
    ],
)
def test_a_failure_is_final_by_its_cause_and_the_switch_for_unknown_ones(
    code: str | None, retry_unknown: bool, final: bool
):
    output = {"error_code": code, "error_message": "m"} if code else None
    prediction = Prediction(id="p1", status="failed", output=output)
    with pytest.raises(api.PredictionFailed) as caught:
        api.raise_for_prediction_end(prediction, retry_unknown_failures=retry_unknown)
    assert caught.value.final is final
    assert ("Not retried" in str(caught.value)) is final


def test_a_cancelled_prediction_is_final():
    with pytest.raises(api.PredictionCancelled) as caught:
        api.raise_for_prediction_end(Prediction(id="p1", status="canceled"))
    assert caught.value.final


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, api.EachlabsInvalidInputError),
        (401, api.EachlabsAuthError),
        (402, api.EachlabsPaymentRequiredError),
        (403, api.EachlabsAuthError),
        (404, api.EachlabsNotFoundError),
        (409, api.EachlabsConflictError),
        (422, api.EachlabsInvalidInputError),
        (429, api.EachlabsRateLimitError),
        (500, api.EachlabsServerError),
        (503, api.EachlabsServerError),
        (418, api.EachlabsAPIError),
    ],
)
def test_error_status_maps_to_its_class(status: int, error_class: type[api.EachlabsAPIError]):
    with pytest.raises(error_class) as caught:
        api.raise_for_status(response(status, {"error": "nope"}))
    assert caught.value.status_code == status
    assert type(caught.value) is error_class


@pytest.mark.parametrize(
    "body",
    [
        {"error": "Invalid input", "details": {"field": "steps"}},
        {"status": "error", "message": "Invalid input", "details": {"field": "steps"}},
        {"status": 400, "error": "Invalid input", "details": {"field": "steps"}},
    ],
)
def test_both_error_body_shapes_give_message_details_and_request_id(body: dict[str, Any]):
    with pytest.raises(api.EachlabsInvalidInputError) as caught:
        api.raise_for_status(response(400, body))
    assert str(caught.value) == 'HTTP 400: Invalid input (details: {"field":"steps"}) (request id req-1)'


def test_plain_text_error_body_is_kept():
    with pytest.raises(api.EachlabsServerError, match="upstream exploded"):
        api.raise_for_status(response(502, b"upstream exploded"))


def test_malformed_json_success_is_a_response_error():
    with pytest.raises(api.EachlabsResponseError, match="not JSON"):
        api.read_prediction(response(200, b"{not json"), "p")


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("soon", None)])
def test_retry_after_in_seconds(value: str, seconds: float | None):
    assert api.retry_after_seconds({"retry-after": value}) == seconds


def test_retry_after_as_http_date_in_the_past_is_zero():
    assert api.retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_rate_limit_error_carries_retry_after():
    with pytest.raises(api.EachlabsRateLimitError) as caught:
        api.raise_for_status(response(429, {"error": "slow down"}, {"Retry-After": "3"}))
    assert caught.value.retry_after == 3.0


@pytest.mark.parametrize(
    ("error", "resendable", "retry"),
    [
        (api.EachlabsRateLimitError("x", status_code=429), False, True),
        (api.EachlabsRateLimitError("x", status_code=429), True, True),
        (api.EachlabsServerError("x", status_code=500), True, True),
        (api.EachlabsServerError("x", status_code=500), False, False),
        (api.EachlabsConnectionError("refused", request_sent=False), False, True),
        (api.EachlabsConnectionError("dropped", request_sent=True), False, False),
        (api.EachlabsConnectionError("dropped", request_sent=True), True, True),
        (api.EachlabsInvalidInputError("x", status_code=400), True, False),
        (api.EachlabsAuthError("x", status_code=401), True, False),
        (api.EachlabsPaymentRequiredError("x", status_code=402), True, False),
        (api.EachlabsNotFoundError("x", status_code=404), True, False),
        (api.EachlabsConflictError("x", status_code=409), True, False),
    ],
)
def test_retry_policy(error: Exception, resendable: bool, retry: bool):
    assert should_retry(error, resendable=resendable) is retry


@pytest.mark.parametrize(
    ("request_", "resendable"),
    [
        (api.get_prediction_request("p1"), True),
        (api.cancel_prediction_request("p1"), True),
        (api.presign_upload_request("image/png"), True),
        (api.list_executions_request(), True),
        (api.get_model_request("m"), True),
        (api.create_prediction_request("m", {}), False),
    ],
)
def test_each_request_knows_whether_it_may_be_sent_again(request_: api.ApiRequest, resendable: bool):
    assert request_.resendable is resendable


def test_requests_carry_both_auth_headers_and_user_agent():
    headers = api.auth_headers("k-123")
    assert headers["X-API-Key"] == "k-123"
    assert headers["Authorization"] == "Bearer k-123"
    assert headers["User-Agent"].startswith("airflow-provider-eachlabs/")


def test_create_request_sends_no_version_and_only_given_webhook_fields():
    request = api.create_prediction_request("flux-fill-pro", {"prompt": "p"}, webhook_url="https://h/x")
    assert (request.method, request.path) == ("POST", "/v1/prediction")
    assert request.json == {"model": "flux-fill-pro", "input": {"prompt": "p"}, "webhook_url": "https://h/x"}


@pytest.mark.parametrize("bad_id", [".", "..", "a/b", "a b", "../../etc/passwd", "x" * 129, "", "p\n1", 7])
def test_unsafe_prediction_ids_are_refused_before_they_reach_a_path(bad_id: object):
    with pytest.raises(api.EachlabsUnsafeAnswerError, match="must be 1 to 128 letters, digits"):
        api.get_prediction_request(bad_id)  # type: ignore[arg-type]
    with pytest.raises(EachlabsInputError, match=r"Invalid prediction_id=.*: must be 1 to 128"):
        api.check_prediction_id(bad_id, field_name="prediction_id")


@pytest.mark.parametrize("body", [{"predictionID": ".."}, {"predictionID": "../x"}, {"id": "a" * 200}])
def test_an_unsafe_id_in_a_create_answer_is_refused_and_final(body: dict[str, str]):
    with pytest.raises(api.EachlabsUnsafeAnswerError) as caught:
        api.read_created_prediction_id(response(200, body))
    assert caught.value.final


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("", "https://api.eachlabs.ai"),
        ("api.eachlabs.ai", "https://api.eachlabs.ai"),
        ("https://api.eachlabs.ai/", "https://api.eachlabs.ai"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9", "http://localhost:9"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_host_accepted(host: str, expected: str):
    assert validate_api_host(host if "://" in host or not host else f"https://{host}") == expected


@pytest.mark.parametrize("host", ["http://api.eachlabs.ai", "http://10.0.0.5", "http://127.evil.example"])
def test_plain_http_to_a_remote_host_is_refused(host: str):
    with pytest.raises(EachlabsConfigError, match="must use https://"):
        validate_api_host(host)


@pytest.mark.parametrize("host", ["ftp://api.eachlabs.ai", "not a url", "https://"])
def test_a_host_that_is_not_an_http_url_is_refused(host: str):
    with pytest.raises(EachlabsConfigError, match="is not a URL"):
        validate_api_host(host)


def test_prediction_round_trips_through_primitives():
    prediction = Prediction(id="p", status="success", output=["u"], metrics={"cost": 0.05}, request_id="r")
    assert Prediction.from_dict(json.loads(json.dumps(prediction.to_dict()))) == prediction
