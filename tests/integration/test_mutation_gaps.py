"""Behaviours that no test checked until mutation testing showed it (docs/mutation.md), over real HTTP.

Each test is named by what it guards, not by the mutant that found the gap, and asserts what a user
would notice: what reached the API, the simulator's counters, the task's error and log lines.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs import api, schema, storage
from airflow_provider_eachlabs.addresses import PUBLIC_URL_RULE
from airflow_provider_eachlabs.exceptions import EachlabsInputError
from airflow_provider_eachlabs.hooks.eachlabs import CLOCK_SKEW_SECONDS, EachlabsHook
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import API_KEY, connection_json
from tests.hostile import HostileServer, hostile_server, json_answer
from tests.integration.test_hook import png_bytes
from tests.integration.test_operators import RecordingStateStore, RecordingTI, context, fill
from tests.integration.test_retry_safety import StartedTI


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    with hostile_server() as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(server.base_url, max_retries=1, timeout=0.5)
        )
        yield server


def generic(model: str, input: dict[str, Any], **kwargs: Any) -> EachlabsPredictionOperator:
    arguments: dict[str, Any] = {"poll_interval": 0.05, "deferrable": False, **kwargs}
    return EachlabsPredictionOperator(task_id="t", model=model, input=input, **arguments)


# --- the connection test ----------------------------------------------------------------------------


def test_a_connection_test_asks_once_even_when_the_api_is_down_and_leaves_the_hook_usable(
    eachlabs_conn: EachlabsSimulator,
):
    eachlabs_conn.inject("executions", "status", times=5, status=503)
    hook = EachlabsHook()
    ok, message = hook.test_connection()
    assert (ok, message) == (False, message) and message.startswith("HTTP 503")
    assert eachlabs_conn.counters.executions == 1  # not retried: someone is waiting in the UI
    eachlabs_conn.clear_faults()
    assert hook.test_connection() == (True, f"Connected to Eachlabs at {eachlabs_conn.base_url}")
    assert hook.settings.max_retries == 3  # the connection's own retries are back for real calls
    assert hook.get_model("flux-fill-pro")["request_schema"]


def test_a_connection_test_reads_only_the_newest_execution(hostile: HostileServer):
    hostile.on("GET", "/v1/executions", json_answer({"executions": []}))
    assert EachlabsHook().test_connection()[0]
    assert [r.path for r in hostile.received] == ["/v1/executions?limit=1&offset=0"]


def test_a_page_of_executions_is_twenty_unless_asked_otherwise(hostile: HostileServer):
    hostile.on("GET", "/v1/executions", json_answer({"executions": []}))
    assert EachlabsHook().list_executions() == {"executions": []}
    assert [r.path for r in hostile.received] == ["/v1/executions?limit=20&offset=0"]


def test_the_triggerer_reads_the_connection_through_the_hook_so_a_subclass_can_supply_it(
    simulator: EachlabsSimulator,
):
    """No ``eachlabs_default`` in the environment: only the subclass knows the connection."""
    from airflow.sdk import Connection

    def connection(conn_id: str) -> Connection:
        return Connection(conn_id=conn_id, conn_type="eachlabs", host=simulator.base_url, password=API_KEY)

    class VaultHook(EachlabsHook):
        @classmethod
        def get_connection(cls, conn_id: str) -> Connection:
            return connection(conn_id)

        @classmethod
        async def aget_connection(cls, conn_id: str) -> Connection:
            return connection(conn_id)

    settings = asyncio.run(VaultHook().aget_settings())
    assert (settings.host, settings.api_key) == (simulator.base_url, API_KEY)


def test_the_triggerer_counts_status_requests_and_nothing_else(eachlabs_conn: EachlabsSimulator):
    """The count the timeout message gives: a cancel is no status request."""
    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    hook = EachlabsHook()

    async def look_then_cancel() -> None:
        await hook.aget_prediction(prediction_id)
        await hook.acancel_prediction(prediction_id)

    asyncio.run(look_then_cancel())
    assert (eachlabs_conn.counters.gets, eachlabs_conn.counters.cancels) == (1, 1)
    assert hook.status_requests == 1


# --- the deferred wait ------------------------------------------------------------------------------


def test_the_deferred_wait_keeps_the_tasks_connection_and_poll_interval(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIRFLOW_CONN_MY_EACHLABS", connection_json(simulator.base_url))
    operator = fill(deferrable=True, eachlabs_conn_id="my_eachlabs", poll_interval=0.25)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context())
    kwargs = deferred.value.trigger.serialize()[1]
    assert (kwargs["eachlabs_conn_id"], kwargs["poll_interval"]) == ("my_eachlabs", 0.25)


def test_without_execution_timeout_the_deferred_wait_ends_at_the_tasks_timeout(
    eachlabs_conn: EachlabsSimulator,
):
    operator = fill(deferrable=True, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": StartedTI(time.time() - 30), "task_state_store": RecordingStateStore()})
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["deadline"] == pytest.approx(kwargs["started_at"] + 600, abs=0.01)


def test_a_short_execution_timeout_keeps_a_tenth_of_itself_for_the_cancel(eachlabs_conn: EachlabsSimulator):
    operator = fill(deferrable=True, timeout=3600, execution_timeout=timedelta(seconds=20))
    started = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": StartedTI(started), "task_state_store": RecordingStateStore()})
    assert deferred.value.trigger.serialize()[1]["deadline"] == pytest.approx(started + 18, abs=0.01)


@pytest.mark.parametrize("retry_unknown_failures", [True, False])
def test_an_unknown_failure_reported_by_the_trigger_is_retried_only_when_the_task_says_so(
    eachlabs_conn: EachlabsSimulator, retry_unknown_failures: bool
):
    operator = fill(deferrable=True, retry_unknown_failures=retry_unknown_failures)
    event = {
        "status": "failed",
        "prediction_id": "p1",
        "prediction": {"id": "p1", "status": "failed", "output": {"error_code": "SOMETHING_NEW"}},
    }
    if retry_unknown_failures:
        with pytest.raises(api.PredictionFailed) as caught:
            operator.execute_complete(context(), event)
        assert not caught.value.final  # left to Airflow's retries: a fresh prediction may succeed
    else:
        with pytest.raises(AirflowFailException, match="Not retried: retry_unknown_failures is off"):
            operator.execute_complete(context(), event)


def test_a_deferred_fill_that_fails_leaves_an_outcome_naming_its_prediction_and_model():
    ctx = context()
    event = {"status": "error", "prediction_id": "p1", "message": "the API went away", "final": True}
    with pytest.raises(AirflowFailException, match="Waiting for prediction p1 failed: the API went away"):
        fill(deferrable=True).execute_complete(ctx, event)
    outcome = ctx["ti"].xcoms["eachlabs_outcome"]
    assert (outcome["prediction_id"], outcome["model"], outcome["status"]) == ("p1", "flux-fill-pro", "error")


def test_a_fill_that_fails_on_the_worker_leaves_an_outcome_naming_its_prediction_and_model(
    eachlabs_conn: EachlabsSimulator,
):
    eachlabs_conn.inject("create", "fail", error_code="INTERNAL_ERROR", error_message="boom")
    ctx = context()
    with pytest.raises(api.PredictionFailed):
        generic("echo-test", {"text": "x"}).execute(ctx)
    [prediction_id] = eachlabs_conn.predictions
    outcome = ctx["ti"].xcoms["eachlabs_outcome"]
    assert (outcome["prediction_id"], outcome["model"], outcome["status"]) == (
        prediction_id,
        "echo-test",
        "failed",
    )


def test_an_event_that_names_no_prediction_leaves_an_outcome_naming_none_and_nothing_to_cancel():
    """The tab says why the task failed, and that it names no prediction (so nothing billed)."""
    ctx = context()
    operator = fill(deferrable=True)
    with pytest.raises(AirflowFailException, match="Waiting for prediction  failed: lost"):
        operator.execute_complete(ctx, {"status": "error", "message": "lost", "final": True})
    outcome = ctx["ti"].xcoms["eachlabs_outcome"]
    assert (outcome["ok"], outcome["prediction_id"], outcome["cost"]) == (False, None, None)
    assert outcome["error_message"] == "Waiting for prediction  failed: lost"
    assert operator.prediction_id is None


def test_an_unknown_failure_on_the_worker_is_final_only_when_the_task_says_so(
    eachlabs_conn: EachlabsSimulator,
):
    eachlabs_conn.inject("create", "fail", error_code="SOMETHING_NEW", error_message="boom")
    with pytest.raises(AirflowFailException, match=r"boom.*Not retried: retry_unknown_failures is off\."):
        generic("echo-test", {"text": "x"}, retry_unknown_failures=False).execute(context())


def test_a_wait_on_the_worker_after_a_re_attach_keeps_the_first_tries_clock(
    eachlabs_conn: EachlabsSimulator,
):
    """``timeout`` counts from when the prediction was created, not from the retry."""
    eachlabs_conn.inject("create", "never_finish")
    running = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    store = RecordingStateStore({"eachlabs_prediction": {"id": running, "started_at": time.time() - 60}})
    began = time.monotonic()
    with pytest.raises(api.PredictionTimeout, match=rf"prediction {running} did not finish within 60\.\ds"):
        generic("echo-test", {"text": "x"}, timeout=30).execute(context(store))
    assert time.monotonic() - began < 10
    assert eachlabs_conn.predictions[running].status == "cancelled"


def test_a_wait_on_the_worker_places_its_first_look_by_the_models_expected_time(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    """flux-fill-pro's page says 9 s, so the adaptive first look is 8 s after the create (a model
    without an estimate gets 4 s). Re-attached 5 s after the create, the wait's first look is 3 s later."""
    eachlabs_conn.inject("create", "never_finish")
    running = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    store = RecordingStateStore({"eachlabs_prediction": {"id": running, "started_at": time.time() - 5}})
    sent = {"prompt": "x", "image": "https://example.com/scene.png", "mask": "https://example.com/mask.png"}
    task = generic("flux-fill-pro", sent, poll_interval=None, timeout=8.2)
    with pytest.raises(api.PredictionTimeout):
        task.execute(context(store))
    first_look = re.search(rf"\] Prediction {running} is '\w+' after (\d+\.\d)s", capsys.readouterr().out)
    assert first_look is not None and 8.0 <= float(first_look.group(1)) < 9.0


