"""A batch on its worker (not deferred) that may retry: the batch kill test SIGKILLs its task process
mid-batch and counts what the retry buys.

Twelve items, four in flight, so the kill lands with some outputs stored, some predictions running
and some items not yet created. Served to the e2e Airflow from its own DAG bundle.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
ITEMS = 12

with DAG(
    dag_id="eachlabs_batch_kill",
    schedule=None,
    catchup=False,
    params={"output_dir": os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/batch-kill"},
) as dag:
    FluxFillBatchOperator(
        task_id="fill_all",
        items=[
            {"key": f"item_{n:02d}", "image": str(DATA / "scene.png"), "mask": str(DATA / "scene_mask.png")}
            for n in range(ITEMS)
        ],
        defaults={"prompt": "an empty green meadow under a clear sky", "output_format": "png"},
        output_path="{{ params.output_dir }}/",
        max_in_flight=4,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
