"""A batch in one task: every image of a folder, listed in a manifest, filled by one
``FluxFillBatchOperator`` at the API's own pace.

For thousands of fills a night. One task holds the whole set: it checks every item before buying
anything, keeps at most 10 predictions running and at most 100 creates a minute (the API's caps per
key, so it meets no 429), stores each output as ``<key>.png`` the moment it is ready, and writes
``eachlabs-results.jsonl`` (one line per image: prediction, status, stored path, sha256, cost) as
it goes. A retry, a killed worker or a restarted triggerer carries on from the journal next to the
outputs without buying anything twice. Deferred by default, so it holds no worker slot while the
predictions run: the triggerer then needs the storage behind ``output_dir`` too.

The manifest is written by an upstream task here; in a pipeline it is whatever lists the night's
images (a JSONL or CSV file, local or on object storage), read as a stream.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator

BATCH = Path(__file__).parent / "data" / "batch"
# Absolute, so that the worker, the triggerer and the api-server all mean the same folder whatever
# their working directory (a relative path is resolved by each process on its own).
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")

with DAG(
    dag_id="eachlabs_batch_operator",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    params={
        "input_dir": str(BATCH),
        "output_dir": OUTPUT + "/batch-operator",
    },
    doc_md=__doc__,
) as dag:

    @task
    def write_manifest(params: dict[str, str]) -> str:
        """One JSONL line per image of the folder, keyed by its name (the key names the output)."""
        output = Path(params["output_dir"])
        output.mkdir(parents=True, exist_ok=True)
        manifest = output / "manifest.jsonl"
        with manifest.open("w") as lines:
            for image in sorted(Path(params["input_dir"]).glob("*.png")):
                lines.write(json.dumps({"key": image.stem, "image": str(image)}) + "\n")
        return str(manifest)

    FluxFillBatchOperator(
        task_id="fill_all",
        items_path=write_manifest(),
        defaults={"prompt": "a seamless continuation of the landscape", "output_format": "png"},
        output_path="{{ params.output_dir }}/",
        retries=2,
    )
