"""A fill a person reviews before it is stored: the e2e test answers over Airflow's HITL REST API.

Served to the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
REVIEWED = Asset("file:///eachlabs-e2e/reviewed-fills")

with DAG(dag_id="eachlabs_review_fill", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="an empty green meadow",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        seed=11,
        output_path=os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/review-fill/",
        poll_interval=0.5,
        deferrable=True,
        review=True,
        outlets=[REVIEWED],
    )
