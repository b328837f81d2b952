"""A deferrable fill that passes a webhook secret taken from a Variable, as the README advises.

The e2e suite marks one of its runs failed while it waits (the trigger's on_kill must cancel the
prediction), and at the end searches every log the deployment wrote for the secret and the key.
Served to the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_webhook_fill", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        deferrable=True,
        webhook_url="https://hooks.example.com/eachlabs",
        webhook_secret="{{ var.value.eachlabs_webhook_secret }}",
    )
