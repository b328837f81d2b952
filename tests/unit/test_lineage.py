"""OpenLineage: dataset names by the naming spec, the facets the tasks report, and nothing at parse time.

Runs where ``apache-airflow-providers-openlineage`` is installed (the ``test`` extra installs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("airflow.providers.openlineage.extractors")

from airflow.providers.openlineage.extractors import OperatorLineage
from airflow.providers.openlineage.extractors.base import DefaultExtractor
from openlineage.client.serde import Serde

from airflow_provider_eachlabs.lineage import (
    BATCH_FACET,
    MAX_BATCH_INPUT_FILES,
    PREDICTION_FACET,
    EachlabsBatchRunFacet,
    EachlabsPredictionRunFacet,
    dataset_name,
)
from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator
from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor

PREDICTION_ID = "2c2bc45f-0d7e-4f8a-9d1e-6a0c5b7e9f01"


class FakeTI:
    """A task instance as the OpenLineage listener hands it: ``xcom_pull`` of the task's own XCom."""

    task_id = "fill"

    def __init__(self, **xcom: Any) -> None:
        self.xcom = xcom
        self.pulled: list[tuple[Any, Any]] = []

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        self.pulled.append((task_ids, key))
        return self.xcom.get(key)


def names(datasets: list[Any]) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def fill(**kwargs: Any) -> FluxFillOperator:
    args: dict[str, Any] = {
        "task_id": "fill",
        "prompt": "an empty meadow",
        "image": "/data/photos/scene.png",
        "mask": "s3://photos-bucket/masks/scene_mask.png",
        "output_path": "/data/filled/",
    }
    return FluxFillOperator(**{**args, **kwargs})


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/photos/scene.png", ("file", "/data/photos/scene.png")),
        ("file:///data/photos/scene.png", ("file", "/data/photos/scene.png")),
        ("file://localhost/data/scene.png", ("file", "/data/scene.png")),
        ("file://nas01/share/scene.png", ("file://nas01", "/share/scene.png")),
        ("s3://photos-bucket/in/scene.png", ("s3://photos-bucket", "in/scene.png")),
        ("s3://aws_photos@photos-bucket/in/scene.png", ("s3://photos-bucket", "in/scene.png")),
        ("s3a://photos-bucket/in/scene.png", ("s3://photos-bucket", "in/scene.png")),
        ("gcs://photos/in/scene.png", ("gs://photos", "in/scene.png")),
        ("gs://photos/in/scene.png", ("gs://photos", "in/scene.png")),
        ("s3://photos-bucket/filled/", ("s3://photos-bucket", "filled")),
        (
            "https://CDN.example.com/img/scene.png?X-Amz-Signature=secret#top",
            ("https://cdn.example.com", "/img/scene.png"),
        ),
        ("https://user:pw@cdn.example.com/scene.png", ("https://cdn.example.com", "/scene.png")),
        ("http://127.0.0.1:8765/files/x.png", ("http://127.0.0.1:8765", "/files/x.png")),
        ("memory://scratch/x.png", ("memory://scratch", "x.png")),
    ],
)
def test_a_location_is_named_by_the_openlineage_naming_spec(location: str, expected: tuple[str, str]):
    assert dataset_name(location) == expected


def test_a_relative_local_path_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dataset_name("photos/scene.png") == ("file", os.path.join(str(tmp_path), "photos/scene.png"))
    assert dataset_name("out/") == ("file", os.path.join(str(tmp_path), "out"))


@pytest.mark.parametrize("location", [None, "", "   ", 42, "data:image/png;base64,AAAA", "https:///x.png"])
def test_what_names_no_file_is_no_dataset(location: Any):
    assert dataset_name(location) is None


# --- a fill ------------------------------------------------------------------------------------------


def test_a_fill_starts_with_its_image_and_mask_as_inputs():
    start = fill(image="https://cdn.example.com/scene.png?sig=1").get_openlineage_facets_on_start()
    assert isinstance(start, OperatorLineage)
    assert names(start.inputs) == [
        ("https://cdn.example.com", "/scene.png"),
        ("s3://photos-bucket", "masks/scene_mask.png"),
    ]
    assert start.outputs == [] and start.run_facets == {}


def test_a_fill_without_a_mask_has_its_image_alone_as_input():
    assert names(fill(mask=None).get_openlineage_facets_on_start().inputs) == [
        ("file", "/data/photos/scene.png")
    ]


