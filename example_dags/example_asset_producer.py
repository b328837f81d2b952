"""Nightly fills that announce themselves: an Asset event whose extra names the prediction.

The fill declares an Asset in ``outlets``: when the task succeeds, Airflow records an Asset event,
and the task fills in its ``extra`` with the model, the prediction id, the stored path, its sha256
and the cost (see README, "Assets"). ``example_asset_consumer.py`` is scheduled on that Asset and
publishes what the event names, without a shared path convention or an XCom pull across DAGs.

The ``AssetAlias`` beside it gets one Asset per stored file, its URI the file's
(``file:///.../nightly/<prediction id>.png`` here), so a DAG can also be scheduled on one file.

It spends money every night, so it is created paused: unpause it in the UI when its connection is
set. The output folder is the ``output_dir`` param: ``EACHLABS_DEMO_OUTPUT``, else ``demo-output/``
beside ``example_dags/``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetAlias

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).parent / "data"
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT") or str(Path(__file__).resolve().parent.parent / "demo-output")
# The consumer names the same Asset: an Asset is known by its name (and URI), not by this object.
NIGHTLY_FILLS = Asset("eachlabs_nightly_fills")

with DAG(
    dag_id="eachlabs_asset_producer",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    is_paused_upon_creation=True,
    tags=["eachlabs", "example", "assets"],
    params={"output_dir": OUTPUT},
    doc_md=__doc__,
) as dag:
    FluxFillOperator(
        task_id="nightly_fill",
        prompt="an empty green meadow under a clear sky",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        output_path="{{ params.output_dir }}/nightly/",
        deferrable=True,
        retries=2,
        outlets=[NIGHTLY_FILLS, AssetAlias("eachlabs_nightly_files")],
    )
