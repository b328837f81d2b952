"""A hostile API that repeats the key (or the webhook secret) it was sent: the secret reaches no error,
XCom value, results manifest, journal, trigger event or log line, on the worker and after a deferral,
and a resumed task registers it with Airflow's masker before anything can log it.

The simulator is scripted to say the secret where an API speaks: an HTTP error body and a failed
prediction's ``error_message`` (which it also repeats in ``logs``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from airflow_provider_eachlabs.triggers.batch import BatchTrigger
from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger
from tests.conftest import API_KEY, ROOT
from tests.integration.test_operators import context, fill

DATA = ROOT / "example_dags" / "data"
BATCH_DEFAULTS = {
    "prompt": "an empty meadow",
    "image": str(DATA / "scene.png"),
    "mask": str(DATA / "scene_mask.png"),
    "output_format": "png",
}
# A literal string, not a Variable or a connection field: nothing but the provider masks it.
WEBHOOK_SECRET = "whsec-literal-5d1c0a"


@pytest.fixture
def masker() -> Iterator[Any]:
    """Airflow's masker, emptied first: the process of a task that resumes has registered nothing."""
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    masker = _secrets_masker()
    masker.reset_masker()
    yield masker
    masker.reset_masker()


@pytest.fixture
def task_log(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Any:
    """Everything logged so far, structlog's printed lines and the standard library's records."""
    caplog.set_level(logging.DEBUG)

    def read() -> str:
        printed = capsys.readouterr()
        return printed.out + printed.err + caplog.text

    return read


def run_trigger(trigger: PredictionTrigger | BatchTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def said(*things: Any) -> str:
    """The text of everything a secret could hide in: errors by str and repr, values as JSON."""
    parts = []
    for thing in things:
        if isinstance(thing, BaseException):
            parts += [str(thing), repr(thing), str(thing.__cause__ or ""), str(thing.__context__ or "")]
        else:
            parts.append(json.dumps(thing, default=str))
    return "\n".join(parts)


def files_text(folder: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(folder.rglob("*")) if path.is_file())


def assert_masks(masker: Any, secret: str) -> None:
    """What Airflow's log processor does to each line: the secret must come out as ***."""
    assert masker.redact(f"a line that quotes {secret}") == "a line that quotes ***"


# --- the key, repeated in an HTTP error body -------------------------------------------------------


def test_a_key_repeated_in_an_http_error_body_is_in_no_error_xcom_or_log(
    eachlabs_conn: EachlabsSimulator, task_log: Any
):
    # A 503 first (retried, and logged as it is), then a final 403: both bodies repeat the key.
    eachlabs_conn.inject("get", "status", status=503, message=f"overloaded for key {API_KEY}")
    eachlabs_conn.inject("get", "status", status=403, message=f"key {API_KEY} may not read this")
    ctx = context()
    with pytest.raises(AirflowFailException) as failed:
        fill().execute(ctx)
    assert "may not read this" in str(failed.value)
    outcome = ctx["ti"].xcoms["eachlabs_outcome"]
    assert "key *** may not read this" in outcome["error_message"]
    log = task_log()
    assert "overloaded for key ***" in log
    assert API_KEY not in said(failed.value, ctx["ti"].xcoms) + log


def test_a_key_repeated_in_an_http_error_body_is_in_no_batch_manifest_or_journal(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, task_log: Any
):
    eachlabs_conn.inject("create", "status", status=400, message=f"key {API_KEY} sent a bad request")
    out = tmp_path / "out"
    ctx = {"ti": BatchTI()}
    operator = FluxFillBatchOperator(
        task_id="fill_batch",
        defaults=BATCH_DEFAULTS,
        items=[{"key": "a"}],
        output_path=str(out),
        deferrable=False,
    )
    with pytest.raises(AirflowFailException) as failed:
        operator.execute(ctx)
    on_disk = files_text(out)
    assert "key *** sent a bad request" in on_disk  # the manifest's row and the journal's
    assert API_KEY not in said(failed.value, ctx["ti"].xcoms) + on_disk + task_log()


# --- the key, repeated in a failed prediction's error_message ---------------------------------------


def test_a_key_repeated_in_a_failed_predictions_error_message_is_in_no_error_xcom_or_log(
    eachlabs_conn: EachlabsSimulator, task_log: Any
):
    eachlabs_conn.inject("create", "fail", error_message=f"the provider saw key {API_KEY}")
    ctx = context()
    with pytest.raises(Exception) as failed:
        fill().execute(ctx)
    assert "the provider saw key ***" in ctx["ti"].xcoms["eachlabs_outcome"]["error_message"]
    assert API_KEY not in said(failed.value, ctx["ti"].xcoms) + task_log()


def test_a_deferred_fill_resumes_with_the_key_masked_and_redacted(
    eachlabs_conn: EachlabsSimulator, task_log: Any, masker: Any
):
    eachlabs_conn.inject("create", "fail", error_message=f"the provider saw key {API_KEY}")
    with pytest.raises(TaskDeferred) as deferred:
        fill(deferrable=True).execute(context())
    masker.reset_masker()  # the triggerer: another process
    events = run_trigger(deferred.value.trigger)
    assert_masks(masker, API_KEY)  # the trigger's run() registered the key itself
    assert API_KEY not in said(events)
    masker.reset_masker()  # the worker that resumes the task: another process again
    resumed, ctx = fill(deferrable=True), context()
    with pytest.raises(Exception) as failed:
        resumed.execute_complete(ctx, events[0])
    assert "the provider saw key ***" in ctx["ti"].xcoms["eachlabs_outcome"]["error_message"]
    assert API_KEY not in said(failed.value, ctx["ti"].xcoms) + task_log()
    assert_masks(masker, API_KEY)  # execute_complete registered it before it could log anything


def test_a_key_repeated_in_a_failed_predictions_error_message_is_in_no_batch_file_after_a_deferral(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, task_log: Any, masker: Any
):
    eachlabs_conn.inject("create", "fail", error_code="NSFW_CONTENT", error_message=f"key {API_KEY} said no")
    out = tmp_path / "out"
    operator = FluxFillBatchOperator(
        task_id="fill_batch", defaults=BATCH_DEFAULTS, items=[{"key": "a"}], output_path=str(out)
    )
    operator.deferrable = True
    ti = BatchTI()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti})
    masker.reset_masker()
    events = run_trigger(deferred.value.trigger)
    assert_masks(masker, API_KEY)
    masker.reset_masker()
    resumed = FluxFillBatchOperator(
        task_id="fill_batch", defaults=BATCH_DEFAULTS, items=[{"key": "a"}], output_path=str(out)
    )
    with pytest.raises(AirflowFailException) as failed:
        resumed.execute_complete({"ti": ti}, events[0])
    assert_masks(masker, API_KEY)
    on_disk = files_text(out)
    assert "key *** said no" in on_disk
    assert API_KEY not in said(failed.value, events, ti.xcoms) + on_disk + task_log()


