"""The operators' execute, defer, complete and kill paths, over real HTTP against the simulator.

Airflow's runtime context is stood in for by two small recorders (XCom pushes and the
task_state_store), so each path can be driven directly; whole DAG runs are in tests/dags.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image, ImageChops

from airflow_provider_eachlabs import api
from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor
from airflow_provider_eachlabs.testing import EachlabsSimulator
from airflow_provider_eachlabs.triggers.prediction import PredictionTrigger

DATA = Path(__file__).resolve().parents[2] / "example_dags" / "data"


class RecordingTI:
    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


class RecordingStateStore(dict[str, Any]):
    """``task_state_store`` as Airflow 3.3 hands it to a task: values travel as JSON, and each key's
    retention is kept so tests can check it."""

    def __init__(self, initial: dict[str, Any] | None = None) -> None:
        super().__init__(initial or {})
        self.retention: dict[str, Any] = {}

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self[key] = json.loads(json.dumps(value))
        self.retention[key] = retention


def context(store: RecordingStateStore | None = None) -> dict[str, Any]:
    return {"ti": RecordingTI(), "task_state_store": RecordingStateStore() if store is None else store}


def fill(**kwargs: Any) -> FluxFillOperator:
    arguments: dict[str, Any] = {
        "task_id": "fill",
        "prompt": "an empty meadow",
        "image": str(DATA / "scene.png"),
        "mask": str(DATA / "scene_mask.png"),
        "output_format": "png",
        "poll_interval": 0.05,
        "deferrable": False,
        **kwargs,
    }
    return FluxFillOperator(**arguments)


def test_sync_fill_uploads_creates_waits_stores_and_returns_a_small_result(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    ctx = context()
    result = fill(output_path=f"{tmp_path}/").execute(ctx)
    prediction_id = result["prediction_id"]
    stored = tmp_path / f"{prediction_id}.png"
    output_url = f"{eachlabs_conn.base_url}/files/outputs/{prediction_id}.png"
    # The simulator reports a finished prediction's run time as its predict_seconds (0.3 here).
    assert result == {
        "prediction_id": prediction_id,
        "model": "flux-fill-pro",
        "status": "success",
        "output_url": output_url,
        "output_urls": [output_url],
        "predict_time": 0.3,
        "cost": 0.05,
        "metrics": {"predict_time": 0.3, "cost": 0.05},
        "stored_path": str(stored),
        "bytes": stored.stat().st_size,
        "sha256": hashlib.sha256(stored.read_bytes()).hexdigest(),
        "content_type": "image/png",
        "width": 512,
        "height": 384,
    }
    assert stored.read_bytes() == eachlabs_conn.file_bytes(output_url)
    sent = eachlabs_conn.predictions[prediction_id].input
    assert ctx["ti"].xcoms == {
        "prediction_id": prediction_id,
        "prediction_url": f"{eachlabs_conn.base_url}/v1/prediction/{prediction_id}",
        # What the task's Eachlabs page shows: the request as sent, and how it ended.
        "eachlabs_request": {
            "prediction_id": prediction_id,
            "model": "flux-fill-pro",
            "conn_id": "eachlabs_default",
            "input": sent,
            "how": "bought",
            "why": "no earlier try bought a prediction of this task",
            "try_number": None,
        },
        "eachlabs_outcome": {
            "ok": True,
            "prediction_id": prediction_id,
            "model": "flux-fill-pro",
            "status": "success",
            "cost": 0.05,
            "predict_time": 0.3,
            "output_url": output_url,
            "stored_path": str(stored),
            "sha256": result["sha256"],
        },
    }
    assert ctx["task_state_store"]["eachlabs_prediction"]["id"] == prediction_id
    assert sent["image"].startswith(f"{eachlabs_conn.base_url}/files/uploads/")
    assert (sent["steps"], sent["guidance"], sent["safety_tolerance"], sent["output_format"]) == (
        50,
        3,
        2,
        "png",
    )
    # Outside the mask the stored PNG is the input, pixel for pixel.
    before = Image.open(DATA / "scene.png").convert("RGB")
    after = Image.open(stored).convert("RGB")
    keep = Image.open(DATA / "scene_mask.png").convert("L").point(lambda v: 255 if v < 128 else 0)
    difference = ImageChops.difference(before, after)
    assert ImageChops.multiply(difference.convert("L"), keep).getbbox() is None
    assert ImageChops.difference(before, after).getbbox() is not None
    assert [p.name for p in tmp_path.iterdir()] == [stored.name]


def test_bad_input_fails_before_any_request_and_without_retries(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(AirflowFailException, match=r"Invalid steps=51: must be from 1 to 50 inclusive"):
        fill(steps=51).execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_missing_local_image_fails_naming_the_field_before_any_request(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(
        AirflowFailException, match=r"Invalid image='/nope/scene.png': no file exists at this path"
    ):
        fill(image="/nope/scene.png").execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_non_image_file_is_refused_before_upload(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(AirflowFailException, match="must be a JPEG, PNG or WebP image"):
        fill(mask=str(text)).execute(context())
    assert eachlabs_conn.counters.presigns == 0 and eachlabs_conn.counters.create_requests == 0


def test_mask_of_another_size_is_refused_before_upload(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    small = tmp_path / "small_mask.png"
    Image.new("L", (100, 50), 255).save(small)
    with pytest.raises(AirflowFailException, match=r"must have the image's size 512x384 \(it is 100x50\)"):
        fill(mask=str(small)).execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_without_a_mask_the_image_needs_an_alpha_channel(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(
        AirflowFailException, match=r"Invalid mask=None: is required: the image .* has no alpha"
    ):
        fill(mask=None).execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_alpha_masked_image_fills_its_transparent_region(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    source = DATA / "batch" / "product_1.png"
    result = fill(image=f"file://{source}", mask=None, output_path=str(tmp_path / "out.png")).execute(
        context()
    )
    original = Image.open(source).convert("RGBA")
    filled = Image.open(result["stored_path"]).convert("RGBA")
    opaque = original.getchannel("A").point(lambda v: 255 if v >= 128 else 0)
    difference = ImageChops.difference(original.convert("RGB"), filled.convert("RGB")).convert("L")
    assert ImageChops.multiply(difference, opaque).getbbox() is None
    assert filled.getchannel("A").getextrema() == (255, 255)


def test_deferrable_fill_defers_with_the_id_and_an_absolute_deadline(eachlabs_conn: EachlabsSimulator):
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        fill(deferrable=True, timeout=600).execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, PredictionTrigger)
    assert deferred.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert kwargs["prediction_id"] == ctx["ti"].xcoms["prediction_id"]
    assert kwargs["deadline"] - kwargs["started_at"] == 600
    assert kwargs["expected_seconds"] == 9.0
    assert eachlabs_conn.counters.gets == 0


def test_execute_complete_finishes_a_success_event(eachlabs_conn: EachlabsSimulator):
    operator = fill(deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context())
    prediction_id = operator.prediction_id
    assert prediction_id is not None
    prediction = operator.hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
    event = {"status": "success", "prediction_id": prediction_id, "prediction": prediction.to_dict()}
    assert operator.execute_complete(context(), event)["output_url"] == prediction.output_url


def test_execute_complete_on_timeout_cancels_and_raises(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "never_finish")
    operator = fill(deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context())
    event = {"status": "timeout", "prediction_id": operator.prediction_id, "waited_seconds": 3.0}
    with pytest.raises(api.PredictionTimeout, match=r"did not finish within 3\.0s"):
        operator.execute_complete(context(), event)
    assert eachlabs_conn.predictions[str(operator.prediction_id)].status == "cancelled"


def test_sync_timeout_cancels_the_prediction(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "never_finish")
    operator = fill(timeout=0.3)
    with pytest.raises(api.PredictionTimeout):
        operator.execute(context())
    assert eachlabs_conn.counters.cancels == 1
    assert eachlabs_conn.predictions[str(operator.prediction_id)].status == "cancelled"


def test_failed_prediction_fails_the_task_with_the_apis_words(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(AirflowFailException, match="PROVIDER_REJECTED: The provider rejected the prompt"):
        fill(prompt="a forbidden thing").execute(context())


def test_a_retry_reattaches_to_the_running_prediction_instead_of_creating_another(
    eachlabs_conn: EachlabsSimulator,
):
    store = RecordingStateStore()
    first = fill(deferrable=True)
    with pytest.raises(TaskDeferred):
        first.execute(context(store))
    retry = fill()
    result = retry.execute(context(store))
    assert result["prediction_id"] == first.prediction_id
    assert eachlabs_conn.counters.create_requests == 1
    assert eachlabs_conn.counters.uploads == 2


def test_a_retry_after_a_failed_prediction_creates_afresh_reusing_uploads(eachlabs_conn: EachlabsSimulator):
    store = RecordingStateStore()
    eachlabs_conn.inject("create", "fail")
    with pytest.raises(api.PredictionFailed):
        fill().execute(context(store))
    result = fill().execute(context(store))
    assert result["status"] == "success"
    assert eachlabs_conn.counters.create_requests == 2
    assert eachlabs_conn.counters.uploads == 2


def test_on_kill_cancels_and_never_raises(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "never_finish")
    operator = fill(deferrable=True)
    with pytest.raises(TaskDeferred):
        operator.execute(context())
    eachlabs_conn.inject("cancel", "status", times=10, status=500)
    operator.on_kill()
    eachlabs_conn.clear_faults()
    operator.on_kill()
    assert eachlabs_conn.predictions[str(operator.prediction_id)].status == "cancelled"


def test_generic_operator_runs_any_model_and_can_just_submit(eachlabs_conn: EachlabsSimulator):
    submit = EachlabsPredictionOperator(
        task_id="submit", model="echo-test", input={"text": "hi"}, wait_for_completion=False
    )
    prediction_id = submit.execute(context())
    assert eachlabs_conn.predictions[prediction_id].input == {"text": "hi"}
    sensor = PredictionSensor(
        task_id="wait", prediction_id=prediction_id, poke_interval=0.05, deferrable=False
    )
    result = sensor.execute(context())
    assert (result["prediction_id"], result["status"]) == (prediction_id, "success")


def test_sensor_fails_without_retry_on_a_failed_prediction(eachlabs_conn: EachlabsSimulator):
    eachlabs_conn.inject("create", "fail", error_message="upstream broke")
    prediction_id = EachlabsPredictionOperator(
        task_id="s", model="echo-test", input={"text": "x"}, wait_for_completion=False
    ).execute(context())
    sensor = PredictionSensor(
        task_id="wait", prediction_id=prediction_id, poke_interval=0.05, deferrable=False
    )
    with pytest.raises(AirflowFailException, match="upstream broke"):
        sensor.execute(context())


def test_deferrable_sensor_defers_and_reads_the_event(eachlabs_conn: EachlabsSimulator):
    sensor = PredictionSensor(task_id="wait", prediction_id="p-1", poke_interval=2, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context())
    assert deferred.value.trigger.serialize()[1]["poll_interval"] == 2.0
    event = {
        "status": "cancelled",
        "prediction_id": "p-1",
        "prediction": {"id": "p-1", "status": "cancelled"},
    }
    with pytest.raises(AirflowFailException, match="p-1 was cancelled"):
        sensor.execute_complete(context(), event)


def test_default_deferrable_follows_airflow_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert fill(deferrable=None).deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert fill(deferrable=None).deferrable is False


def test_output_to_object_storage(eachlabs_conn: EachlabsSimulator):
    from airflow.sdk import ObjectStoragePath

    result = fill(output_path="memory://fills/out/").execute(context())
    stored = ObjectStoragePath(result["stored_path"])
    assert result["stored_path"] == f"memory://fills/out/{result['prediction_id']}.png"
    assert Image.open(io.BytesIO(stored.read_bytes())).size == (512, 384)
