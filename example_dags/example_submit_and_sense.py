"""Submit now, wait elsewhere: the fill returns its prediction id and a sensor waits for it.

Useful when the submit and the wait belong to different parts of a pipeline, or when something else
(a webhook consumer, another DAG) already started the prediction.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.sensors.prediction import PredictionSensor

DATA = Path(__file__).parent / "data"

with DAG(
    dag_id="eachlabs_submit_and_sense",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    doc_md=__doc__,
) as dag:
    submit = FluxFillOperator(
        task_id="submit_fill",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        wait_for_completion=False,
    )
    wait = PredictionSensor(
        task_id="wait_for_fill",
        prediction_id="{{ ti.xcom_pull(task_ids='submit_fill') }}",
        poke_interval=1,
        deferrable=True,
    )
    submit >> wait
