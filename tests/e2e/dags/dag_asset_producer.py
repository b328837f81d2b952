"""A fill that announces itself through an Asset event (tests/e2e/test_assets.py).

Its outlets are an Asset, whose event's extra the fill names, and an AssetAlias, which gets an Asset
for the stored file; ``dag_asset_consumer.py`` is scheduled on the Asset.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import DAG, Asset, AssetAlias

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
OUTPUT = os.environ.get("EACHLABS_DEMO_OUTPUT", "demo-output") + "/asset-e2e/"

with DAG(dag_id="eachlabs_asset_producer_e2e", schedule=None, catchup=False) as dag:
    FluxFillOperator(
        task_id="fill",
        prompt="an empty green meadow",
        image=str(DATA / "scene.png"),
        mask=str(DATA / "scene_mask.png"),
        output_format="png",
        output_path=OUTPUT,
        deferrable=True,
        poll_interval=0.5,
        outlets=[Asset("eachlabs_e2e_asset_fills"), AssetAlias("eachlabs_e2e_asset_files")],
    )
