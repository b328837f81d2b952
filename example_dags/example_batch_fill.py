"""A batch: fill every image of a folder, one mapped task each, under a pool sized to the API's cap.

Each image carries its mask in its alpha channel (transparent = fill). Eachlabs runs at most 10
predictions per key at once; the ``eachlabs`` pool keeps Airflow from starting more. Create it
first: ``airflow pools set eachlabs 10 "Eachlabs in-flight cap" --include-deferred``. Without it the
tasks stay "scheduled" and only the scheduler's log says why (a task's pool must exist). The pool
counting deferred tasks makes a slot last until the prediction ends, while the deferred waits hold
no worker slot. Each output is named after its source image
(``product_1.png`` is filled into ``<output_dir>/product_1.png``), so nobody has to map prediction
ids back to files.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

BATCH = Path(__file__).parent / "data" / "batch"
# Absolute, so that the worker, the triggerer and the api-server all mean the same folder whatever
# their working directory (a relative path is resolved by each process on its own).
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")

with DAG(
    dag_id="eachlabs_batch_fill",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    params={
        "input_dir": str(BATCH),
        "output_dir": OUTPUT + "/batch",
    },
    doc_md=__doc__,
) as dag:

    @task
    def list_images(params: dict[str, str]) -> list[dict[str, str]]:
        """The folder is read when the run starts, not when the DAG file is parsed."""
        folder = Path(params["input_dir"])
        images = sorted(path for path in folder.iterdir() if path.suffix.lower() in (".png", ".webp"))
        return [{"image": str(path), "output_name": path.stem} for path in images]

    FluxFillOperator.partial(
        task_id="fill",
        prompt="a seamless continuation of the landscape",
        output_format="png",
        output_path="{{ params.output_dir }}/",
        pool="eachlabs",
        deferrable=True,
        retries=2,
    ).expand_kwargs(list_images())
