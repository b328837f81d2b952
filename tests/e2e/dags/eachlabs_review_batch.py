"""A batch a person reviews before its outputs are stored: the e2e test answers over Airflow's HITL
REST API (re-fill one item, approve with one rejected, reject all).

Each run writes under its own folder, so the tests' runs never share outputs or journals. Served to
the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
REVIEWED = Asset("file:///eachlabs-e2e/reviewed-batch")

with DAG(
    dag_id="eachlabs_review_batch",
    schedule=None,
    catchup=False,
    params={"output_dir": os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/review-batch"},
) as dag:
    FluxFillBatchOperator(
        task_id="fill_items",
        items=[
            {"key": "sofa", "prompt": "a green sofa", "seed": 1},
            {"key": "lamp", "prompt": "a tall lamp", "seed": 2},
            {"key": "rug", "prompt": "a red rug", "seed": 3},
        ],
        defaults={
            "image": str(DATA / "scene.png"),
            "mask": str(DATA / "scene_mask.png"),
            "output_format": "png",
        },
        output_path="{{ params.output_dir }}/{{ run_id | replace(':', '-') | replace('+', '-') }}/",
        poll_interval=0.5,
        deferrable=True,
        retries=0,
        review=True,
        outlets=[REVIEWED],
    )
