"""``@task.eachlabs`` in a real Airflow: an upstream task's value and Python build the fill's input.

Served to the e2e Airflow from its own DAG bundle, beside the example DAGs; tests/e2e/test_task_decorator.py
triggers it over REST.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_task_decorator_e2e", schedule=None, catchup=False) as dag:

    @task
    def season() -> str:
        return "autumn"

    @task.eachlabs(
        model="flux-fill-pro",
        output_path=os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/task-decorator-e2e/",
        deferrable=True,
        poll_interval=0.5,
    )
    def fill(season: str, steps: str) -> dict[str, Any]:
        return {
            "prompt": f"an empty meadow in {season}",
            "image": str(DATA / "scene.png"),
            "mask": str(DATA / "scene_mask.png"),
            "steps": int(steps) * 2,  # templates render text
            "output_format": "png",
        }

    fill(season(), steps="{{ 10 + 5 }}")
