"""A fill DAG shaped by environment variables, for the secret-leak probe (tests/dags/leak_probe.py).

Read at parse time, so each ``dag.test()`` of the probe can run it deferrable or not, with another
prompt or timeout.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_probe", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt=os.environ.get("PROBE_PROMPT", "an empty meadow"),
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        output_path=os.environ.get("PROBE_OUTPUT", "/tmp/eachlabs-probe") + "/",
        deferrable=os.environ.get("PROBE_DEFERRABLE", "true") == "true",
        poll_interval=0.1,
        timeout=float(os.environ.get("PROBE_TIMEOUT", "60")),
        webhook_url="https://hooks.example.com/eachlabs",
        # From a Variable, as the README advises: the secret must not show up anywhere either.
        webhook_secret="{{ var.value.eachlabs_webhook_secret }}",
    )
