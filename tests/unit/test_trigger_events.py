"""What the trigger carries across processes, and how its one event is read back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger, prediction_from_event


def trigger() -> PredictionTrigger:
    return PredictionTrigger(
        prediction_id="p1",
        eachlabs_conn_id="eachlabs_default",
        deadline=1_900_000_000.5,
        started_at=1_899_999_000.0,
        poll_interval=None,
        expected_seconds=9.0,
    )


def test_serializes_to_primitives_only_and_rebuilds_identically():
    classpath, kwargs = trigger().serialize()
    assert classpath == "airflow_provider_eachlabs.triggers.prediction.PredictionTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs == {
        "prediction_id": "p1",
        "eachlabs_conn_id": "eachlabs_default",
        "deadline": 1_900_000_000.5,
        "started_at": 1_899_999_000.0,
        "poll_interval": None,
        "expected_seconds": 9.0,
    }
    assert PredictionTrigger(**kwargs).serialize() == (classpath, kwargs)


def event(status: str, **fields: Any) -> dict[str, Any]:
    return {"status": status, "prediction_id": "p1", "message": "m", **fields}


def test_success_event_gives_the_prediction():
    prediction = prediction_from_event(
        event("success", prediction={"id": "p1", "status": "success", "output": "https://x/p1.png"}), "p1"
    )
    assert prediction.output_url == "https://x/p1.png"


def test_failed_event_raises_with_everything_the_api_said():
    failed = {
        "id": "p1",
        "status": "failed",
        "output": {"error_code": "PROVIDER_REJECTED", "error_message": "flagged"},
        "request_id": "req-9",
    }
    with pytest.raises(api.PredictionFailed, match=r"PROVIDER_REJECTED.*flagged.*req-9"):
        prediction_from_event(event("failed", prediction=failed))


def test_the_apis_message_logs_and_details_travel_with_the_event_to_the_task():
    """The trigger runs in another process: a failure's words must survive the event's JSON."""
    failed = api.Prediction(
        id="p1",
        status="failed",
        message="the provider timed out",
        logs="step 3 of 4",
        details={"region": "eu-1"},
        request_id="req-9",
    )
    carried = json.loads(json.dumps(event("failed", prediction=failed.to_dict())))
    with pytest.raises(api.PredictionFailed) as caught:
        prediction_from_event(carried)
    assert str(caught.value) == (
        "Eachlabs prediction p1 ended with status 'failed': the provider timed out; "
        '{"region":"eu-1"}; step 3 of 4 (request id req-9).'
    )


def test_cancelled_event_raises_cancelled():
    with pytest.raises(api.PredictionCancelled, match="p1 was cancelled"):
        prediction_from_event(event("cancelled", prediction={"id": "p1", "status": "canceled"}))


def test_timeout_event_names_the_prediction_and_the_time_waited():
    with pytest.raises(
        api.PredictionTimeout, match=r"p1 did not finish within 61.5s \(last status 'processing'\)"
    ):
        prediction_from_event(event("timeout", waited_seconds=61.5, last_status="processing"))


@pytest.mark.parametrize("final", [True, False])
def test_error_event_raises_its_message_and_keeps_its_finality(final: bool):
    with pytest.raises(
        api.EachlabsError, match="Waiting for prediction p1 failed: HTTP 401: bad key"
    ) as caught:
        prediction_from_event(event("error", message="HTTP 401: bad key", final=final))
    assert caught.value.final is final


@pytest.mark.parametrize("bad", [None, {}, {"status": "weird"}, "success"])
def test_malformed_events_are_refused(bad: Any):
    with pytest.raises(api.EachlabsError, match="cannot read"):
        prediction_from_event(bad)


def test_event_for_another_prediction_is_refused():
    with pytest.raises(api.EachlabsError, match="not p2"):
        prediction_from_event(event("success", prediction={"id": "p1", "status": "success"}), "p2")
