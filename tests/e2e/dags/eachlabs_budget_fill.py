"""A fill whose retries would pass its budget: ``max_cost=0.07`` at $0.05 a prediction. Its first try
buys one that fails for a passing reason; the retry would take the spend to $0.10, so it buys
nothing and the task fails, final. Served from the e2e suite's own DAG bundle for ``test_budget``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_budget_fill", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="budget: an empty meadow",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        poll_interval=0.2,
        deferrable=False,
        max_cost=0.07,
        cost_per_prediction=0.05,
        retries=2,
        retry_delay=timedelta(seconds=1),
    )
