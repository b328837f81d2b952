"""PredictionTrigger against the simulator: GETs only, one event, an absolute deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.testing import EachlabsSimulator
from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger


def run_trigger(trigger: PredictionTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def trigger_for(prediction_id: str, timeout: float = 10.0, **kwargs: Any) -> PredictionTrigger:
    now = time.time()
    return PredictionTrigger(
        prediction_id=prediction_id,
        eachlabs_conn_id="eachlabs_default",
        deadline=now + timeout,
        started_at=now,
        poll_interval=kwargs.pop("poll_interval", 0.05),
        **kwargs,
    )


def create(sim: EachlabsSimulator, **fault: Any) -> str:
    if fault:
        sim.inject("create", **fault)
    return EachlabsHook().create_prediction("echo-test", {"text": "x"})


def test_success_yields_exactly_one_event_and_only_gets(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(eachlabs_conn)
    requests_before = eachlabs_conn.counters.requests
    events = run_trigger(trigger_for(prediction_id))
    assert len(events) == 1
    assert events[0]["status"] == "success"
    assert events[0]["prediction"]["id"] == prediction_id
    assert eachlabs_conn.counters.requests - requests_before == eachlabs_conn.counters.gets
    assert (eachlabs_conn.counters.cancels, sum(eachlabs_conn.counters.creates.values())) == (0, 1)


@pytest.mark.parametrize(
    ("fault", "event_status"),
    [
        ({"fault": "fail", "error_code": "PROVIDER_REJECTED", "error_message": "flagged"}, "failed"),
        ({"fault": "status_variant", "final": "error"}, "failed"),
        ({"fault": "status_variant", "final": "canceled"}, "cancelled"),
        ({"fault": "status_variant", "running": "created"}, "success"),
        ({"fault": "status_variant", "running": "mystery"}, "success"),
    ],
)
def test_every_status_variant_ends_in_the_right_event(
    eachlabs_conn: EachlabsSimulator, fault: dict[str, Any], event_status: str
):
    prediction_id = create(eachlabs_conn, **fault)
    (event,) = run_trigger(trigger_for(prediction_id))
    assert event["status"] == event_status


def test_failure_event_carries_the_apis_words(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(
        eachlabs_conn, fault="fail", error_code="PROVIDER_REJECTED", error_message="flagged"
    )
    (event,) = run_trigger(trigger_for(prediction_id))
    assert "PROVIDER_REJECTED" in event["message"] and "flagged" in event["message"]


def test_deadline_gives_one_timeout_event_and_does_not_cancel(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(eachlabs_conn, fault="never_finish")
    started = time.monotonic()
    (event,) = run_trigger(trigger_for(prediction_id, timeout=0.4))
    assert event["status"] == "timeout" and event["last_status"] == "processing"
    assert 0.35 < time.monotonic() - started < 2.0
    assert eachlabs_conn.counters.cancels == 0


def test_a_rebuilt_trigger_keeps_the_original_deadline(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(eachlabs_conn, fault="never_finish")
    original = trigger_for(prediction_id, timeout=2.0)
    time.sleep(1.5)  # the triggerer restarts: the trigger is rebuilt from what it serialized
    _, kwargs = original.serialize()
    rebuilt = PredictionTrigger(**kwargs)
    started = time.monotonic()
    (event,) = run_trigger(rebuilt)
    assert event["status"] == "timeout"
    # The wait is counted from the create, not from the rebuild: it ended 2 s after the create, which
    # a fresh deadline would have put 2 s after the rebuild (bounds generous for a loaded machine).
    assert event["waited_seconds"] >= 2.0
    assert time.monotonic() - started < 1.5


def test_transient_poll_errors_are_tolerated(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(eachlabs_conn)
    eachlabs_conn.inject("get", "status", times=2, status=502)
    eachlabs_conn.inject("get", "drop")
    (event,) = run_trigger(trigger_for(prediction_id))
    assert event["status"] == "success"


def test_a_final_error_ends_the_wait_with_one_error_event(eachlabs_conn: EachlabsSimulator):
    (event,) = run_trigger(trigger_for("no-such-prediction"))
    assert event["status"] == "error"
    assert "HTTP 404" in event["message"]


def test_first_look_waits_for_the_models_expected_time(eachlabs_conn: EachlabsSimulator):
    prediction_id = create(eachlabs_conn)
    started = time.monotonic()
    (event,) = run_trigger(trigger_for(prediction_id, poll_interval=None, expected_seconds=1.5))
    assert event["status"] == "success"
    # One look, one second before the expected time: never earlier (a lower bound is not flaky).
    assert eachlabs_conn.counters.gets == 1
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("interval", [None, 0.3])
def test_a_wait_keeps_its_deadline_when_every_status_request_is_told_to_come_back_in_a_minute(
    eachlabs_conn: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch, interval: float | None
):
    """The one retry layer never sleeps past the wait's deadline: the last look is at the deadline."""
    from airflow_provider_eachlabs.exceptions import PredictionTimeout
    from tests.conftest import connection_json

    # The connection's defaults: five retries, each wait up to a minute, Retry-After honoured.
    monkeypatch.setenv(
        "AIRFLOW_CONN_EACHLABS_DEFAULT",
        connection_json(eachlabs_conn.base_url, max_retries=5, backoff_initial=1, backoff_max=60),
    )
    prediction_id = create(eachlabs_conn, fault="never_finish")
    eachlabs_conn.inject("get", "status", times=1000, status=429, retry_after=60)
    (event,) = run_trigger(
        trigger_for(prediction_id, timeout=1.5, poll_interval=interval, expected_seconds=9.0)
    )
    assert event["status"] == "timeout"
    trigger_gets = eachlabs_conn.counters.gets
    with pytest.raises(PredictionTimeout):
        EachlabsHook().wait_for_prediction(prediction_id, interval, timeout=1.5)
    # A look on the schedule (if it falls before the deadline) and one at the deadline, nothing more:
    # without the deadline, each would have been retried after the 60 s the API asked for.
    assert 1 <= trigger_gets <= 2
    assert 1 <= eachlabs_conn.counters.gets - trigger_gets <= 2
