"""Scheduled on the producer's Asset (tests/e2e/test_assets.py): returns what each triggering event's
extra names, the prediction id and the stored path, as example_dags/example_asset_consumer.py does."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Asset, task

FILLS = Asset("eachlabs_e2e_asset_fills")

with DAG(dag_id="eachlabs_asset_consumer_e2e", schedule=[FILLS], catchup=False) as dag:

    @task
    def publish(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        return [
            {"prediction_id": event.extra.get("prediction_id"), "stored_path": event.extra.get("stored_path")}
            for event in (triggering_asset_events or {}).get(FILLS, [])
        ]

    publish()
