"""One Eachlabs task with ``retries=2`` and no retry delay, shaped by the environment.

``tests/dags/test_try_counts.py`` parses it afresh for each case (``TRYCOUNT_OPERATOR``: ``fill`` or
``generic``; ``TRYCOUNT_KWARGS``: the operator's arguments as JSON) and counts the tries Airflow made.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_eachlabs.operators.flux_fill import FluxFillOperator
from airflow_provider_eachlabs.operators.prediction import EachlabsPredictionOperator

DATA = Path(__file__).resolve().parents[3] / "example_dags" / "data"
FILL = {"prompt": "an empty meadow", "image": str(DATA / "scene.png"), "mask": str(DATA / "scene_mask.png")}

with DAG(dag_id="eachlabs_try_count", schedule=None, catchup=False) as dag:
    arguments = {
        "task_id": "task",
        "retries": 2,
        "retry_delay": timedelta(0),
        "poll_interval": 0.05,
        "deferrable": False,
        **json.loads(os.environ.get("TRYCOUNT_KWARGS", "{}")),
    }
    if os.environ.get("TRYCOUNT_OPERATOR", "fill") == "fill":
        FluxFillOperator(**{"output_format": "png", **FILL, **arguments})
    else:
        EachlabsPredictionOperator(**{"model": "echo-test", "input": {"prompt": "x"}, **arguments})