def test_a_finished_fill_names_its_stored_file_and_its_prediction():
    result = {
        "prediction_id": PREDICTION_ID,
        "model": "flux-fill-pro",
        "status": "success",
        "predict_time": 9.0,
        "cost": 0.05,
        "stored_path": f"/data/filled/{PREDICTION_ID}.png",
        "preview_path": "/data/previews/scene-preview.png",
    }
    ti = FakeTI(return_value=result)
    done = fill().get_openlineage_facets_on_complete(ti)
    assert ti.pulled[0] == ("fill", "return_value")
    assert names(done.inputs) == [
        ("file", "/data/photos/scene.png"),
        ("s3://photos-bucket", "masks/scene_mask.png"),
    ]
    assert names(done.outputs) == [
        ("file", f"/data/filled/{PREDICTION_ID}.png"),
        ("file", "/data/previews/scene-preview.png"),
    ]
    facet = done.run_facets[PREDICTION_FACET]
    assert isinstance(facet, EachlabsPredictionRunFacet)
    assert (facet.predictionId, facet.model, facet.status, facet.cost, facet.predictTime) == (
        PREDICTION_ID,
        "flux-fill-pro",
        "success",
        0.05,
        9.0,
    )
    event_form = Serde.to_dict(facet)
    assert event_form["predictionId"] == PREDICTION_ID and event_form["cost"] == 0.05
    assert event_form["predictTime"] == 9.0 and event_form["model"] == "flux-fill-pro"
    assert event_form["_producer"] and event_form["_schemaURL"]


def test_every_stored_file_of_a_model_with_several_outputs_is_an_output():
    paths = ["s3://out/filled/p.png", "s3://out/filled/p_1.png"]
    result = {"prediction_id": "p", "stored_path": paths[0], "stored_paths": paths}
    done = fill().get_openlineage_facets_on_complete(FakeTI(return_value=result))
    assert names(done.outputs) == [("s3://out", "filled/p.png"), ("s3://out", "filled/p_1.png")]


def test_a_fill_that_left_no_result_reports_no_output_and_no_facet():
    done = fill().get_openlineage_facets_on_complete(FakeTI())
    assert done.outputs == [] and done.run_facets == {}
    assert len(done.inputs) == 2  # what it was given to read


def test_a_fill_that_failed_reports_its_prediction_from_its_outcome_and_no_output():
    outcome = {"ok": False, "prediction_id": PREDICTION_ID, "model": "flux-fill-pro", "status": "failed"}
    done = fill().get_openlineage_facets_on_complete(FakeTI(eachlabs_outcome={**outcome, "cost": 0.05}))
    assert done.outputs == []
    facet = done.run_facets[PREDICTION_FACET]
    assert (facet.predictionId, facet.status, facet.cost, facet.predictTime) == (
        PREDICTION_ID,
        "failed",
        0.05,
        None,
    )


def test_a_fill_that_failed_before_buying_reports_no_facet():
    outcome = {"ok": False, "prediction_id": None, "model": "flux-fill-pro", "status": "error"}
    assert fill().get_openlineage_facets_on_complete(FakeTI(eachlabs_outcome=outcome)).run_facets == {}


def test_a_submit_only_task_reports_the_prediction_it_submitted():
    op = EachlabsPredictionOperator(
        task_id="submit",
        model="upscale",
        input={"image": "https://cdn.example.com/a.png", "scale": 2},
        wait_for_completion=False,
    )
    done = op.get_openlineage_facets_on_complete(FakeTI(return_value=PREDICTION_ID))
    assert names(done.inputs) == [("https://cdn.example.com", "/a.png")]
    assert done.outputs == []
    facet = done.run_facets[PREDICTION_FACET]
    assert (facet.predictionId, facet.model, facet.status) == (PREDICTION_ID, "upscale", "submitted")


def test_the_openlineage_provider_reads_the_operator_through_its_default_extractor():
    result = {"prediction_id": PREDICTION_ID, "stored_path": "/data/filled/x.png", "cost": 0.05}
    extractor = DefaultExtractor(fill())
    assert names(extractor.extract().inputs)[0] == ("file", "/data/photos/scene.png")
    done = extractor.extract_on_complete(FakeTI(return_value=result))
    assert names(done.outputs) == [("file", "/data/filled/x.png")]
    assert done.run_facets[PREDICTION_FACET].predictionId == PREDICTION_ID


def test_an_unreadable_xcom_leaves_the_lineage_without_outputs():
    class Broken(FakeTI):
        def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
            raise RuntimeError("the supervisor went away")

    done = fill().get_openlineage_facets_on_complete(Broken())
    assert done.outputs == [] and done.run_facets == {}


# --- the sensor --------------------------------------------------------------------------------------


