"""OpenLineage in a real Airflow: a deferred fill's COMPLETE event names what it read and wrote.

The stack sends OpenLineage events to files (``[openlineage] transport`` of type ``file``, see
``conftest._airflow_env``) for the DAGs that enable lineage only; ``dags/dag_lineage.py`` does. The
fill defers to the triggerer and finishes on a new worker, where the OpenLineage listener calls the
operator's ``get_openlineage_facets_on_complete``. The suite shares one stack and simulator, so the
test picks its own events by the prediction its run bought, and counts nothing absolute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, AirflowStack, wait_for
from tests.e2e.rest import wait_parsed

pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage")

DAG_ID, TASK_ID = "eachlabs_lineage", "fill"
IMAGE = ROOT / "example_dags" / "data" / "scene.png"
MASK = ROOT / "example_dags" / "data" / "scene_mask.png"


def events(stack: AirflowStack) -> list[dict[str, Any]]:
    """Every OpenLineage event the stack wrote so far (one file each); a file still being written is
    read on the next look."""
    found = []
    for path in sorted(stack.home.glob("openlineage-*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def names(datasets: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_a_deferred_fill_reports_its_image_its_stored_file_and_its_prediction(dags_ready: AirflowStack):
    stack = dags_ready
    stack.use_simulator(stack.fast_sim)
    wait_parsed(stack, DAG_ID)
    run_id = stack.api.trigger(DAG_ID)
    state = stack.api.wait_run(DAG_ID, run_id, 180)
    assert state == "success", f"{state}\n{stack.api.log(DAG_ID, run_id, TASK_ID)}\n{stack.logs()}"
    result = stack.api.xcom(DAG_ID, run_id, TASK_ID, "return_value")
    prediction_id = result["prediction_id"]
    stored = result["stored_path"]
    assert Path(stored).is_file(), result

    def complete() -> dict[str, Any] | None:
        for event in events(stack):
            facet = event.get("run", {}).get("facets", {}).get("eachlabs_prediction") or {}
            if (
                event.get("eventType") == "COMPLETE"
                and event.get("job", {}).get("name") == f"{DAG_ID}.{TASK_ID}"
                and facet.get("predictionId") == prediction_id
            ):
                return event
        return None

    try:
        event = wait_for("the fill's OpenLineage COMPLETE event", complete, timeout=60, interval=0.5)
    except AssertionError as error:
        seen = [(e.get("eventType"), e.get("job", {}).get("name")) for e in events(stack)]
        log = stack.api.log(DAG_ID, run_id, TASK_ID, try_number=1)
        raise AssertionError(f"{error}; events seen: {seen}\n{log[-4000:]}") from None

    assert ("file", str(IMAGE)) in names(event["inputs"]), event["inputs"]
    assert ("file", str(MASK)) in names(event["inputs"]), event["inputs"]
    assert ("file", os.path.abspath(stored)) in names(event["outputs"]), event["outputs"]
    facet = event["run"]["facets"]["eachlabs_prediction"]
    assert facet["model"] == "flux-fill-pro" and facet["status"] == "success", facet
    assert facet["cost"] == result["cost"] and facet["predictTime"] == result["predict_time"], facet
    assert facet["_producer"] and facet["_schemaURL"], facet
    # The task's START event named the same inputs before anything was bought.
    starts = [
        e
        for e in events(stack)
        if e.get("eventType") == "START"
        and e.get("job", {}).get("name") == f"{DAG_ID}.{TASK_ID}"
        and e.get("run", {}).get("runId") == event["run"]["runId"]
    ]
    assert starts and ("file", str(IMAGE)) in names(starts[0]["inputs"]), starts
