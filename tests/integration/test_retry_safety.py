"""Retries, kills and timeouts: no second prediction, no lost one, and a cancel where one is owed."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.inputs import RENDERED_NOTHING
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.integration.test_operators import RecordingStateStore, context, fill


def test_a_try_that_died_between_create_and_record_is_found_by_the_next(eachlabs_conn: EachlabsSimulator):
    from airflow_provider_eachlabs.record import TaskRecord

    store = RecordingStateStore()
    first, first_context = fill(), context(store)
    record = TaskRecord.load(first_context)
    body = first.build_input(first_context, record)
    record.sending(time.time())
    record.save(first_context)
    orphan = first.hook.create_prediction("flux-fill-pro", body)  # the worker dies right here
    result = fill().execute(context(store))
    assert result["prediction_id"] == orphan
    assert eachlabs_conn.counters.create_requests == 1


def test_the_search_ignores_predictions_with_another_input(eachlabs_conn: EachlabsSimulator):
    store = RecordingStateStore()
    store.set("eachlabs_prediction", {"sent_at": time.time(), "finished_ids": []})
    EachlabsHook().create_prediction(
        "flux-fill-pro", {"prompt": "x", "image": "https://cdn.example.com/a.png"}
    )
    result = fill().execute(context(store))
    assert eachlabs_conn.counters.create_requests == 2
    assert result["status"] == "success"


def test_a_failed_earlier_prediction_is_not_adopted_again(eachlabs_conn: EachlabsSimulator):
    store = RecordingStateStore()
    eachlabs_conn.inject("create", "fail")
    with pytest.raises(api.PredictionFailed):
        fill().execute(context(store))
    failed_id = store["eachlabs_prediction"]["id"]
    eachlabs_conn.inject("create", "status", status=500)
    result = fill().execute(context(store))
    assert result["prediction_id"] != failed_id
    assert store["eachlabs_prediction"]["finished_ids"] == [failed_id]


def test_read_timeout_on_create_waits_for_the_late_prediction_instead_of_paying_twice(
    eachlabs_conn: EachlabsSimulator,
):
    eachlabs_conn.inject("create", "delay", seconds=3.0)
    assert fill().execute(context())["status"] == "success"
    assert sum(eachlabs_conn.counters.creates.values()) == 1


def test_execution_timeout_on_the_sync_path_cancels_and_names_the_prediction(
    eachlabs_conn: EachlabsSimulator,
):
    from airflow.sdk.execution_time.timeout import timeout

    eachlabs_conn.inject("create", "never_finish")
    operator = fill(timeout=60)
    with (
        pytest.raises(api.PredictionTimeout, match=r"did not finish within [12]\.\d+s") as caught,
        timeout(2),
    ):
        operator.execute(context())
    assert caught.value.prediction_id == operator.prediction_id
    assert eachlabs_conn.predictions[str(operator.prediction_id)].status == "cancelled"


class StartedTI:
    def __init__(self, started: float) -> None:
        from datetime import datetime, timezone

        self.start_date = datetime.fromtimestamp(started, timezone.utc)
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def test_execution_timeout_bounds_the_deferred_wait(eachlabs_conn: EachlabsSimulator):
    operator = fill(deferrable=True, timeout=3600, execution_timeout=timedelta(seconds=100))
    started = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": StartedTI(started), "task_state_store": RecordingStateStore()})
    deadline = deferred.value.trigger.serialize()[1]["deadline"]
    assert deadline == pytest.approx(started + 95, abs=0.01)


def test_trigger_on_kill_cancels_and_a_plain_cancellation_does_not(eachlabs_conn: EachlabsSimulator):
    from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

    eachlabs_conn.inject("create", "never_finish", times=2)
    hook = EachlabsHook()
    restarted, killed = (hook.create_prediction("echo-test", {"text": str(i)}) for i in range(2))

    async def run_then_cancel(prediction_id: str, user_action: bool) -> None:
        now = time.time()
        trigger = PredictionTrigger(prediction_id, "eachlabs_default", now + 60, now, poll_interval=0.05)
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.3)
        task.cancel()  # what a triggerer shutdown does
        with pytest.raises(asyncio.CancelledError):
            await task
        if user_action:
            await trigger.on_kill()  # what Airflow 3.3 adds for a user's mark-failed or clear

    asyncio.run(run_then_cancel(restarted, user_action=False))
    asyncio.run(run_then_cancel(killed, user_action=True))
    assert eachlabs_conn.predictions[restarted].status == "processing"
    assert eachlabs_conn.predictions[killed].status == "cancelled"


def test_trigger_on_kill_never_raises(eachlabs_conn: EachlabsSimulator):
    from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

    eachlabs_conn.inject("create", "never_finish")
    prediction_id = EachlabsHook().create_prediction("echo-test", {"text": "x"})
    eachlabs_conn.inject("cancel", "status", times=50, status=500)
    trigger = PredictionTrigger(prediction_id, "eachlabs_default", time.time() + 60, time.time())
    asyncio.run(trigger.on_kill())  # a user's kill: the cancel fails every time, and on_kill returns
    # It tried (the first cancel and each retry the connection allows), then gave up quietly.
    assert eachlabs_conn.counters.cancels == 1 + 3
    assert eachlabs_conn.predictions[prediction_id].status in ("starting", "processing")  # not cancelled


# --- downloads -------------------------------------------------------------------------------------


class Redirector(BaseHTTPRequestHandler):
    """An API host whose output URLs answer with redirects or non-images, as a hostile CDN might."""

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", unquote(self.path.split("to=", 1)[1]))
            self.end_headers()
        elif self.path.startswith("/html"):
            body = b"<html>not an image</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile_api(monkeypatch: pytest.MonkeyPatch) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(host, max_retries=1))
    yield host
    server.shutdown()


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:9/x.png",
        "https://10.1.2.3/x.png",
        "https://[::1]/x.png",
        "http://cdn.example.com/x.png",
    ],
)
def test_a_redirect_to_a_private_or_plain_http_address_is_refused(hostile_api: str, target: str):
    with pytest.raises(api.EachlabsDownloadError, match=re.escape(f"refusing to download {target}:")):
        EachlabsHook().download(f"{hostile_api}/redirect?to={target}")


@pytest.mark.parametrize(
    "url", ["http://cdn.example.com/x.png", "https://192.168.0.10/x.png", "file:///etc/passwd"]
)
def test_unsafe_output_urls_are_refused_before_any_request(hostile_api: str, url: str):
    with pytest.raises(api.EachlabsDownloadError, match="only over https:// from public hosts"):
        EachlabsHook().download(url)


def test_an_answer_that_is_not_an_image_is_not_kept(hostile_api: str):
    with pytest.raises(api.EachlabsResponseError, match=r"is not an image \(Content-Type 'text/html'\)"):
        EachlabsHook().download(f"{hostile_api}/html")


def test_an_output_over_the_size_cap_is_refused_while_read_and_nothing_is_written(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """Refused while downloading, before any write (a write that fails part-way: test_money_paths)."""
    with pytest.raises(AirflowFailException, match="larger than the 1000 byte limit"):
        fill(output_path=f"{tmp_path}/", max_output_bytes=1000).execute(context())
    assert list(tmp_path.iterdir()) == []
    assert eachlabs_conn.counters.file_downloads == 1


# --- bad input, before any request ------------------------------------------------------------------

RULE_URL = "must be a public https:// URL (no data: URIs, localhost or private addresses)"
BAD_INPUT = [
    ("steps", 0, "must be from 1 to 50 inclusive"),
    ("steps", 51, "must be from 1 to 50 inclusive"),
    ("steps", True, "must be an integer from 1 to 50 inclusive"),
    ("guidance", 1.99, "must be from 2 to 5 inclusive"),
    ("guidance", 5.01, "must be from 2 to 5 inclusive"),
    ("guidance", "high", "must be a number from 2 to 5 inclusive"),
    ("safety_tolerance", 0, "must be from 1 to 6 inclusive"),
    ("safety_tolerance", 7, "must be from 1 to 6 inclusive"),
    ("seed", 2.5, "must be an integer"),
    ("prompt_upsampling", "maybe", "must be a boolean (true or false)"),
    ("output_format", "webp", "must be one of jpg, png"),
    ("prompt", "", f"must be a non-empty string; {RENDERED_NOTHING}"),
    *[
        (field, value, RULE_URL)
        for field in ("image", "mask")
        for value in (
            "http://cdn.example.com/a.png",
            "data:image/png;base64,iVBORw0KGgo=",
            "https://localhost/a.png",
            "https://127.0.0.1/a.png",
            "https://[::1]/a.png",
            "https://192.168.1.7/a.png",
        )
    ],
    ("image", "", f"must be a non-empty string; {RENDERED_NOTHING}"),
    ("mask", "", f"must be a non-empty string; {RENDERED_NOTHING}"),
    ("image", "not a url at all", "no file exists at this path"),
    ("mask", "%%garbage%%", "no file exists at this path"),
]


@pytest.mark.parametrize(("field", "value", "rule"), BAD_INPUT)
def test_bad_input_fails_before_any_request(
    eachlabs_conn: EachlabsSimulator, field: str, value: Any, rule: str
):
    with pytest.raises(AirflowFailException) as caught:
        fill(**{field: value}).execute(context())
    assert str(caught.value) == f"Invalid {field}={value!r}: {rule}"
    assert eachlabs_conn.counters.requests == 0
