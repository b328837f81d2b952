"""A batch of 40 fills at $0.05 with ``max_cost=1.00``: its estimate ($2.00) exceeds the budget, so the
task fails at once, final (its retries unused), having bought nothing. Served from the e2e suite's own
DAG bundle for ``test_budget``.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(
    dag_id="eachlabs_budget_batch",
    schedule=None,
    catchup=False,
    params={"output_dir": os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/budget-batch"},
) as dag:
    FluxFillBatchOperator(
        task_id="fill_items",
        items=[{"key": f"item{n}", "seed": n} for n in range(40)],
        defaults={
            "prompt": "an empty meadow",
            "image": str(DATA / "scene.png"),
            "mask": str(DATA / "scene_mask.png"),
            "output_format": "png",
        },
        output_path="{{ params.output_dir }}/",
        max_cost="{{ params.get('max_cost', 1.00) }}",
        cost_per_prediction=0.05,
        deferrable=True,
        retries=2,
    )
