"""PredictionTrigger: the deferred wait for one prediction, shared by the operator and the sensor.

It only ever GETs. Its deadline is absolute (epoch seconds), so a trigger rebuilt from
``serialize()`` after a triggerer restart keeps the same end, and it yields exactly one event whose
payload is primitives only: ``status`` (success, failed, cancelled, timeout, error), ``message`` and,
when the API answered, ``prediction``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.api import Prediction
from airflow_provider_eachlabs.exceptions import (
    EachlabsError,
    PredictionCancelled,
    PredictionFailed,
    PredictionTimeout,
    PredictionWaitFailed,
    is_final,
)
from airflow_provider_eachlabs.polling import DEFAULT_EXPECTED_SECONDS, PollLoop, PollSchedule

if TYPE_CHECKING:
    from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

EVENT_STATUSES = frozenset({"success", "failed", "cancelled", "timeout", "error"})


class PredictionTrigger(BaseTrigger):
    """Poll ``GET /v1/prediction/{id}`` until the prediction ends or ``deadline`` passes.

    :param prediction_id: the prediction to watch.
    :param eachlabs_conn_id: the connection; the trigger carries its id, never the key.
    :param deadline: epoch seconds after which the wait ends with a ``timeout`` event.
    :param started_at: epoch seconds of the create, for the polling schedule and elapsed times.
    :param poll_interval: fixed seconds between GETs, or None for the adaptive schedule.
    :param expected_seconds: the model's usual run time, which places the first GET.
    """

    def __init__(
        self,
        prediction_id: str,
        eachlabs_conn_id: str,
        deadline: float,
        started_at: float,
        poll_interval: float | None = None,
        expected_seconds: float = DEFAULT_EXPECTED_SECONDS,
    ) -> None:
        super().__init__()
        self.prediction_id = prediction_id
        self.eachlabs_conn_id = eachlabs_conn_id
        self.deadline = deadline
        self.started_at = started_at
        self.poll_interval = poll_interval
        self.expected_seconds = expected_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prediction_id": self.prediction_id,
                "eachlabs_conn_id": self.eachlabs_conn_id,
                "deadline": self.deadline,
                "started_at": self.started_at,
                "poll_interval": self.poll_interval,
                "expected_seconds": self.expected_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
        from airflow_provider_eachlabs.metrics import task_tags
        from airflow_provider_eachlabs.transport import aio

        hook = EachlabsHook(self.eachlabs_conn_id)
        hook.metric_tags = task_tags(self.task_instance)  # on the 429s it meets
        try:
            await hook.amask_secrets()  # this triggerer may never have read the connection before
            loop = PollLoop(
                api.check_prediction_id(self.prediction_id),
                started_at=self.started_at,
                deadline=self.deadline,
                schedule=PollSchedule(self.poll_interval, self.expected_seconds),
            )
            async with aio.shared_session():
                payload = await self._wait(hook, loop)
        except Exception as error:  # whatever failed, the task gets one event it can read
            payload = {
                "status": "error",
                "prediction_id": self.prediction_id,
                "message": str(error) or type(error).__name__,
                "final": is_final(error),
            }
        yield TriggerEvent(payload)

    async def _wait(self, hook: EachlabsHook, loop: PollLoop) -> dict[str, Any]:
        """GETs on the schedule until the prediction ends or the deadline passes: the event's payload."""
        await asyncio.sleep(loop.first_wait(time.time()))
        while True:
            try:
                prediction = await hook.aget_prediction(self.prediction_id, deadline=loop.deadline)
                step = loop.on_prediction(prediction, time.time())
            except EachlabsError as error:
                step = loop.on_error(error, time.time())
            if step.note:
                self.log.info(step.note)
            if step.done is not None:
                return self._event_for(step.done)
            if step.timed_out:
                self.log.info(
                    "Stopped waiting for prediction %s at its deadline, after %d status requests",
                    self.prediction_id,
                    hook.status_requests,
                )
                return self._timeout_event(loop.last_status)
            await asyncio.sleep(step.wait)

    async def on_kill(self) -> None:
        """A user's action on the deferred task (mark failed, clear) cancels the prediction.

        Airflow 3.3+ calls this only for user actions, never when the triggerer restarts or the
        deadline passes, so a restart keeps the prediction running. It never raises.
        """
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

        try:
            await asyncio.wait_for(
                EachlabsHook(self.eachlabs_conn_id).acancel_prediction(self.prediction_id), 20
            )
            self.log.info("Cancelled prediction %s", self.prediction_id)
        except Exception as error:
            self.log.warning("Could not cancel prediction %s: %s", self.prediction_id, error)

    def _event_for(self, prediction: Prediction) -> dict[str, Any]:
        status, message = "success", f"Prediction {prediction.id} succeeded"
        try:
            api.raise_for_prediction_end(prediction)
        except PredictionCancelled as error:
            status, message = "cancelled", str(error)
        except PredictionFailed as error:
            status, message = "failed", str(error)
        return {
            "status": status,
            "prediction_id": self.prediction_id,
            "message": message,
            "prediction": prediction.to_dict(),
        }

    def _timeout_event(self, last_status: str | None) -> dict[str, Any]:
        waited = time.time() - self.started_at
        return {
            "status": "timeout",
            "prediction_id": self.prediction_id,
            "message": str(PredictionTimeout(self.prediction_id, waited, last_status)),
            "waited_seconds": waited,
            "last_status": last_status,
        }


def ended_unsuccessfully(event: Mapping[str, Any] | None) -> Prediction | None:
    """The prediction a ``failed`` or ``cancelled`` event carries (to count its end), else None."""
    if not isinstance(event, Mapping) or event.get("status") not in ("failed", "cancelled"):
        return None
    data = event.get("prediction")
    try:
        prediction = Prediction.from_dict(data) if isinstance(data, Mapping) else None
    except (KeyError, TypeError, ValueError, EachlabsError):
        return None
    return prediction if prediction is not None and (prediction.failed or prediction.cancelled) else None


def prediction_from_event(
    event: Mapping[str, Any] | None,
    expected_id: str | None = None,
    *,
    retry_unknown_failures: bool = True,
) -> Prediction:
    """The successful prediction an event carries, or the error the event stands for.

    ``execute_complete`` of the operator and the sensor both call this, so a malformed event, a
    failure, a cancel and a timeout read the same everywhere.
    """
    if not isinstance(event, Mapping) or event.get("status") not in EVENT_STATUSES:
        raise EachlabsError(f"PredictionTrigger sent an event this provider cannot read: {event!r}")
    prediction_id = str(event.get("prediction_id") or expected_id or "")
    if expected_id and prediction_id != expected_id:
        raise EachlabsError(
            f"PredictionTrigger reported on prediction {prediction_id}, not {expected_id} as expected"
        )
    status = event["status"]
    if status == "timeout":
        raise PredictionTimeout(
            prediction_id, float(event.get("waited_seconds") or 0.0), event.get("last_status")
        )
    if status == "error" or not isinstance(event.get("prediction"), Mapping):
        raise PredictionWaitFailed(
            f"Waiting for prediction {prediction_id} failed: {event.get('message')}",
            prediction_id=prediction_id,
            final=bool(event.get("final")),
        )
    prediction = Prediction.from_dict(event["prediction"])
    api.raise_for_prediction_end(prediction, retry_unknown_failures=retry_unknown_failures)
    return prediction
