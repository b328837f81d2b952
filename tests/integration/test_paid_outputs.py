"""Nothing paid for in vain: every path that used to spend a fill and lose it, or fail after paying.

Each test counts what the simulator saw: zero requests when the task should have refused at once,
one create when a retry should have re-attached.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image

from airflow_provider_eachlabs.exceptions import EachlabsInputError, EachlabsStorageError
from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.results import OUTPUT_XCOM_MAX_BYTES
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import connection_json
from tests.integration.test_operators import RecordingStateStore, context, fill


def generic(model: str, input: dict[str, Any], **kwargs: Any) -> EachlabsPredictionOperator:
    return EachlabsPredictionOperator(
        task_id="t", model=model, input=input, poll_interval=0.05, deferrable=False, **kwargs
    )


# --- 1. the output target, checked before anything is bought ------------------------------------------


@pytest.mark.parametrize(
    ("where", "rule"),
    [
        ("under a file", r"cannot be written: .*/a-file is a file, not a folder"),
        ("unknown scheme", r"cannot be written: ValueError: Unsupported filesystem: 'nosuch'"),
    ],
)
def test_an_output_target_that_cannot_be_written_fails_before_any_request(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, where: str, rule: str
):
    (tmp_path / "a-file").write_text("not a folder")
    output_path = f"{tmp_path}/a-file/filled/" if where == "under a file" else "nosuch://bucket/filled/"
    with pytest.raises(AirflowFailException, match=rf"Invalid output_path='{output_path}': {rule}"):
        fill(output_path=output_path).execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_a_preview_target_that_cannot_be_written_fails_before_any_request(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(AirflowFailException, match=r"Invalid preview_path=.*: cannot be written"):
        fill(preview_path=f"{tmp_path}/a-file/preview.png").execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_a_store_that_fails_after_success_names_the_paid_image_and_the_retry_stores_it_once(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """Storage down between the create and the result: one prediction, stored by the next try."""
    store = RecordingStateStore()
    out = tmp_path / "out"
    first = fill(deferrable=True, output_path=f"{out}/")
    with pytest.raises(TaskDeferred):
        first.execute(context(store))
    prediction_id = str(first.prediction_id)
    prediction = first.hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
    out.write_text("the storage went away")  # a file where the folder should be
    event = {"status": "success", "prediction_id": prediction_id, "prediction": prediction.to_dict()}
    with pytest.raises(EachlabsStorageError) as caught:
        first.execute_complete(context(store), event)
    assert not caught.value.final
    assert str(caught.value).startswith(
        f"Prediction {prediction_id} succeeded, but its output could not be written"
    )
    assert f"The image is at {prediction.output_url} while that URL lasts" in str(caught.value)

    out.unlink()
    result = fill(output_path=f"{out}/").execute(context(store))  # the task's retry
    assert result["prediction_id"] == prediction_id
    assert Path(result["stored_path"]) == out / f"{prediction_id}.png"
    assert eachlabs_conn.counters.create_requests == 1
    printed = capsys.readouterr().out
    assert printed.count("cost 0.05 USD") == 1
    assert f"Prediction {prediction_id} succeeded (its cost was reported by an earlier try)" in printed


def test_an_input_on_a_storage_that_cannot_be_read_is_a_final_input_error(eachlabs_conn: EachlabsSimulator):
    with pytest.raises(
        AirflowFailException,
        match=r"Invalid image='nosuch://b/scene.png': cannot be read \(ValueError: .*nosuch",
    ):
        fill(image="nosuch://b/scene.png").execute(context())
    assert eachlabs_conn.counters.requests == 0


# --- 3. submit then sense, and store ------------------------------------------------------------------


def test_submit_without_waiting_refuses_an_output_path_when_the_dag_is_parsed():
    with pytest.raises(
        EachlabsInputError, match=r"Invalid output_path='/out/': is never written .* PredictionSensor"
    ):
        generic("echo-test", {"prompt": "x"}, wait_for_completion=False, output_path="/out/")
    with pytest.raises(EachlabsInputError, match=r"Invalid preview_path='/p.png': is never written"):
        fill(wait_for_completion=False, preview_path="/p.png")


@pytest.mark.parametrize("deferrable", [False, True])
def test_the_sensor_stores_the_output_as_the_operator_does(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, deferrable: bool
):
    waited = fill(output_path=f"{tmp_path}/by-operator/").execute(context())
    prediction_id = fill(wait_for_completion=False).execute(context())
    sensor = PredictionSensor(
        task_id="wait",
        prediction_id=prediction_id,
        poke_interval=0.05,
        deferrable=deferrable,
        output_path=f"{tmp_path}/by-sensor/",
    )
    ctx = context()
    if deferrable:
        with pytest.raises(TaskDeferred):
            sensor.execute(ctx)
        prediction = EachlabsHook().wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
        sensed = sensor.execute_complete(
            ctx, {"status": "success", "prediction_id": prediction_id, "prediction": prediction.to_dict()}
        )
    else:
        sensed = sensor.execute(ctx)
    assert set(sensed) == set(waited) - {"model"}
    assert sensed["stored_path"] == f"{tmp_path}/by-sensor/{prediction_id}.png"
    assert Image.open(sensed["stored_path"]).size == (512, 384)
    assert {key: ctx["ti"].xcoms[key] for key in ("prediction_id", "prediction_url")} == {
        "prediction_id": prediction_id,
        "prediction_url": f"{eachlabs_conn.base_url}/v1/prediction/{prediction_id}",
    }
    assert ctx["ti"].xcoms["eachlabs_request"]["how"] == "sensed"
    assert ctx["ti"].xcoms["eachlabs_outcome"]["stored_path"] == sensed["stored_path"]
    assert eachlabs_conn.counters.create_requests == 2


# --- 4. outputs that are not one file -------------------------------------------------------------------


def test_an_object_output_is_kept_in_xcom(eachlabs_conn: EachlabsSimulator):
    image = eachlabs_conn.add_file(_png())
    result = generic("describe-image", {"image": image, "max_words": 6}).execute(context())
    assert result["output"] == {"text": "an image of 16 by 12", "width": 16, "height": 12}
    assert result["output_urls"] == [] and result["output_url"] is None


def test_an_output_beyond_the_xcom_cap_says_where_to_read_it(eachlabs_conn: EachlabsSimulator):
    result = generic("echo-test", {"prompt": "x" * (OUTPUT_XCOM_MAX_BYTES + 1)}).execute(context())
    assert "output" not in result
    size = len(json.dumps({"prompt": "x" * (OUTPUT_XCOM_MAX_BYTES + 1)}))
    assert result["output_note"].startswith(
        f"the output is {size} bytes of JSON, more than the 4096 kept in XCom"
    )
    assert f"get_prediction({result['prediction_id']!r}).output" in result["output_note"]


def test_every_output_file_is_stored_when_output_path_is_a_folder(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    image = eachlabs_conn.add_file(_png())
    result = generic(
        "upscale-image",
        {"image": image, "num_outputs": 3},
        output_path=f"{tmp_path}/",
        output_name="product_1",
    ).execute(context())
    assert len(result["output_urls"]) == 3
    names = ["product_1.png", "product_1_1.png", "product_1_2.png"]
    assert result["stored_paths"] == [f"{tmp_path}/{name}" for name in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert all(Image.open(tmp_path / name).size == (32, 24) for name in names)


# --- 5. templates that rendered nothing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("prompt", "None"), ("image", "None"), ("mask", "None"), ("prompt", "")]
)
def test_a_template_that_rendered_nothing_is_refused_before_anything_is_bought(
    eachlabs_conn: EachlabsSimulator, field: str, value: str
):
    with pytest.raises(
        AirflowFailException, match=rf"Invalid {field}='{value}': .*a template probably pulled nothing"
    ):
        fill(**{field: value}).execute(context())
    with pytest.raises(
        AirflowFailException, match=rf"Invalid input.{field}='{value}': .*a template probably pulled"
    ):
        generic("echo-test", {field: value}).execute(context())
    assert eachlabs_conn.counters.requests == 0


def test_a_sensor_given_none_or_an_unknown_id_names_it(eachlabs_conn: EachlabsSimulator):
    sensor = PredictionSensor(task_id="wait", prediction_id="None", deferrable=False, poke_interval=0.05)
    with pytest.raises(
        AirflowFailException, match=r"Invalid prediction_id='None': .*a template probably pulled"
    ):
        sensor.execute(context())
    sensor = PredictionSensor(task_id="wait", prediction_id="p-unknown", deferrable=False, poke_interval=0.05)
    with pytest.raises(AirflowFailException, match=r"HTTP 404: no prediction 'p-unknown' for this API key"):
        sensor.execute(context())


# --- 7. smaller ones ----------------------------------------------------------------------------------


def test_connection_test_keeps_the_request_id_and_answers_a_dead_host_at_once(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(simulator.base_url, api_key="wrong"))
    ok, message = EachlabsHook().test_connection()
    assert not ok and message.startswith("HTTP 401") and "(request id req_" in message
    dead = simulator.base_url.rsplit(":", 1)[0] + ":9"
    monkeypatch.setenv(
        "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(dead, max_retries=5, backoff_initial=2)
    )
    started = time.monotonic()
    ok, message = EachlabsHook().test_connection()
    assert not ok and message.endswith("Connection refused") and time.monotonic() - started < 2


def test_a_host_without_a_scheme_says_it_needs_one(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    without_scheme = simulator.base_url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(without_scheme))
    ok, message = EachlabsHook().test_connection()
    assert not ok
    assert (
        "the host did not answer with TLS" in message
        and "write http:// in front of the connection's host" in message
    )


def test_an_extra_that_is_not_a_number_names_the_field(
    simulator: EachlabsSimulator, monkeypatch: pytest.MonkeyPatch
):
    connection = json.loads(connection_json(simulator.base_url))
    connection["extra"]["timeout"] = "abc"
    monkeypatch.setenv("AIRFLOW_CONN_EACHLABS_DEFAULT", json.dumps(connection))
    ok, message = EachlabsHook().test_connection()
    assert (ok, message) == (
        False,
        "Eachlabs connection 'eachlabs_default': extra field timeout='abc' must be a number of at least 0.1",
    )


def test_a_preview_in_a_folder_is_named_by_its_prediction(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    results = [fill(preview_path=f"{tmp_path}/previews/").execute(context()) for _ in range(2)]
    expected = sorted(f"{r['prediction_id']}-preview.png" for r in results)
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == expected
    assert os.path.basename(results[0]["preview_path"]) == f"{results[0]['prediction_id']}-preview.png"


def _png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 90)).save(buffer, format="PNG")
    return buffer.getvalue()