class BatchTI:
    dag_id, run_id, task_id, map_index = "secrets_dag", "run-1", "fill_batch", -1
    start_date = None

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


# --- guard: a literal webhook secret ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["worker", "deferred"])
def test_a_literal_webhook_secret_is_masked(
    eachlabs_conn: EachlabsSimulator, task_log: Any, masker: Any, path: str
):
    """The API was sent the secret and repeats it: it is in no log, XCom, rendered field or error, and
    Airflow's masker hides it wherever the task runs, the resumed worker included."""
    from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

    eachlabs_conn.inject(
        "create", "fail", error_code="NSFW_CONTENT", error_message=f"webhook secret {WEBHOOK_SECRET} refused"
    )
    operator, ctx = fill(webhook_secret=WEBHOOK_SECRET, deferrable=path == "deferred"), context()
    failed: pytest.ExceptionInfo[BaseException]
    if path == "worker":
        with pytest.raises(AirflowFailException) as failed:
            operator.execute(ctx)
        rendered = _serialize_rendered_fields(operator)
    else:
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute(context())
        events = run_trigger(deferred.value.trigger)
        masker.reset_masker()
        operator = fill(webhook_secret=WEBHOOK_SECRET, deferrable=True)
        with pytest.raises(AirflowFailException) as failed:
            operator.execute_complete(ctx, events[0])
        rendered = _serialize_rendered_fields(operator)
    assert eachlabs_conn.predictions[str(operator.prediction_id)].webhook_secret == WEBHOOK_SECRET
    assert "webhook secret *** refused" in str(failed.value)
    assert WEBHOOK_SECRET not in said(failed.value, ctx["ti"].xcoms, rendered) + task_log()
    assert_masks(masker, WEBHOOK_SECRET)
