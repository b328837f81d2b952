"""A fill that waits on its worker (not deferred) and may retry: the worker-death test kills it.

Served to the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_worker_death", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        deferrable=False,
        poll_interval=0.5,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
