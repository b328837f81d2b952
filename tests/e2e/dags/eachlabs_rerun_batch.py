"""A batch whose items live in an Airflow Variable, run in the triggerer: the re-run test edits one
item in the Variable and clears the task, and counts what each clear buys.

``eachlabs_rerun_items`` holds the items as JSON text (``var.value``, not ``var.json``: a template
renders a list as Python text, the operator reads JSON). Served from the e2e suite's own DAG bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(
    dag_id="eachlabs_rerun_batch",
    schedule=None,
    catchup=False,
    params={"output_dir": os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/rerun-batch"},
) as dag:
    FluxFillBatchOperator(
        task_id="fill_items",
        items="{{ var.value.eachlabs_rerun_items }}",
        defaults={
            "image": str(DATA / "scene.png"),
            "mask": str(DATA / "scene_mask.png"),
            "output_format": "png",
        },
        output_path="{{ params.output_dir }}/",
        on_invalid="skip",
        deferrable=True,
        retries=0,
    )
