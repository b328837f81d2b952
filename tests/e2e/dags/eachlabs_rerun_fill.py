"""A fill whose prompt comes from a Variable: the re-run test edits it and clears the task over REST.

Served to the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_rerun_fill", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="{{ var.value.eachlabs_rerun_prompt }}",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        output_path=os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/rerun-fill/",
        poll_interval=0.5,
    )
