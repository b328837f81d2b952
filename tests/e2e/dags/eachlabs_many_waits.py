"""Twenty-four deferred fills at once, long enough to outlive a triggerer: the failover test kills
the triggerer that holds most of them.

Served to the e2e Airflow from its own DAG bundle. The fills use the ``eachlabs_long`` connection,
which only the distributed stack defines (a simulator whose predictions take a minute); no pool, so
all of them wait at once.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
FILLS = 24

with DAG(dag_id="eachlabs_many_waits", schedule=None, catchup=False, max_active_tasks=FILLS) as dag:
    FluxFillOperator.partial(
        task_id="fill",
        eachlabs_conn_id="eachlabs_long",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        deferrable=True,
        timeout=900,
        retries=0,
    ).expand(seed=list(range(FILLS)))
