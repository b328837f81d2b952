"""One fill, deferrable: remove the crate from a meadow scene and keep the result.

The scene and its mask are local files, uploaded through Eachlabs' presigned uploads; the output is
downloaded as soon as it exists (output URLs expire) and a before | mask | after preview is written.
The output folder is the ``output_dir`` param: ``EACHLABS_DEMO_OUTPUT``, else ``demo-output/``
beside ``example_dags/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).parent / "data"
# Absolute, so that the worker, the triggerer and the api-server all mean the same folder whatever
# their working directory (a relative path is resolved by each process on its own).
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")

with DAG(
    dag_id="eachlabs_flux_fill",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    params={"output_dir": OUTPUT},
    doc_md=__doc__,
) as dag:
    FluxFillOperator(
        task_id="remove_crate",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        seed=42,
        output_format="png",
        output_path="{{ params.output_dir }}/",
        preview_path="{{ params.output_dir }}/preview.png",
        deferrable=True,
        retries=2,
    )
