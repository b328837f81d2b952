"""A deferred fill that reports OpenLineage events: tests/e2e/test_openlineage.py reads them.

The e2e stack sends OpenLineage events to files, for the DAGs that call ``enable_lineage`` only
(``[openlineage] selective_enable``), so no other test's tasks emit. Served to the e2e Airflow from
its own DAG bundle, beside the example DAGs; it parses without the OpenLineage provider too.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"

with DAG(dag_id="eachlabs_lineage", schedule=None, catchup=False, tags=["eachlabs", "lineage"]) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        output_path=os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/lineage/",
        deferrable=True,
        poll_interval=0.5,
    )

try:
    from airflow.providers.openlineage.utils.selective_enable import enable_lineage
except ImportError:  # the OpenLineage provider is not installed: the DAG runs without lineage
    pass
else:
    enable_lineage(dag)
