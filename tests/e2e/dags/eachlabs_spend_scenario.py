"""Every way a DAG buys predictions, one after the other, for the spend test (tests/e2e/test_spend.py):
a fill retried after a transient failure, a fill the provider rejects, a batch with an item the
provider rejects (retried), and a ``@task`` that buys with ``EachlabsHook``. Every prompt starts with
``spend:``, so the test finds this DAG's predictions among the simulator's.

Served to the e2e Airflow from its own DAG bundle, beside the example DAGs.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_eachlabs.operators.batch import FluxFillBatchOperator
from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
PICTURES = {"image": str(DATA / "scene.png"), "mask": str(DATA / "scene_mask.png"), "output_format": "png"}
ITEMS = [
    {"key": "kept_1", "prompt": "spend: batch item one"},
    {"key": "kept_2", "prompt": "spend: batch item two"},
    {"key": "refused", "prompt": "spend: a forbidden batch item"},
]

with DAG(dag_id="eachlabs_spend_scenario", schedule=None, catchup=False) as dag:
    retried = FluxFillOperator(
        task_id="retried",
        prompt="spend: an empty green meadow",
        **PICTURES,
        poll_interval=0.2,
        deferrable=False,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
    rejected = FluxFillOperator(
        task_id="rejected",
        prompt="spend: a forbidden meadow",
        **PICTURES,
        poll_interval=0.2,
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=1),
        trigger_rule="all_done",
    )
    batch = FluxFillBatchOperator(
        task_id="batch",
        items=json.dumps(ITEMS),
        defaults=PICTURES,
        output_path=os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/spend-batch/",
        max_failed=0,
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=1),
        trigger_rule="all_done",
    )

    @task(trigger_rule="all_done")
    def with_the_hook() -> str:
        from airflow_provider_eachlabs.hooks.eachlabs import EachlabsHook

        hook = EachlabsHook()
        image, mask = hook.upload_file(PICTURES["image"]), hook.upload_file(PICTURES["mask"])
        prediction_id = hook.create_prediction(
            "flux-fill-pro", {"prompt": "spend: with the hook", "image": image, "mask": mask}
        )
        return hook.wait_for_prediction(prediction_id, timeout=120, model="flux-fill-pro").status

    retried >> rejected >> batch >> with_the_hook()
