"""The extra of a task's outlet Asset events, over real HTTP against the simulator: a fill, a submit and
its sensor, and a batch, each with an Asset and an AssetAlias in ``outlets``.

The context carries Airflow's own ``OutletEventAccessors`` (what the task runner hands a task), and
what the task left in it is read back through the task runner's own serializer: what the API server
would be sent when the task succeeds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_eachlabs import assets
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor
from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import API_KEY
from tests.integration.test_batch import BatchTI, batch, creates
from tests.integration.test_operators import RecordingStateStore, RecordingTI, fill

FILLS = Asset("eachlabs_fills")
FILES = AssetAlias("eachlabs_fill_files")


def task_context(task: Any, ti: Any | None = None) -> dict[str, Any]:
    return {
        "ti": ti or RecordingTI(),
        "task_state_store": RecordingStateStore(),
        "task": task,
        "outlet_events": OutletEventAccessors(),
    }


def sent(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The outlet events as the task runner sends them to the API server when the task succeeds."""
    from airflow.sdk.execution_time.task_runner import _serialize_outlet_events

    events = list(_serialize_outlet_events(ctx["outlet_events"]))
    text = json.dumps(events)  # what travels is JSON: it must serialize, and hold no secret
    assert API_KEY not in text and "/files/outputs/" not in text, text
    return events


def asset_event(events: list[dict[str, Any]], asset: Asset) -> dict[str, Any]:
    (event,) = [e for e in events if e.get("dest_asset_key") == {"name": asset.name, "uri": asset.uri}]
    return event


def alias_events(events: list[dict[str, Any]], alias: AssetAlias) -> list[dict[str, Any]]:
    return [e for e in events if e.get("source_alias_name") == alias.name]


def sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_fill_names_its_prediction_stored_file_and_cost(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    operator = fill(output_path=f"{tmp_path}/", outlets=[FILLS, FILES])
    ctx = task_context(operator)
    result = operator.execute(ctx)
    prediction_id, stored = result["prediction_id"], result["stored_path"]
    assert stored == f"{tmp_path}/{prediction_id}.png"

    events = sent(ctx)
    assert asset_event(events, FILLS)["extra"] == {
        "model": "flux-fill-pro",
        "prediction_id": prediction_id,
        "status": "success",
        "stored_path": stored,
        "sha256": sha256(stored),
        "cost": 0.05,
        "predict_time": 0.3,
    }
    # The alias: one Asset per stored file, its URI the file's.
    (attached,) = alias_events(events, FILES)
    uri = Path(stored).as_uri()
    assert attached["dest_asset_key"] == {"name": uri, "uri": uri}
    assert attached["extra"] == {
        "model": "flux-fill-pro",
        "prediction_id": prediction_id,
        "cost": 0.05,
        "stored_path": stored,
        "sha256": sha256(stored),
    }


def test_a_submit_names_its_prediction_and_the_sensor_names_what_it_stored(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    submit = fill(wait_for_completion=False, outlets=[FILLS])
    submit_ctx = task_context(submit)
    prediction_id = submit.execute(submit_ctx)
    assert asset_event(sent(submit_ctx), FILLS)["extra"] == {
        "model": "flux-fill-pro",
        "prediction_id": prediction_id,
        "status": "submitted",
        "stored_path": None,
        "sha256": None,
        "cost": None,
        "predict_time": None,
    }

    sensor = PredictionSensor(
        task_id="wait",
        prediction_id=prediction_id,
        output_path=f"{tmp_path}/sensed/",
        poke_interval=0.05,
        deferrable=False,
        outlets=[FILLS, FILES],
    )
    ctx = task_context(sensor)
    result = sensor.execute(ctx)
    stored = f"{tmp_path}/sensed/{prediction_id}.png"
    assert result["stored_path"] == stored
    events = sent(ctx)
    extra = asset_event(events, FILLS)["extra"]
    # A sensor is not told the model; it names everything else.
    assert extra == {
        "model": None,
        "prediction_id": prediction_id,
        "status": "success",
        "stored_path": stored,
        "sha256": sha256(stored),
        "cost": 0.05,
        "predict_time": 0.3,
    }
    assert [e["dest_asset_key"]["uri"] for e in alias_events(events, FILES)] == [Path(stored).as_uri()]


def test_a_deferred_fill_names_its_prediction_when_it_resumes(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path
):
    """The resumed task is a new process: the outlet events it sends are those of ``execute_complete``."""
    operator = fill(deferrable=True, output_path=f"{tmp_path}/", outlets=[FILLS])
    with pytest.raises(TaskDeferred):
        operator.execute(task_context(operator))
    prediction_id = str(operator.prediction_id)
    prediction = operator.hook.wait_for_prediction(prediction_id, poll_interval=0.05, timeout=10)
    event = {"status": "success", "prediction_id": prediction_id, "prediction": prediction.to_dict()}
    ctx = task_context(operator)
    operator.execute_complete(ctx, event)
    extra = asset_event(sent(ctx), FILLS)["extra"]
    stored = f"{tmp_path}/{prediction_id}.png"
    assert (extra["prediction_id"], extra["stored_path"], extra["sha256"]) == (
        prediction_id,
        stored,
        sha256(stored),
    )


def test_the_task_decorator_names_its_prediction(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    from tests.integration.test_task_decorator import scene_fill, task_of

    operator = task_of(scene_fill, "an empty meadow", 21, output_path=f"{tmp_path}/", outlets=[FILLS, FILES])
    ctx = task_context(operator)
    result = operator.execute(ctx)
    events = sent(ctx)
    extra = asset_event(events, FILLS)["extra"]
    assert extra["model"] == "flux-fill-pro" and extra["prediction_id"] == result["prediction_id"]
    assert (extra["stored_path"], extra["sha256"], extra["cost"]) == (
        result["stored_path"],
        result["sha256"],
        0.05,
    )
    assert [e["dest_asset_key"]["uri"] for e in alias_events(events, FILES)] == [
        Path(result["stored_path"]).as_uri()
    ]


def test_a_batch_names_its_manifest_counts_spend_and_files(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    before = creates(eachlabs_conn)
    items = [{"key": f"photo-{i}", "seed": i} for i in range(3)]
    operator = batch(tmp_path / "out", items, outlets=[FILLS, FILES])
    ctx = task_context(operator, BatchTI())
    summary = operator.execute(ctx)
    assert summary["succeeded"] == 3 and creates(eachlabs_conn) - before == 3

    results = tmp_path / "out" / "eachlabs-results.jsonl"
    rows = {row["key"]: row for row in map(json.loads, results.read_text().splitlines())}
    events = sent(ctx)
    extra = asset_event(events, FILLS)["extra"]
    assert extra == {
        "model": "flux-fill-pro",
        "batch": True,
        "results_path": str(results),
        "items": 3,
        "succeeded": 3,
        "failed": 0,
        "invalid": 0,
        "cost": 0.15,
        "listed": True,
        "predictions": [
            {
                "key": key,
                "prediction_id": rows[key]["prediction_id"],
                "stored_path": str(tmp_path / "out" / f"{key}.png"),
                "sha256": sha256(str(tmp_path / "out" / f"{key}.png")),
            }
            for key in ("photo-0", "photo-1", "photo-2")
        ],
    }
    attached = alias_events(events, FILES)
    assert sorted(e["dest_asset_key"]["uri"] for e in attached) == sorted(
        (tmp_path / "out" / f"{key}.png").as_uri() for key in rows
    )
    assert {e["extra"]["key"]: e["extra"]["prediction_id"] for e in attached} == {
        key: row["prediction_id"] for key, row in rows.items()
    }


def test_a_big_batch_lists_counts_not_items_and_the_alias_stops_at_its_cap(
    eachlabs_conn: EachlabsSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(assets, "MAX_LISTED_ITEMS", 2)
    monkeypatch.setattr(assets, "MAX_ALIAS_ASSETS", 2)
    items = [{"key": f"photo-{i}", "seed": i} for i in range(3)]
    operator = batch(tmp_path / "out", items, outlets=[FILLS, FILES])
    ctx = task_context(operator, BatchTI())
    operator.execute(ctx)
    events = sent(ctx)
    extra = asset_event(events, FILLS)["extra"]
    assert extra["listed"] is False and "predictions" not in extra
    assert (extra["items"], extra["succeeded"], extra["cost"]) == (3, 3, 0.15)
    assert len(alias_events(events, FILES)) == 2
    assert len(json.dumps(extra)) < 400


def test_an_asset_problem_never_fails_the_task(eachlabs_conn: EachlabsSimulator, tmp_path: Path):
    class BrokenAccessors(OutletEventAccessors):
        def __getitem__(self, key: Any) -> Any:
            raise RuntimeError("the asset store is down")

    operator = fill(output_path=f"{tmp_path}/", outlets=[FILLS, FILES])
    ctx = task_context(operator)
    ctx["outlet_events"] = BrokenAccessors()
    result = operator.execute(ctx)
    assert result["status"] == "success" and Path(result["stored_path"]).exists()


def test_no_outlets_costs_nothing_and_changes_nothing(eachlabs_conn: EachlabsSimulator):
    operator = EachlabsPredictionOperator(
        task_id="echo", model="echo-test", input={"text": "x"}, poll_interval=0.05, deferrable=False
    )
    ctx = task_context(operator)
    assert operator.execute(ctx)["status"] == "success"
    assert sent(ctx) == []


@pytest.mark.parametrize(
    ("path", "uri", "extra_path"),
    [
        ("/data/out/a.png", "file:///data/out/a.png", "/data/out/a.png"),
        ("s3://aws_conn@bucket/fills/a.png", "s3://bucket/fills/a.png", "s3://aws_conn@bucket/fills/a.png"),
        ("s3://user:pw@bucket/a.png?x=1", "s3://bucket/a.png", "s3://user@bucket/a.png"),
    ],
)
def test_stored_file_uris(path: str, uri: str, extra_path: str):
    assert assets.file_uri(path) == uri
    assert assets.prediction_extra({"stored_path": path})["stored_path"] == extra_path
