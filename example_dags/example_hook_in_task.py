"""EachlabsHook in a ``@task``: upload a local image and its mask, buy one fill, wait, store the output.

For a pipeline whose own code decides what to fill (a loop, a condition, several models in one
function). ``FluxFillOperator`` does the same in one operator, and more: it checks every field
before buying, re-attaches a retry to the prediction already bought, and waits deferred, holding no
worker slot. Here a retry of the task buys again, and the wait holds the worker.
The output folder is the ``output_dir`` param: ``EACHLABS_DEMO_OUTPUT``, else ``demo-output/``
beside ``example_dags/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, task

DATA = Path(__file__).parent / "data"
# Absolute, so that the folder is the same whatever the worker's working directory.
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")

with DAG(
    dag_id="eachlabs_hook_in_task",
    schedule=None,
    catchup=False,
    tags=["eachlabs", "example"],
    params={
        "image": str(DATA / "scene.png"),
        "mask": str(DATA / "scene_mask.png"),
        "output_dir": OUTPUT,
    },
    doc_md=__doc__,
) as dag:

    @task
    def fill_with_the_hook(params: dict[str, str]) -> str:
        from airflow_provider_eachlabs import api
        from airflow_provider_eachlabs.exceptions import EachlabsOutputError, PredictionTimeout
        from airflow_provider_eachlabs.failing import final_errors_fail_the_task
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

        hook = EachlabsHook()  # the eachlabs_default connection
        with final_errors_fail_the_task():  # a wrong key or a file that is no image: no retries
            image_url = hook.upload_file(params["image"], field="image")
            mask_url = hook.upload_file(params["mask"], field="mask")
            prediction_id = hook.create_prediction(
                "flux-fill-pro",
                {
                    "prompt": "an empty green meadow under a clear sky",
                    "image": image_url,
                    "mask": mask_url,
                    "output_format": "png",
                },
            )
            try:
                prediction = hook.wait_for_prediction(prediction_id, timeout=600, model="flux-fill-pro")
            except PredictionTimeout:
                hook.cancel_prediction(prediction_id)  # the hook's wait does not cancel by itself
                raise
            api.raise_for_prediction_end(prediction)  # failed or cancelled: the operators' errors
            if prediction.output_url is None:
                raise EachlabsOutputError(f"prediction {prediction_id} succeeded without an output URL")
            output = hook.download(prediction.output_url)  # now: output URLs expire
        target = Path(params["output_dir"]) / f"{prediction_id}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(output.content)
        return prediction.output_url

    fill_with_the_hook()
