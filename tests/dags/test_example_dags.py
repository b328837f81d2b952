"""Every example DAG, run whole with ``dag.test()`` against the simulator, and its XCom results checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_eachlabs.testing import EachlabsSimulator
from tests.conftest import ROOT, connection_json

EXAMPLES = ROOT / "example_dags"


@pytest.fixture
def dag_env(airflow_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> EachlabsSimulator:
    with EachlabsSimulator(api_key="dag-key-42", predict_seconds=0.3) as sim:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EACHLABS_DEFAULT", connection_json(sim.base_url, api_key="dag-key-42")
        )
        monkeypatch.setenv("EACHLABS_DEMO_OUTPUT", str(tmp_path / "out"))
        yield sim


def load_dag(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def xcoms(run: Any, task_id: str, key: str = "return_value") -> list[Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids=task_id, key=key)
        ).all()
        return [XComModel.deserialize_value(row) for row in sorted(rows, key=lambda row: row.map_index)]


def test_one_fill_stores_the_image_and_a_preview(dag_env: EachlabsSimulator, tmp_path: Path):
    run = load_dag("example_flux_fill").test()
    assert run.state == "success"
    (result,) = xcoms(run, "remove_crate")
    out = tmp_path / "out"
    assert result["status"] == "success" and result["model"] == "flux-fill-pro"
    assert result["stored_path"] == f"{out}/{result['prediction_id']}.png"
    assert Image.open(result["stored_path"]).size == (512, 384)
    assert result["preview_path"] == f"{out}/preview.png"
    assert Image.open(result["preview_path"]).size == (3 * 512 + 16, 384)
    assert xcoms(run, "remove_crate", "prediction_url") == [
        f"{dag_env.base_url}/v1/prediction/{result['prediction_id']}"
    ]
    assert dag_env.counters.creates == {"dag-key-42": 1}


def test_a_deferred_fill_reads_a_connection_stored_in_the_database(
    airflow_db: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """``airflow dags test`` runs the trigger in its own process: a connection made in the UI (the
    metadata database, no environment variable) must serve the deferred wait as it served the create,
    on the first try, with one prediction bought."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_EACHLABS_DEFAULT", raising=False)
    monkeypatch.setenv("EACHLABS_DEMO_OUTPUT", str(tmp_path / "out"))
    with EachlabsSimulator(api_key="db-key-77", predict_seconds=0.3) as sim:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "eachlabs_default").delete()
            session.add(
                Connection(
                    conn_id="eachlabs_default", conn_type="eachlabs", host=sim.base_url, password="db-key-77"
                )
            )
        try:
            dag = load_dag("example_flux_fill")
            dag.get_task("remove_crate").retries = 0  # a failed wait fails the run, not a retry 5 min later
            run = dag.test()
        finally:
            with create_session() as session:
                session.query(Connection).filter(Connection.conn_id == "eachlabs_default").delete()
        assert run.state == "success"
        (result,) = xcoms(run, "remove_crate")
        assert result["status"] == "success" and sim.counters.creates == {"db-key-77": 1}


def test_submit_then_sensor(dag_env: EachlabsSimulator):
    run = load_dag("example_submit_and_sense").test()
    assert run.state == "success"
    (prediction_id,) = xcoms(run, "submit_fill")
    (sensed,) = xcoms(run, "wait_for_fill")
    assert sensed["prediction_id"] == prediction_id and sensed["status"] == "success"
    assert dag_env.counters.creates == {"dag-key-42": 1}


def test_batch_fills_every_image_of_the_folder(dag_env: EachlabsSimulator, tmp_path: Path):
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(
        "eachlabs", slots=10, description="Eachlabs in-flight cap", include_deferred=True
    )
    run = load_dag("example_batch_fill").test()
    assert run.state == "success"
    results = xcoms(run, "fill")
    assert len(results) == 3
    # Each output is named after its source image, so the folder reads like the input folder.
    stored = sorted(Path(result["stored_path"]).name for result in results)
    assert stored == ["product_1.png", "product_2.png", "product_3.png"]
    assert stored == sorted(p.name for p in (tmp_path / "out" / "batch").iterdir())
    assert dag_env.counters.creates == {"dag-key-42": 3}
    assert {result["width"] for result in results} == {256}


def test_the_batch_operator_fills_the_manifest_in_one_task(dag_env: EachlabsSimulator, tmp_path: Path):
    import json

    run = load_dag("example_batch_operator").test()
    assert run.state == "success"
    (summary,) = xcoms(run, "fill_all")
    out = tmp_path / "out" / "batch-operator"
    assert (summary["items"], summary["succeeded"], summary["failed"]) == (3, 3, 0)
    assert summary["spend"] == pytest.approx(0.15)
    assert summary["results_path"] == f"{out}/eachlabs-results.jsonl"
    rows = [json.loads(line) for line in (out / "eachlabs-results.jsonl").read_text().splitlines()]
    assert sorted(row["key"] for row in rows) == ["product_1", "product_2", "product_3"]
    for row in rows:  # each output named by its key
        assert row["stored_path"] == f"{out}/{row['key']}.png" and row["status"] == "success"
        assert Image.open(row["stored_path"]).size == (256, 192)
    assert sorted(p.name for p in out.iterdir()) == [
        "eachlabs-results.jsonl",
        "manifest.jsonl",
        "product_1.png",
        "product_2.png",
        "product_3.png",
    ]  # the journal is gone once every item is stored
    assert dag_env.counters.creates == {"dag-key-42": 3}


def test_the_asset_producer_names_its_fill_in_its_asset_events(dag_env: EachlabsSimulator, tmp_path: Path):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run = load_dag("example_asset_producer").test()
    assert run.state == "success"
    (result,) = xcoms(run, "nightly_fill")
    stored = result["stored_path"]
    assert stored == f"{tmp_path}/out/nightly/{result['prediction_id']}.png"
    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
        extras = {event.asset.uri: event.extra for event in events}
    expected = {"model": "flux-fill-pro", "prediction_id": result["prediction_id"], "stored_path": stored}
    assert {k: extras["eachlabs_nightly_fills"][k] for k in expected} == expected
    assert extras["eachlabs_nightly_fills"]["sha256"] == result["sha256"]
    # The alias: the stored file is an Asset of its own.
    assert extras[Path(stored).as_uri()]["prediction_id"] == result["prediction_id"]
    assert dag_env.counters.creates == {"dag-key-42": 1}
