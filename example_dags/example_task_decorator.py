"""``@task.eachlabs``: a TaskFlow function computes the fill's input in Python; the task buys it.

The function returns the flux-fill-pro input as a dict (here the prompt is built from the ``season``
param); the task checks it by the model page's rules as ``FluxFillOperator`` does, uploads the local
scene and mask, waits in the triggerer and stores the output. Its XCom result is the operator's. The
output folder is the ``output_dir`` param: ``EACHLABS_DEMO_OUTPUT``, else ``demo-output/`` beside
``example_dags/``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

DATA = Path(__file__).parent / "data"
# Absolute, so that the worker, the triggerer and the api-server all mean the same folder.
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")

with DAG(
    dag_id="eachlabs_task_decorator",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    params={"output_dir": OUTPUT, "season": "spring"},
    doc_md=__doc__,
) as dag:

    @task.eachlabs(
        model="flux-fill-pro",
        output_path="{{ params.output_dir }}/task-decorator/",
        deferrable=True,
        retries=2,
    )
    def fill_scene(season: str) -> dict[str, Any]:
        return {
            "prompt": f"an empty green meadow under a clear sky, seen in {season}",
            "image": str(DATA / "scene.png"),
            "mask": str(DATA / "scene_mask.png"),
            "seed": 42,
            "output_format": "png",
        }

    fill_scene(season="{{ params.season }}")