# --- the input schema -------------------------------------------------------------------------------


def test_the_input_schema_of_one_host_is_never_used_for_another(monkeypatch: pytest.MonkeyPatch):
    """Staging and production connections in one worker: each host's schema checks its own tasks."""
    schema._schemas.clear()
    model = f"model-{uuid.uuid4().hex[:8]}"
    strict = {"type": "object", "properties": {"prompt": {"type": "string"}}, "additionalProperties": False}
    with hostile_server() as staging, hostile_server() as production:
        staging.on("GET", "/v1/model", json_answer({"request_schema": strict}))
        production.on("GET", "/v1/model", json_answer({"request_schema": {"type": "object"}}))
        production.on("POST", "/v1/prediction", json_answer({"predictionID": "p1"}))
        monkeypatch.setenv("AIRFLOW_CONN_STAGING", connection_json(staging.base_url))
        monkeypatch.setenv("AIRFLOW_CONN_PRODUCTION", connection_json(production.base_url))
        with pytest.raises(AirflowFailException, match=r"Invalid input\.seed=1: is not an input"):
            generic(model, {"prompt": "p", "seed": 1}, eachlabs_conn_id="staging").execute(context())
        submitted = generic(
            model, {"prompt": "p", "seed": 1}, eachlabs_conn_id="production", wait_for_completion=False
        ).execute(context())
    assert submitted == "p1"
    assert [r.path for r in production.received] == [f"/v1/model?slug={model}", "/v1/prediction"]