def test_the_sensor_reports_what_it_stored_and_the_prediction_it_watched():
    sensor = PredictionSensor(task_id="wait", prediction_id=PREDICTION_ID, output_path="s3://out/x/")
    assert sensor.get_openlineage_facets_on_start().inputs == []
    result = {"prediction_id": PREDICTION_ID, "status": "success", "stored_path": "s3://out/x/p.png"}
    done = sensor.get_openlineage_facets_on_complete(FakeTI(return_value=result))
    assert names(done.outputs) == [("s3://out", "x/p.png")]
    facet = done.run_facets[PREDICTION_FACET]
    assert facet.predictionId == PREDICTION_ID and facet.model is None
    assert sensor.get_openlineage_facets_on_complete(FakeTI()).run_facets == {}


# --- a batch -----------------------------------------------------------------------------------------


def batch(**kwargs: Any) -> FluxFillBatchOperator:
    args: dict[str, Any] = {
        "task_id": "fill_all",
        "output_path": "s3://out-bucket/filled",
        "defaults": {"prompt": "an empty meadow", "mask": "/data/mask.png"},
        "items": [
            {"key": "a", "image": "/data/a.png"},
            {"key": "b", "image": "https://cdn.example.com/b.png"},
            {"key": "c", "image": "/data/a.png", "mask": "s3://in/c_mask.png"},
        ],
    }
    return FluxFillBatchOperator(**{**args, **kwargs})


def test_a_batch_reads_the_files_its_items_name_over_the_defaults():
    start = batch().get_openlineage_facets_on_start()
    assert names(start.inputs) == [
        ("file", "/data/a.png"),
        ("file", "/data/mask.png"),
        ("https://cdn.example.com", "/b.png"),
        ("s3://in", "c_mask.png"),
    ]
    assert start.outputs == []


def test_a_batch_from_a_manifest_reads_the_manifest():
    start = batch(items=None, items_path="s3://in/manifest.jsonl").get_openlineage_facets_on_start()
    assert names(start.inputs) == [("s3://in", "manifest.jsonl"), ("file", "/data/mask.png")]


def test_a_large_inline_batch_names_at_most_its_cap_of_input_files():
    items = [{"key": str(n), "image": f"/data/{n}.png"} for n in range(3 * MAX_BATCH_INPUT_FILES)]
    assert len(batch(items=items).get_openlineage_facets_on_start().inputs) == MAX_BATCH_INPUT_FILES


def test_a_finished_batch_names_its_folder_and_results_manifest_and_counts_its_spend():
    summary = {
        "items": 3,
        "succeeded": 2,
        "failed": 0,
        "invalid": 1,
        "spend": 0.1,
        "p50_predict_time": 9.0,
        "results_path": "s3://out-bucket/filled/eachlabs-results.jsonl",
    }
    done = batch().get_openlineage_facets_on_complete(FakeTI(return_value=summary))
    assert names(done.outputs) == [
        ("s3://out-bucket", "filled"),
        ("s3://out-bucket", "filled/eachlabs-results.jsonl"),
    ]
    facet = done.run_facets[BATCH_FACET]
    assert isinstance(facet, EachlabsBatchRunFacet)
    assert (facet.model, facet.items, facet.succeeded, facet.invalid, facet.cost, facet.p50PredictTime) == (
        "flux-fill-pro",
        3,
        2,
        1,
        0.1,
        9.0,
    )
    assert facet.resultsPath == summary["results_path"]


def test_a_failed_batch_reports_its_outcome_and_a_batch_that_ran_nothing_reports_no_facet():
    outcome = {"ok": False, "batch": True, "succeeded": 1, "failed": 2, "cost": 0.15, "results_path": None}
    done = batch().get_openlineage_facets_on_complete(FakeTI(eachlabs_outcome=outcome))
    facet = done.run_facets[BATCH_FACET]
    assert (facet.succeeded, facet.failed, facet.cost, facet.items) == (1, 2, 0.15, None)
    assert facet.resultsPath == "s3://out-bucket/filled/eachlabs-results.jsonl"
    nothing = batch().get_openlineage_facets_on_complete(FakeTI())
    assert nothing.outputs == [] and nothing.run_facets == {}


# --- nothing at parse time ---------------------------------------------------------------------------


def test_a_dag_file_importing_the_operators_loads_no_openlineage_code():
    code = (
        "import sys, airflow.sdk\n"
        "import airflow_provider_eachlabs.operators.flux_fill, airflow_provider_eachlabs.operators.batch\n"
        "import airflow_provider_eachlabs.sensors.prediction\n"
        "print(sorted(m for m in sys.modules if m.startswith(('openlineage', 'airflow.providers.openlineage.'"
        "'extractors', 'airflow_provider_eachlabs.lineage'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
