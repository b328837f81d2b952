"""Publish what the nightly fills made: a DAG scheduled on their Asset, reading the event's extra.

``example_asset_producer.py`` declares ``Asset("eachlabs_nightly_fills")`` in its fill's
``outlets``; each success records an Asset event whose extra names the prediction and the stored
file. This DAG runs on those events: its task reads ``triggering_asset_events`` (several, when
several fills ended before it ran) and publishes each stored file, here by logging it and returning
the prediction ids and stored paths.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Asset, task

NIGHTLY_FILLS = Asset("eachlabs_nightly_fills")

log = logging.getLogger(__name__)

with DAG(
    dag_id="eachlabs_asset_consumer",
    schedule=[NIGHTLY_FILLS],
    catchup=False,
    tags=["eachlabs", "example", "assets"],
    doc_md=__doc__,
) as dag:

    @task
    def publish(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        published = []
        for event in (triggering_asset_events or {}).get(NIGHTLY_FILLS, []):
            extra = event.extra
            log.info("Publishing %s: prediction %s", extra.get("stored_path"), extra.get("prediction_id"))
            published.append(
                {"prediction_id": extra.get("prediction_id"), "stored_path": extra.get("stored_path")}
            )
        return published

    publish()