def test_an_unreadable_schema_answer_is_asked_for_again(eachlabs_conn: EachlabsSimulator):
    schema._schemas.clear()
    eachlabs_conn.inject("model", "status", times=2, status=503)
    assert EachlabsHook().get_model("flux-fill-pro")["request_schema"]
    assert eachlabs_conn.counters.model_gets == 3


# --- looking for the prediction an interrupted create made ------------------------------------------


def test_a_candidate_whose_answer_is_not_an_object_is_not_taken_for_the_lost_prediction(
    hostile: HostileServer,
):
    created: list[str] = []

    def create(handler: Any) -> None:
        created.append("x")
        status = 500 if len(created) == 1 else 200
        json_answer({"predictionID": "fresh"} if status == 200 else {"error": "boom"}, status=status)(handler)

    hostile.on("POST", "/v1/prediction", create)
    hostile.on("GET", "/v1/executions", json_answer({"executions": [{"id": "odd"}]}))
    hostile.on("GET", "/v1/prediction/odd", json_answer(["not", "an", "object"]))
    assert EachlabsHook().submit_prediction("m", {"prompt": "p"}) == "fresh"
    assert len(created) == 2


# --- cancels, as the task log tells them ------------------------------------------------------------


def test_the_task_log_says_which_prediction_was_cancelled_or_could_not_be(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    eachlabs_conn.inject("create", "never_finish", times=2)
    operator = fill(timeout=0.3)
    with pytest.raises(api.PredictionTimeout):
        operator.execute(context())
    printed = capsys.readouterr().out
    assert re.search(rf"\] Asked Eachlabs to cancel prediction {operator.prediction_id} \[", printed)

    eachlabs_conn.inject("cancel", "status", times=50, status=500)
    operator = fill(timeout=0.3)
    with pytest.raises(api.PredictionTimeout):
        operator.execute(context())
    printed = capsys.readouterr().out
    assert re.search(
        rf"\] Could not cancel prediction {operator.prediction_id}: HTTP 500: [^\n]*\(request id \S+\) \[",
        printed,
    )


# --- re-attaching on a retry ------------------------------------------------------------------------


def logged(printed: str, line: str) -> bool:
    """Whether the task log has ``line`` as a whole message (between the level and the logger)."""
    return re.search(r"\] " + re.escape(line) + r" \[", printed) is not None


def finished_prediction(simulator: EachlabsSimulator, **fault: Any) -> str:
    if fault:
        simulator.inject("create", "fail", **fault)
    hook = EachlabsHook()
    prediction_id = hook.create_prediction("echo-test", {"text": "earlier try"})
    hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
    return prediction_id


def test_a_retry_finds_its_prediction_already_succeeded_and_finishes_with_one_look(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    done = finished_prediction(eachlabs_conn)
    gets_before = eachlabs_conn.counters.gets
    store = RecordingStateStore({"eachlabs_prediction": {"id": done, "started_at": time.time()}})
    result = generic("echo-test", {"text": "earlier try"}).execute(context(store))
    assert (result["prediction_id"], result["status"]) == (done, "success")
    assert eachlabs_conn.counters.gets - gets_before == 1
    assert eachlabs_conn.counters.create_requests == 1
    assert logged(
        capsys.readouterr().out,
        f"Input unchanged since an earlier try: re-using prediction {done} (status 'success'); "
        "set fresh_prediction=True to buy a new one",
    )


def test_a_kill_after_re_attaching_cancels_the_prediction_the_task_waits_for(
    eachlabs_conn: EachlabsSimulator,
):
    eachlabs_conn.inject("create", "never_finish")
    running = EachlabsHook().create_prediction("echo-test", {"text": "earlier try"})
    store = RecordingStateStore({"eachlabs_prediction": {"id": running, "started_at": time.time()}})
    operator = generic("echo-test", {"text": "earlier try"}, deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context(store))
    operator.on_kill()
    assert eachlabs_conn.predictions[running].status == "cancelled"
    assert eachlabs_conn.counters.create_requests == 1


@pytest.mark.parametrize("earlier", ["failed", "unknown"])
def test_the_task_log_says_why_a_retry_buys_a_new_prediction(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str], earlier: str
):
    if earlier == "failed":
        earlier_id = finished_prediction(eachlabs_conn, error_code="INTERNAL_ERROR")
        reason = (
            f"Input unchanged since an earlier try, whose prediction {earlier_id} ended 'failed': "
            "buying a new one"
        )
    else:
        earlier_id = "p-gone"
        reason = (
            "Input unchanged since an earlier try, whose prediction p-gone is unknown to the API: "
            "buying a new one"
        )
    store = RecordingStateStore({"eachlabs_prediction": {"id": earlier_id, "started_at": time.time()}})
    result = generic("echo-test", {"text": "again"}, wait_for_completion=False).execute(context(store))
    assert result != earlier_id
    assert logged(capsys.readouterr().out, reason)


def test_a_retry_adopts_the_prediction_an_earlier_try_sent_but_never_recorded(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    """The earlier try wrote ``sent_at``, its create went through, and it died before the answer."""
    store = RecordingStateStore({"eachlabs_prediction": {"sent_at": time.time() - 1}})
    eachlabs_conn.inject("create", "never_finish")
    orphan = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        generic("echo-test", {"text": "x"}, deferrable=True).execute(context(store))
    record = store["eachlabs_prediction"]
    assert (record["id"], record["attempts"][-1]["how"]) == (orphan, "found")
    assert before <= record["started_at"] <= time.time()
    assert deferred.value.trigger.started_at == record["started_at"]  # the wait's clock is the record's
    assert eachlabs_conn.counters.create_requests == 1
    assert logged(
        capsys.readouterr().out,
        f"Found prediction {orphan}, created by an earlier try that died before recording it",
    )


def test_a_create_records_when_it_was_made_and_the_wait_counts_from_then(eachlabs_conn: EachlabsSimulator):
    """A retry re-attaching reads ``started_at`` back, so its ``timeout`` counts from the create."""
    store = RecordingStateStore()
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        generic("echo-test", {"text": "x"}, deferrable=True).execute(context(store))
    record = store["eachlabs_prediction"]
    assert before <= record["started_at"] <= time.time()
    assert deferred.value.trigger.started_at == record["started_at"]


def test_the_webhook_and_its_secret_reach_the_create(eachlabs_conn: EachlabsSimulator):
    prediction_id = generic(
        "echo-test",
        {"text": "x"},
        webhook_url="https://hooks.example.com/fills",
        webhook_secret="whsec-fills",
        wait_for_completion=False,
    ).execute(context())
    made = eachlabs_conn.predictions[prediction_id]
    assert (made.webhook_url, made.webhook_secret) == ("https://hooks.example.com/fills", "whsec-fills")


def test_an_output_name_that_is_no_plain_name_fails_the_task_naming_it_before_anything_is_bought(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    task = generic("echo-test", {"text": "x"}, output_path=f"{tmp_path}/", output_name="../escape")
    with pytest.raises(AirflowFailException) as failed:
        task.execute(context())
    assert str(failed.value) == f"Invalid output_name='../escape': {storage.FILE_STEM_RULE}"
    assert eachlabs_conn.counters.create_requests == 0
    assert list(tmp_path.iterdir()) == []


class TryTI(RecordingTI):
    def __init__(self, try_number: int) -> None:
        super().__init__()
        self.try_number = try_number


def test_each_try_and_how_it_got_its_prediction_are_kept_for_the_tasks_eachlabs_tab(
    eachlabs_conn: EachlabsSimulator,
):
    store = RecordingStateStore()
    requests = []
    for try_number in (1, 2):
        ti = TryTI(try_number)
        generic("echo-test", {"text": "x"}, wait_for_completion=False).execute(
            {"ti": ti, "task_state_store": store}
        )
        requests.append(ti.xcoms["eachlabs_request"])
    [prediction_id] = eachlabs_conn.predictions
    attempts = store["eachlabs_prediction"]["attempts"]
    status = re.search(r"\(status '(\w+)'\)", attempts[-1]["why"]).group(1)  # type: ignore[union-attr]
    reuse = (
        f"input unchanged since try 1: re-using prediction {prediction_id} (status '{status}'); "
        "set fresh_prediction=True to buy a new one"
    )
    assert status in ("starting", "processing")
    assert attempts == [
        {
            "try": 1,
            "prediction_id": prediction_id,
            "how": "bought",
            "why": "no earlier try bought a prediction of this task",
        },
        {"try": 2, "prediction_id": prediction_id, "how": "re-used", "why": reuse},
    ]
    assert [(r["try_number"], r["how"]) for r in requests] == [(1, "bought"), (2, "re-used")]
    assert requests[1]["input"] == {"text": "x"}  # what the first try sent, read back from the record


# --- the search for what a lost create made ---------------------------------------------------------


def test_a_retry_after_a_lost_create_lists_the_models_executions_once_then_buys(
    eachlabs_conn: EachlabsSimulator,
):
    """No prediction matches: the next try looks once (no patience on this path) and creates."""
    store = RecordingStateStore({"eachlabs_prediction": {"sent_at": time.time(), "finished_ids": []}})
    started = time.monotonic()
    generic("echo-test", {"text": "x"}, wait_for_completion=False).execute(context(store))
    assert time.monotonic() - started < 0.9
    assert (eachlabs_conn.counters.executions, eachlabs_conn.counters.create_requests) == (1, 1)


def test_the_search_lists_only_the_models_executions_and_waits_for_a_late_listing(hostile: HostileServer):
    """The listing lags the create: it is read again within the request timeout, and only this
    model's executions are listed, so another model's prediction with the same input is never taken."""
    listings: list[str] = []

    def executions(handler: Any) -> None:
        listings.append(handler.path)
        rows = [{"id": "late", "created_at": "2099-01-01T00:00:00Z"}] if len(listings) > 1 else []
        json_answer({"executions": rows})(handler)

    hostile.on("POST", "/v1/prediction", json_answer({"error": "boom"}, status=500))
    hostile.on("GET", "/v1/executions", executions)
    hostile.on("GET", "/v1/prediction/late", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    started = time.monotonic()
    assert EachlabsHook().submit_prediction("flux-fill-pro", {"prompt": "p"}) == "late"
    assert time.monotonic() - started < 0.8  # read again a quarter of the request timeout later
    assert len(listings) >= 2
    assert all("model=flux-fill-pro" in path for path in listings)
    assert [r.path for r in hostile.received].count("/v1/prediction") == 1


class FakeClock:
    """The hook's ``time``: a monotonic clock that moves only when the hook sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time() + self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("patience", "sleeps"), [(8.0, [1.0] * 8), (2.0, [0.5] * 4), (0.25, [0.1] * 3), (0.0, [])]
)
def test_a_lagging_listing_is_read_again_every_quarter_of_the_patience_within_a_tenth_and_one_second(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch, patience: float, sleeps: list[float]
):
    """The search reads the listing once more when the patience has run out, and never after."""
    from airflow_provider_eachlabs.hooks import eachlabs as hook_module

    clock = FakeClock()
    monkeypatch.setattr(hook_module, "time", clock)
    hostile.on("GET", "/v1/executions", json_answer({"executions": []}))
    hook = EachlabsHook()
    assert hook.find_prediction("m", {"prompt": "p"}, since=time.time(), patience=patience) is None
    assert clock.slept == sleeps
    assert len(hostile.received) == len(sleeps) + 1


# --- what an error names ----------------------------------------------------------------------------


def test_an_unknown_prediction_error_keeps_the_apis_details_and_request_id(hostile: HostileServer):
    hostile.on(
        "GET",
        "/v1/prediction/p-gone",
        json_answer(
            {"message": "not found", "details": {"hint": "check the key"}},
            status=404,
            headers={"X-Request-Id": "req-404"},
        ),
    )
    for call in (
        lambda: EachlabsHook().get_prediction("p-gone"),
        lambda: asyncio.run(EachlabsHook().aget_prediction("p-gone")),
    ):
        with pytest.raises(api.EachlabsNotFoundError) as caught:
            call()
        assert str(caught.value) == (
            "HTTP 404: no prediction 'p-gone' for this API key (not found) "
            '(details: {"hint":"check the key"}) (request id req-404)'
        )
        assert (caught.value.details, caught.value.request_id) == ({"hint": "check the key"}, "req-404")


def test_a_model_answer_that_is_not_an_object_is_named_in_the_task_log(
    hostile: HostileServer, capsys: pytest.CaptureFixture[str]
):
    schema._schemas.clear()
    hostile.on("GET", "/v1/model", json_answer(["not", "an", "object"]))
    hostile.on("POST", "/v1/prediction", json_answer({"predictionID": "p1"}))
    generic("odd-model", {"prompt": "p"}, wait_for_completion=False).execute(context())
    assert "(the model answer for 'odd-model' is not an object)" in capsys.readouterr().out


def test_a_cancel_from_the_triggerer_is_retried_through_a_server_error(eachlabs_conn: EachlabsSimulator):
    from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

    eachlabs_conn.inject("create", "never_finish")
    running = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("cancel", "status", status=503)
    trigger = PredictionTrigger(running, "eachlabs_default", time.time() + 60, time.time())
    asyncio.run(trigger.on_kill())
    assert eachlabs_conn.counters.cancels == 2
    assert eachlabs_conn.predictions[running].status == "cancelled"


def test_several_outputs_and_an_output_path_naming_one_file_store_the_first_and_say_so(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    image = eachlabs_conn.add_file(png_bytes())
    target = tmp_path / "one.png"
    result = generic("upscale-image", {"image": image, "num_outputs": 2}, output_path=str(target)).execute(
        context()
    )
    first, _ = result["output_urls"]
    assert target.read_bytes() == eachlabs_conn.file_bytes(first)
    assert "stored_paths" not in result and result["stored_path"] == str(target)
    assert logged(
        capsys.readouterr().out,
        f"Prediction {result['prediction_id']} made 2 files but output_path names one file: "
        "only the first is stored",
    )


def test_one_output_and_an_output_path_naming_one_file_is_no_warning(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    image = eachlabs_conn.add_file(png_bytes())
    generic("upscale-image", {"image": image}, output_path=str(tmp_path / "one.png")).execute(context())
    assert "only the first is stored" not in capsys.readouterr().out


def test_the_triggerer_log_counts_the_status_requests_of_a_wait(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

    eachlabs_conn.inject("create", "never_finish")
    running = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    now = time.time()
    trigger = PredictionTrigger(running, "eachlabs_default", now + 0.35, now, poll_interval=0.1)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event["status"] == "timeout"
    assert logged(
        capsys.readouterr().out,
        f"Stopped waiting for prediction {running} at its deadline, after "
        f"{eachlabs_conn.counters.gets} status requests",
    )


def test_the_triggerer_reads_a_connection_once_per_30_seconds(
    eachlabs_conn: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    """A thousand waiting triggers share one lookup; an edited connection is seen after 30 s."""

    async def hosts() -> list[str]:
        first = (await EachlabsHook().aget_settings()).host
        monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json("https://api.example.com"))
        second = (await EachlabsHook().aget_settings()).host
        return [first, second]

    assert asyncio.run(hosts()) == [eachlabs_conn.base_url] * 2


def test_an_executions_answer_that_is_not_an_object_says_so(hostile: HostileServer):
    hostile.on("GET", "/v1/executions", json_answer(["not", "an", "object"]))
    assert EachlabsHook().test_connection() == (False, "the executions answer is not an object")


def test_the_search_skips_predictions_an_earlier_try_finished_with_and_looks_further(
    hostile: HostileServer,
):
    hostile.on("POST", "/v1/prediction", json_answer({"error": "boom"}, status=500))
    hostile.on(
        "GET", "/v1/executions", json_answer({"executions": [{"id": "failed-before"}, {"id": "late"}]})
    )
    hostile.on("GET", "/v1/prediction/late", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    found = EachlabsHook().submit_prediction("m", {"prompt": "p"}, exclude=["failed-before"])
    assert found == "late"
    assert "/v1/prediction/failed-before" not in [r.path for r in hostile.received]


def test_the_search_reads_the_models_executions_in_pages_of_100(hostile: HostileServer):
    from urllib.parse import parse_qs, urlsplit

    def executions(handler: Any) -> None:
        offset = int(parse_qs(urlsplit(handler.path).query)["offset"][0])
        rows = [{"id": f"r{i}", "created_at": "2099-01-01T00:00:00Z"} for i in range(offset, offset + 100)]
        json_answer({"executions": rows[:5] if offset else rows})(handler)

    hostile.on("POST", "/v1/prediction", json_answer({"error": "boom"}, status=500))
    hostile.on("GET", "/v1/executions", executions)
    hostile.on("GET", "/v1/prediction/r0", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    assert EachlabsHook().submit_prediction("m", {"prompt": "p"}) == "r0"
    assert [r.path for r in hostile.received if r.path.startswith("/v1/executions")] == [
        "/v1/executions?limit=100&offset=0&model=m",
        "/v1/executions?limit=100&offset=100&model=m",
    ]


def test_the_search_stops_at_the_first_execution_older_than_the_create(hostile: HostileServer):
    """Executions are listed newest first: one made before the create (less the clock skew
    allowed) ends the search, so nothing older can be taken for the lost prediction."""
    rows = [
        {"id": "newer", "created_at": "2099-01-01T00:00:00Z"},
        {"id": "older", "created_at": "2000-01-01T00:00:00Z"},
        {"id": "same-input", "created_at": "2099-01-01T00:00:00Z"},
    ]
    answers = iter([json_answer({"error": "boom"}, status=500), json_answer({"predictionID": "fresh"})])
    hostile.on("POST", "/v1/prediction", lambda handler: next(answers)(handler))
    hostile.on("GET", "/v1/executions", json_answer({"executions": rows}))
    hostile.on("GET", "/v1/prediction/newer", json_answer({"status": "processing", "input": {"prompt": "x"}}))
    hostile.on(
        "GET", "/v1/prediction/same-input", json_answer({"status": "success", "input": {"prompt": "p"}})
    )
    assert EachlabsHook().submit_prediction("m", {"prompt": "p"}) == "fresh"
    assert "/v1/prediction/same-input" not in [r.path for r in hostile.received]


def test_an_execution_made_at_the_very_edge_of_the_clock_skew_allowed_is_still_a_candidate(
    hostile: HostileServer,
):
    """The search looks back ``CLOCK_SKEW_SECONDS`` before the create was sent, edge included."""
    edge = "2026-01-01T00:00:00Z"
    since = api.parse_timestamp(edge) + CLOCK_SKEW_SECONDS
    assert since - CLOCK_SKEW_SECONDS == api.parse_timestamp(edge)
    hostile.on("GET", "/v1/executions", json_answer({"executions": [{"id": "edge", "created_at": edge}]}))
    hostile.on("GET", "/v1/prediction/edge", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    assert EachlabsHook().find_prediction("m", {"prompt": "p"}, since=since) == "edge"


@pytest.mark.parametrize("listing", [{}, {"executions": None}, {"executions": ["not a row"]}])
def test_an_empty_or_odd_listing_means_nothing_was_made_and_the_create_is_sent_again(
    hostile: HostileServer, listing: dict[str, Any]
):
    answers = iter([json_answer({"error": "boom"}, status=500), json_answer({"predictionID": "fresh"})])
    hostile.on("POST", "/v1/prediction", lambda handler: next(answers)(handler))
    hostile.on("GET", "/v1/executions", json_answer(listing))
    assert EachlabsHook().submit_prediction("m", {"prompt": "p"}) == "fresh"


# --- what the log says about money ------------------------------------------------------------------


def test_without_task_state_store_the_task_log_warns_that_a_retry_buys_again(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    generic("echo-test", {"text": "x"}, wait_for_completion=False).execute({"ti": RecordingTI()})
    assert logged(
        capsys.readouterr().out,
        "task_state_store is not available (Airflow older than 3.3): a retry or a clear of this task "
        "cannot know what this try buys, and will buy a new prediction whatever its input",
    )


def test_the_task_log_tells_how_a_lost_create_was_resolved(
    hostile: HostileServer, capsys: pytest.CaptureFixture[str]
):
    creates = iter(
        [
            json_answer({"error": "boom"}, status=500, headers={"X-Request-Id": "req-1"}),
            json_answer({"error": "boom"}, status=500, headers={"X-Request-Id": "req-2"}),
        ]
    )
    listings = iter([{"executions": []}, {"executions": []}, {"executions": [{"id": "late"}]}])
    hostile.on("POST", "/v1/prediction", lambda handler: next(creates)(handler))
    hostile.on(
        "GET", "/v1/executions", lambda handler: json_answer(next(listings, {"executions": []}))(handler)
    )
    hostile.on("GET", "/v1/prediction/late", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    hook = EachlabsHook()
    assert hook.submit_prediction("m", {"prompt": "p"}) == "late"
    printed = capsys.readouterr().out
    assert logged(
        printed,
        "The create may have gone through (HTTP 500: boom (request id req-1)); looking for its prediction",
    )
    assert logged(printed, "Found prediction late that the interrupted create made: using it")


def test_a_create_lost_every_time_is_sent_once_per_retry_then_fails_with_its_error(
    hostile: HostileServer, capsys: pytest.CaptureFixture[str]
):
    hostile.on("POST", "/v1/prediction", json_answer({"error": "boom"}, status=500))
    hostile.on("GET", "/v1/executions", json_answer({"executions": []}))
    with pytest.raises(api.EachlabsServerError, match="HTTP 500: boom"):
        EachlabsHook().submit_prediction("m", {"prompt": "p"})
    assert [r.path for r in hostile.received].count("/v1/prediction") == 2  # max_retries=1
    assert logged(
        capsys.readouterr().out, "No prediction was made by the interrupted create: sending it again"
    )


def test_a_wait_that_times_out_logs_how_long_and_how_many_status_requests(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    """Only status requests count: the hook's uploads and downloads before the wait do not."""
    eachlabs_conn.inject("create", "never_finish")
    hook = EachlabsHook()
    hook.download(hook.upload_bytes(png_bytes(), "image/png"))
    prediction_id = hook.create_prediction("echo-test", {"text": "x"})
    with pytest.raises(api.PredictionTimeout) as caught:
        hook.wait_for_prediction(prediction_id, poll_interval=0.1, timeout=0.3)
    assert caught.value.prediction_id == prediction_id
    assert "(last status 'processing')" in str(caught.value)
    printed = capsys.readouterr().out
    assert re.search(rf"\] Prediction {prediction_id} is 'processing' after 0\.\ds \[", printed)
    assert re.search(
        rf"\] Stopped waiting for prediction {prediction_id} after 0\.\ds and {eachlabs_conn.counters.gets} "
        r"status requests \[",
        printed,
    )


def test_a_wait_whose_status_requests_all_fail_says_its_last_status_is_unknown(
    hostile: HostileServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    """The retries outlast the wait, so the deadline, not the retry count, ends it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(hostile.base_url, max_retries=50, timeout=0.5)
    )
    hostile.on("GET", "/v1/prediction/dark", json_answer({"error": "unavailable"}, status=503))
    with pytest.raises(api.PredictionTimeout) as caught:
        EachlabsHook().wait_for_prediction("dark", poll_interval=0.1, timeout=0.3)
    assert caught.value.last_status is None
    assert str(caught.value).endswith("(last status unknown)")
    assert "failed at the deadline (HTTP 503: unavailable" in capsys.readouterr().out


# --- what uploads and downloads send ----------------------------------------------------------------


def test_uploads_and_downloads_name_the_provider_and_downloads_ask_for_an_image(hostile: HostileServer):
    hostile.on(
        "POST",
        "/v1/upload/presign",
        json_answer({"presigned_url": f"{hostile.base_url}/put/u1", "public_url": f"{hostile.base_url}/u1"}),
    )
    hostile.on("PUT", "/put/u1", lambda handler: json_answer({})(handler))
    hostile.on("GET", "/files/out.png", lambda handler: handler.send_error(418))
    hook = EachlabsHook()
    hook.upload_bytes(png_bytes(), "image/png")
    with pytest.raises(api.EachlabsAPIError):
        hook.download(f"{hostile.base_url}/files/out.png")
    put, get = hostile.received[1], hostile.received[2]
    assert (put.headers["Content-Type"], put.headers["User-Agent"]) == ("image/png", api.USER_AGENT)
    assert (get.headers["Accept"], get.headers["User-Agent"]) == ("image/*", api.USER_AGENT)


def test_a_download_follows_five_relative_redirects_and_no_sixth(hostile: HostileServer):
    from tests.hostile import raw_answer, redirect

    pad = "x" * 200  # the error quotes at most 200 characters of the last URL
    for hop in range(1, 7):
        hostile.on("GET", f"/files/hop{hop}-{pad}", redirect(302, f"hop{hop + 1}-{pad}"))
    hostile.on("GET", f"/files/hop7-{pad}", raw_answer(200, png_bytes(), {"Content-Type": "image/png"}))
    hook = EachlabsHook()
    assert hook.download(f"{hostile.base_url}/files/hop2-{pad}").content == png_bytes()
    with pytest.raises(api.EachlabsDownloadError) as caught:
        hook.download(f"{hostile.base_url}/files/hop1-{pad}")
    last = f"{hostile.base_url}/files/hop7-{pad}"
    assert str(caught.value) == f"output {last[:200]} redirects more than 5 times"


def test_a_row_of_the_listing_that_is_not_an_object_is_skipped_not_the_end_of_the_search(
    hostile: HostileServer,
):
    hostile.on("POST", "/v1/prediction", json_answer({"error": "boom"}, status=500))
    hostile.on("GET", "/v1/executions", json_answer({"executions": ["not a row", {"id": "late"}]}))
    hostile.on("GET", "/v1/prediction/late", json_answer({"status": "processing", "input": {"prompt": "p"}}))
    assert EachlabsHook().submit_prediction("m", {"prompt": "p"}) == "late"


def test_an_output_url_refused_by_the_address_rules_is_named_in_full_up_to_200_characters(
    hostile: HostileServer,
):
    url = "http://cdn.example.com/" + "x" * 300
    with pytest.raises(api.EachlabsDownloadError) as caught:
        EachlabsHook().download(url)
    assert str(caught.value) == (
        f"refusing to download {url[:200]}: outputs are fetched only over https:// from public hosts "
        "(or from the API host itself)"
    )
    assert hostile.received == []


@pytest.fixture
def rebound(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[bytes]]]:
    """``cdn.example.com`` resolves to a loopback listener (DNS rebinding): its port, and the first
    bytes each connection to it sent."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    first_bytes: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                first_bytes.append(conn.recv(5))
            except OSError:
                first_bytes.append(b"")
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "cdn.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    try:
        yield listener.getsockname()[1], first_bytes
    finally:
        listener.close()


def test_a_download_from_a_public_name_that_resolves_to_a_private_address_is_refused(
    hostile: HostileServer, rebound: tuple[int, list[bytes]]
):
    """The name passes the address rules; the socket's peer does not: refused before any byte is
    sent (no TLS handshake naming the host either), once, as a final error."""
    port, first_bytes = rebound
    with pytest.raises(api.EachlabsDownloadError, match=r"resolves to 127\.0\.0\.1, which is not a public"):
        EachlabsHook().download(f"https://cdn.example.com:{port}/out.png")
    assert all(chunk == b"" for chunk in first_bytes) and len(first_bytes) <= 1, first_bytes


def test_an_upload_to_a_public_name_that_resolves_to_a_private_address_is_refused(
    hostile: HostileServer, rebound: tuple[int, list[bytes]]
):
    from tests.integration.test_hostile_answers import presign_answer

    port, first_bytes = rebound
    hostile.on("POST", "/v1/upload/presign", presign_answer(f"https://cdn.example.com:{port}/put", {}))
    with pytest.raises(api.EachlabsError, match=r"resolves to 127\.0\.0\.1, which is not a public"):
        EachlabsHook().upload_bytes(png_bytes(), "image/png")
    assert all(chunk == b"" for chunk in first_bytes) and len(first_bytes) <= 1, first_bytes


def test_an_upload_names_the_headers_it_did_not_send_and_a_refused_target_in_full(
    hostile: HostileServer, capsys: pytest.CaptureFixture[str]
):
    presign = {
        "presigned_url": f"{hostile.base_url}/put/u1",
        "public_url": "https://cdn.example.com/u1.png",
        "required_headers": {"X-Admin": "1", "x-amz-acl": "private"},
    }
    hostile.on("POST", "/v1/upload/presign", json_answer(presign))
    hostile.on("PUT", "/put/u1", lambda handler: json_answer({})(handler))
    EachlabsHook().upload_bytes(png_bytes(), "image/png")
    assert logged(
        capsys.readouterr().out,
        "The presign answer asked for headers that no S3 upload needs; not sent: X-Admin",
    )
    target = "https://10.0.0.1/" + "u" * 300
    hostile.on("POST", "/v1/upload/presign", json_answer({**presign, "presigned_url": target}))
    with pytest.raises(api.EachlabsUnsafeAnswerError) as caught:
        EachlabsHook().upload_bytes(png_bytes(), "image/png")
    assert str(caught.value) == (
        f"refusing to upload to {target[:200]}: presigned URLs must be public https:// URLs "
        "(or on the API host itself)"
    )


def test_a_create_logs_its_prediction_and_model(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    assert logged(capsys.readouterr().out, f"Created Eachlabs prediction {prediction_id} for model echo-test")


def test_a_create_for_a_caller_that_paces_itself_raises_the_first_429(eachlabs_conn: EachlabsSimulator):
    """The batch's pacer, not the hook, decides when to try again after a rate limit."""
    eachlabs_conn.inject("create", "status", status=429, retry_after=1, message="Rate limit exceeded")
    with pytest.raises(api.EachlabsRateLimitError) as caught:
        EachlabsHook().submit_prediction("echo-test", {"text": "x"}, retry_rate_limits=False)
    assert caught.value.retry_after == 1
    assert eachlabs_conn.counters.create_requests == 1
    assert eachlabs_conn.counters.creates == {}


def test_output_path_without_waiting_is_refused_saying_where_to_give_it():
    with pytest.raises(EachlabsInputError) as caught:
        generic("echo-test", {"text": "x"}, output_path="/tmp/out.png", wait_for_completion=False)
    assert str(caught.value) == (
        "Invalid output_path='/tmp/out.png': is never written with wait_for_completion=False (the task "
        "ends before the output exists): give output_path to the PredictionSensor that waits for the "
        "prediction"
    )


def test_a_webhook_that_is_no_public_https_url_fails_the_task_naming_the_rule_before_anything_is_bought(
    eachlabs_conn: EachlabsSimulator,
):
    task = generic("echo-test", {"text": "x"}, webhook_url="http://hooks.example.com/fills")
    with pytest.raises(AirflowFailException) as failed:
        task.execute(context())
    assert str(failed.value) == f"Invalid webhook_url='http://hooks.example.com/fills': {PUBLIC_URL_RULE}"
    assert eachlabs_conn.counters.create_requests == 0


def test_a_task_without_output_path_claims_no_place_to_write():
    assert generic("echo-test", {"text": "x"}).output_locations() == {}


def test_a_retry_never_adopts_another_models_prediction_made_from_the_same_input(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    """The search for what a dead try bought asks for this model's executions only."""
    image = eachlabs_conn.add_file(png_bytes())
    store = RecordingStateStore({"eachlabs_prediction": {"sent_at": time.time() - 1}})
    other = EachlabsHook().create_prediction("describe-image", {"image": image})
    made = generic("upscale-image", {"image": image}, wait_for_completion=False).execute(context(store))
    assert made != other
    assert eachlabs_conn.predictions[made].model == "upscale-image"
    assert "Found prediction" not in capsys.readouterr().out


def test_a_retry_never_takes_an_earlier_tries_failed_prediction_for_the_one_a_dead_try_bought(
    eachlabs_conn: EachlabsSimulator, capsys: pytest.CaptureFixture[str]
):
    """Try 1's prediction failed; try 2 recorded its send and died before the create: try 3 finds
    nothing to adopt, since the failed one is excluded, and buys one new prediction."""
    failed = finished_prediction(eachlabs_conn, error_code="INTERNAL_ERROR")
    store = RecordingStateStore(
        {"eachlabs_prediction": {"sent_at": time.time() - 1, "finished_ids": [failed]}}
    )
    made = generic("echo-test", {"text": "earlier try"}, wait_for_completion=False).execute(context(store))
    assert made != failed
    assert eachlabs_conn.counters.create_requests == 2
    assert "Found prediction" not in capsys.readouterr().out
